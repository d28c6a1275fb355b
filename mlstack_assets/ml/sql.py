"""The SQL behind the ML assets, as small pure functions (one place per dialect detail).

Everything runs in the warehouse: text normalization, filtering, and a stratified split
that is deterministic for a seed (rows are ordered by md5(seed:id) within each tag).
DuckDB and BigQuery differ only in a few spellings (`warehouse/dialect.py`).
"""

from collections.abc import Sequence

from mlstack_assets.warehouse.dialect import SqlDialect, sql_dialect


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _text(dialect: SqlDialect) -> str:
    joined = "coalesce(title, '') || ' ' || coalesce(description, '')"
    return f"trim({dialect.collapse_whitespace.format(expr=joined)})"


def _blank(dialect: SqlDialect) -> str:
    """No text at all: only what RE2's `\\s` matches is left (checked with a plain trim,
    which is cheaper than running the regex on every row)."""
    joined = "coalesce(title, '') || coalesce(description, '')"
    return f"trim({joined}, {dialect.whitespace}) = ''"


def _known(tags: Sequence[str]) -> str:
    return f"tag in ({', '.join(_literal(tag) for tag in tags)})"


def ml_dataset_sql(source: str, warehouse: str, known_tags: Sequence[str]) -> str:
    """One row per project: id, created_on, text (title + description, spaces collapsed), tag."""
    dialect = sql_dialect(warehouse)
    return f"""select id, created_on, {_text(dialect)} as text, tag
from {source}
where {_known(known_tags)} and not ({_blank(dialect)})"""


def exclusions_sql(source: str, warehouse: str, known_tags: Sequence[str]) -> str:
    """Rows in, and rows left out of the dataset for each reason (never dropped silently)."""
    dialect = sql_dialect(warehouse)
    return f"""select
    count(*) as labeled_rows,
    count(case when tag is null or not ({_known(known_tags)}) then 1 end) as unknown_or_missing_tag,
    count(case when {_known(known_tags)} and {_blank(dialect)} then 1 end) as empty_text
from {source}"""


def ml_splits_sql(
    source: str, warehouse: str, seed: int, validation_fraction: float, test_fraction: float
) -> str:
    """Stratified split: within each tag, round(n * fraction) rows for validation and test,
    the rest for train; which rows is decided by md5(seed:id), so a seed always gives the
    same split. A tag with at least round-up-to-one rows per fraction is in every split."""
    dialect = sql_dialect(warehouse)
    key = dialect.md5_hex.format(
        expr=f"{_literal(f'{seed}:')} || cast(id as {dialect.string_type})"
    )
    return f"""with

ranked as (
    select
        id, created_on, text, tag,
        row_number() over (partition by tag order by {key}, id) as position,
        count(*) over (partition by tag) as tag_rows
    from {source}
),

sized as (
    select
        *,
        round(tag_rows * {validation_fraction}) as validation_rows,
        round(tag_rows * {test_fraction}) as test_rows
    from ranked
)

select
    id, created_on, text, tag,
    case
        when position <= validation_rows then 'validation'
        when position <= validation_rows + test_rows then 'test'
        else 'train'
    end as split
from sized"""


def split_counts_sql(source: str) -> str:
    """Rows per split and tag, from a table or a parenthesized query."""
    return f"""select split, tag, count(*) as row_count
from {source}
group by split, tag
order by tag, split"""


SPLITS = ("train", "validation", "test")


def split_count(split: str, column: str = "split") -> str:
    return f"count(case when {column} = {_literal(split)} then 1 end)"


def in_splits(column: str = "split") -> str:
    """True for train, validation and test; false or null for anything else."""
    return f"{column} in ({', '.join(_literal(split) for split in SPLITS)})"


def tag_distribution_sql(source: str) -> str:
    """One row per tag: its rows in each split, and their total. A row whose split is none
    of the three is in no column (the tag_distribution check catches it)."""
    per_split = ",\n    ".join(f"{split_count(split)} as {split}" for split in SPLITS)
    return f"""select
    tag,
    {per_split},
    count(case when {in_splits()} then 1 end) as total
from {source}
group by tag
order by total desc, tag"""
