"""The SQL of the ML assets, run in the warehouse: text normalization, filtering, and a
stratified split that is deterministic for a seed (md5(seed:id) orders each tag's rows).
DuckDB and BigQuery differ only in the spellings of `warehouse/dialect.py`."""

from collections.abc import Sequence

from mlstack_assets.warehouse.dialect import sql_dialect, sql_string

SPLITS = ("train", "validation", "test")
# true for train, validation and test; false or null for anything else
IN_SPLITS = f"split in ({', '.join(map(sql_string, SPLITS))})"
# rows per split as the columns train, validation, test of an aggregate query
SPLIT_COLUMNS = ", ".join(f"count(case when split = '{s}' then 1 end) as {s}" for s in SPLITS)


def _known_and_blank(warehouse: str, known_tags: Sequence[str]) -> tuple[str, str]:
    """Known tag; no text (a plain trim of RE2's `\\s`: cheaper than a regex on every row)."""
    known = f"tag in ({', '.join(map(sql_string, known_tags))})"
    joined = "coalesce(title, '') || coalesce(description, '')"
    return known, f"trim({joined}, {sql_dialect(warehouse).whitespace}) = ''"


def ml_dataset_sql(source: str, warehouse: str, known_tags: Sequence[str]) -> str:
    """One row per project: id, created_on, text (title + description, spaces collapsed), tag."""
    known, blank = _known_and_blank(warehouse, known_tags)
    joined = "coalesce(title, '') || ' ' || coalesce(description, '')"
    text = sql_dialect(warehouse).collapse_whitespace.format(expr=joined)
    return f"""select id, created_on, trim({text}) as text, tag
from {source}
where {known} and not ({blank})"""


def exclusions_sql(source: str, warehouse: str, known_tags: Sequence[str]) -> str:
    """Rows in, and rows left out of the dataset for each reason (never dropped silently)."""
    known, blank = _known_and_blank(warehouse, known_tags)
    return f"""select
    count(*) as labeled_rows,
    count(case when tag is null or not ({known}) then 1 end) as unknown_or_missing_tag,
    count(case when {known} and {blank} then 1 end) as empty_text
from {source}"""


def ml_splits_sql(
    source: str, warehouse: str, seed: int, validation_fraction: float, test_fraction: float
) -> str:
    """Per tag, round(n * fraction) rows for validation and test, picked by md5(seed:id)."""
    dialect = sql_dialect(warehouse)
    key = dialect.md5_hex.format(expr=f"'{seed}:' || cast(id as {dialect.string_type})")
    return f"""with ranked as (
    select id, created_on, text, tag,
        row_number() over (partition by tag order by {key}, id) as position,
        round(count(*) over (partition by tag) * {validation_fraction}) as validation_rows,
        round(count(*) over (partition by tag) * {test_fraction}) as test_rows
    from {source}
)
select id, created_on, text, tag,
    case
        when position <= validation_rows then 'validation'
        when position <= validation_rows + test_rows then 'test'
        else 'train'
    end as split
from ranked"""


def split_counts_sql(source: str) -> str:
    """Rows per split and tag, from a table or a parenthesized query."""
    return f"""select split, tag, count(*) as row_count from {source}
group by split, tag order by split, tag"""


def tag_distribution_sql(source: str) -> str:
    """Rows per tag and split; a row in no split is in no column (the check catches it)."""
    return f"""select tag, {SPLIT_COLUMNS}, count(case when {IN_SPLITS} then 1 end) as total
from {source}
group by tag
order by total desc, tag"""
