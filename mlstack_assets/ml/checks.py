"""Blocking checks on the ML tables, run in the warehouse before the tables are published.

Each ML asset builds its table in the audit dataset, runs these checks on it there, and
only then replaces the published table (write-audit-publish, as for the raw tables). A
check is a small query whose result is a handful of counts (one row, or one row per tag),
so it costs the same on DuckDB and BigQuery at any size; the SQL is the same in both.
`Query` is anything that runs SQL and returns rows: the warehouse, or a DuckDB connection
in the unit tests. Each check is a `CheckOutcome` of its table (`quality/outcomes.py`).
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagster import AssetCheckSpec, AssetKey

from mlstack_assets.ml.sql import SPLITS, in_splits, split_count
from mlstack_assets.quality.outcomes import CheckOutcome

Query = Callable[[str], list[tuple]]

EXAMPLES = 5  # offending ids or tags shown in a failure
# BigQuery computes n * fraction in FLOAT64: n * 0.7 can come out as 7.000000000000001.
TOLERANCE = 1e-9

ROW_COUNT = "row_count_matches_labeled_projects"
ONE_SPLIT = "every_id_in_one_split"
EVERY_SPLIT = "every_tag_in_every_split"
FRACTIONS = "fractions_within_one_row"
SUMS = "sums_to_split_counts"

DESCRIPTIONS = {
    ROW_COUNT: "Rows > 0 and rows = labeled_projects rows - rows with an unknown or missing"
    " tag - rows with empty text (the exclusions in the metadata): nothing lost or duplicated.",
    ONE_SPLIT: "Every ml_dataset id is in exactly one row, with a split among train /"
    " validation / test, and no other id is.",
    EVERY_SPLIT: "Every tag with enough rows (round(n * validation_fraction) >= 1,"
    " round(n * test_fraction) >= 1, and at least one row left for train) has rows in all"
    " three splits.",
    FRACTIONS: "For every tag and split, |rows - n * fraction| <= 1 with the configured fractions.",
    SUMS: "Per split, the column sums equal ml_splits' rows in that split, and the total"
    " column sums to ml_splits' rows.",
}
CHECKS_BY_ASSET = {
    "ml_dataset": (ROW_COUNT,),
    "ml_splits": (ONE_SPLIT, EVERY_SPLIT, FRACTIONS),
    "tag_distribution": (SUMS,),
}


def check_specs(asset: str) -> list[AssetCheckSpec]:
    return [
        AssetCheckSpec(name, asset=AssetKey(asset), blocking=True, description=DESCRIPTIONS[name])
        for name in CHECKS_BY_ASSET[asset]
    ]


ASSET_OF = {name: asset for asset, names in CHECKS_BY_ASSET.items() for name in names}


def outcome(
    name: str, passed: bool, summary: str, metadata: dict[str, Any] | None = None
) -> CheckOutcome:
    """One evaluated check of its ML table, blocking (every ML check is)."""
    return CheckOutcome(
        AssetKey(ASSET_OF[name]), name, passed, summary, blocking=True, metadata=metadata or {}
    )


def row_count_matches_labeled_projects(
    query: Query, table: str, labeled_rows: int, excluded_tag: int, excluded_text: int
) -> CheckOutcome:
    """`table` (the built ml_dataset) against the counts taken from labeled_projects."""
    [(rows,)] = query(f"select count(*) from {table}")
    expected = labeled_rows - excluded_tag - excluded_text
    return outcome(
        ROW_COUNT,
        passed=rows > 0 and rows == expected,
        summary=(
            f"{rows} rows; expected {expected} > 0 = {labeled_rows} labeled_projects rows"
            f" - {excluded_tag} with an unknown or missing tag - {excluded_text} with empty text"
        ),
        metadata={
            "rows": rows,
            "expected_rows": expected,
            "labeled_rows": labeled_rows,
            "excluded_unknown_or_missing_tag": excluded_tag,
            "excluded_empty_text": excluded_text,
        },
    )


def every_id_in_one_split(query: Query, splits: str, dataset: str) -> CheckOutcome:
    """No id lost, repeated or invented between ml_dataset and the built ml_splits."""
    [(split_rows, distinct_ids, without_split, dataset_rows)] = query(f"""with
in_splits as (
    select
        count(*) as split_rows,
        count(distinct id) as distinct_ids,
        count(case when split is null or not {in_splits()} then 1 end) as without_split
    from {splits}
),
in_dataset as (select count(*) as dataset_rows from {dataset})
select split_rows, distinct_ids, without_split, dataset_rows
from in_splits cross join in_dataset""")
    passed = split_rows > 0 and split_rows == distinct_ids == dataset_rows and not without_split
    metadata: dict[str, Any] = {
        "rows": split_rows,
        "distinct_ids": distinct_ids,
        "rows_without_a_split": without_split,
        "ml_dataset_rows": dataset_rows,
    }
    summary = (
        f"{split_rows} rows, {distinct_ids} distinct ids, {dataset_rows} rows in ml_dataset,"
        f" {without_split} rows without a train/validation/test split"
    )
    if not passed:
        repeated = [
            row[0]
            for row in query(
                f"select id from {splits} group by id having count(*) > 1"
                f" order by id limit {EXAMPLES}"
            )
        ]
        unsplit = [
            row[0]
            for row in query(
                f"select id from {splits} where split is null or not {in_splits()}"
                f" order by id limit {EXAMPLES}"
            )
        ]
        metadata.update(ids_in_several_rows=repeated, ids_without_a_split=unsplit)
        summary += f"; e.g. ids in several rows {repeated}, ids without a split {unsplit}"
    return outcome(ONE_SPLIT, passed, summary, metadata)


def split_shares_sql(splits: str, validation_fraction: float, test_fraction: float) -> str:
    """Per tag: rows, rows per split, whether the tag has enough rows to be in every split
    (rounded as the split itself rounds, in the warehouse), and the largest distance
    between a split's rows and n * its fraction."""
    fractions = {
        "train": f"(1 - {validation_fraction} - {test_fraction})",
        "validation": str(validation_fraction),
        "test": str(test_fraction),
    }
    per_split = ",\n        ".join(f"{split_count(split)} as {split}" for split in SPLITS)
    distance = ",\n        ".join(
        f"abs({split} - tag_rows * {fraction})" for split, fraction in fractions.items()
    )
    return f"""with

per_tag as (
    select
        tag,
        count(*) as tag_rows,
        {per_split}
    from {splits}
    group by tag
)

select
    tag,
    tag_rows,
    {", ".join(SPLITS)},
    round(tag_rows * {validation_fraction}) >= 1
        and round(tag_rows * {test_fraction}) >= 1
        and tag_rows - round(tag_rows * {validation_fraction})
            - round(tag_rows * {test_fraction}) >= 1 as has_enough_rows,
    greatest(
        {distance}
    ) as largest_distance
from per_tag
order by tag"""


@dataclass(frozen=True)
class TagShares:
    tag: str
    rows: int
    per_split: dict[str, int]
    has_enough_rows: bool
    largest_distance: float


def tag_shares(
    query: Query, splits: str, validation_fraction: float, test_fraction: float
) -> list[TagShares]:
    """One entry per tag (a few: ml_dataset keeps only the known tags)."""
    return [
        TagShares(
            tag=row[0],
            rows=row[1],
            per_split=dict(zip(SPLITS, row[2:5], strict=True)),
            has_enough_rows=bool(row[5]),
            largest_distance=float(row[6]),
        )
        for row in query(split_shares_sql(splits, validation_fraction, test_fraction))
    ]


def every_tag_in_every_split(shares: list[TagShares]) -> CheckOutcome:
    checked = [share for share in shares if share.has_enough_rows]
    missing = [
        f"{share.tag} (n={share.rows}): no {split} rows"
        for share in checked
        for split, rows in share.per_split.items()
        if rows == 0
    ]
    return outcome(
        EVERY_SPLIT,
        passed=not missing,
        summary=(
            f"{len(checked)} of {len(shares)} tags have enough rows for every split;"
            f" {len(missing)} (tag, split) pairs of those are empty"
            + (f": {'; '.join(missing[:EXAMPLES])}" if missing else "")
        ),
        metadata={
            "tags_with_enough_rows": [share.tag for share in checked],
            "empty_tag_splits": missing[:EXAMPLES],
        },
    )


def fractions_within_one_row(
    shares: list[TagShares], validation_fraction: float, test_fraction: float
) -> CheckOutcome:
    off = [share for share in shares if share.largest_distance > 1 + TOLERANCE]
    examples = [
        f"{share.tag} (n={share.rows}): "
        + ", ".join(f"{split} {rows}" for split, rows in share.per_split.items())
        for share in off[:EXAMPLES]
    ]
    largest = max((share.largest_distance for share in shares), default=0.0)
    return outcome(
        FRACTIONS,
        passed=not off,
        summary=(
            f"{len(off)} of {len(shares)} tags have a split more than one row away from"
            f" n * fraction (validation {validation_fraction}, test {test_fraction});"
            f" largest distance {largest:.2f} rows"
            + (f": {'; '.join(examples)}" if examples else "")
        ),
        metadata={
            "largest_distance_rows": round(largest, 4),
            "tags_off": examples,
            "validation_fraction": validation_fraction,
            "test_fraction": test_fraction,
        },
    )


def sums_to_split_counts(query: Query, distribution: str, splits: str) -> CheckOutcome:
    """The built tag_distribution against ml_splits: no row lost or counted twice."""
    columns = [*SPLITS, "total"]
    summed = ", ".join(f"coalesce(sum({column}), 0) as {column}" for column in columns)
    counts = ", ".join(f"{split_count(split)} as {split}" for split in SPLITS)
    [row] = query(f"""with
in_distribution as (select {summed} from {distribution}),
in_splits as (select {counts}, count(*) as total from {splits})
select {", ".join(f"d.{c}" for c in columns)}, {", ".join(f"s.{c}" for c in columns)}
from in_distribution as d cross join in_splits as s""")
    sums = dict(zip(columns, (int(value) for value in row[:4]), strict=True))
    split_rows = dict(zip(columns, (int(value) for value in row[4:]), strict=True))
    differing = [column for column in columns if sums[column] != split_rows[column]]
    return outcome(
        SUMS,
        passed=not differing,
        summary=(
            "tag_distribution sums "
            + ", ".join(f"{column} {sums[column]}" for column in columns)
            + "; ml_splits rows "
            + ", ".join(f"{column} {split_rows[column]}" for column in columns)
            + (f"; differing: {', '.join(differing)}" if differing else "")
        ),
        metadata={"tag_distribution_sums": sums, "ml_splits_rows": split_rows},
    )
