"""Blocking checks on an ML table built in the audit dataset, before it is published: each
queries a handful of counts, the same cost on DuckDB and BigQuery at any size."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dagster import AssetCheckSpec, AssetKey

from mlstack_assets.ml.sql import IN_SPLITS, SPLIT_COLUMNS, SPLITS
from mlstack_assets.quality.outcomes import CheckOutcome

Query = Callable[[str], list[tuple]]  # the warehouse's, or a DuckDB connection's in the tests

EXAMPLES = 5  # offending ids or tags shown in a failure
# BigQuery computes n * fraction in FLOAT64: n * 0.7 can come out as 7.000000000000001.
TOLERANCE = 1e-9

ROW_COUNT = "row_count_matches_labeled_projects"
ONE_SPLIT = "every_id_in_one_split"
EVERY_SPLIT = "every_tag_in_every_split"
FRACTIONS = "fractions_within_one_row"
SUMS = "sums_to_split_counts"

DESCRIPTIONS = {
    ROW_COUNT: "Rows > 0 and rows = labeled_projects rows - rows with an unknown or missing tag -"
    " rows with empty text (the exclusions in the metadata): nothing lost or duplicated.",
    ONE_SPLIT: "Every ml_dataset id is in exactly one row, with a split among train / validation"
    " / test, and no other id is.",
    EVERY_SPLIT: "Every tag with enough rows (round(n * validation_fraction) >= 1, round(n *"
    " test_fraction) >= 1, and at least one row left for train) has rows in all three splits.",
    FRACTIONS: "For every tag and split, |rows - n * fraction| <= 1 with the configured fractions.",
    SUMS: "Per split, the column sums equal ml_splits' rows in that split, and the total column"
    " sums to ml_splits' rows.",
}
CHECKS_BY_ASSET = {
    "ml_dataset": (ROW_COUNT,),
    "ml_splits": (ONE_SPLIT, EVERY_SPLIT, FRACTIONS),
    "tag_distribution": (SUMS,),
}
ASSET_OF = {name: AssetKey(asset) for asset, names in CHECKS_BY_ASSET.items() for name in names}


def check_specs(asset: str) -> list[AssetCheckSpec]:
    """The blocking checks of the ML asset `asset`."""
    return [
        AssetCheckSpec(name, asset=AssetKey(asset), blocking=True, description=DESCRIPTIONS[name])
        for name in CHECKS_BY_ASSET[asset]
    ]


def _outcome(name: str, passed: bool, summary: str, metadata: dict[str, Any]) -> CheckOutcome:
    return CheckOutcome(ASSET_OF[name], name, passed, summary, blocking=True, metadata=metadata)


def _listed(counts: dict[str, int]) -> str:
    return ", ".join(f"{name} {count}" for name, count in counts.items())


def row_count_matches_labeled_projects(
    query: Query, table: str, labeled_rows: int, excluded_tag: int, excluded_text: int
) -> CheckOutcome:
    """`table` (the built ml_dataset) against the counts taken from labeled_projects."""
    [(rows,)] = query(f"select count(*) from {table}")
    expected = labeled_rows - excluded_tag - excluded_text
    summary = (
        f"{rows} rows; expected {expected} > 0 = {labeled_rows} labeled_projects rows"
        f" - {excluded_tag} with an unknown or missing tag - {excluded_text} with empty text"
    )
    metadata = {
        "rows": rows,
        "expected_rows": expected,
        "labeled_rows": labeled_rows,
        "excluded_unknown_or_missing_tag": excluded_tag,
        "excluded_empty_text": excluded_text,
    }
    return _outcome(ROW_COUNT, rows > 0 and rows == expected, summary, metadata)


def every_id_in_one_split(query: Query, splits: str, dataset: str) -> CheckOutcome:
    """No id lost, repeated or invented between ml_dataset and the built ml_splits."""
    unsplit = f"split is null or not {IN_SPLITS}"
    [(rows, distinct_ids, without_split, dataset_rows)] = query(f"""select count(*),
    count(distinct id), count(case when {unsplit} then 1 end), (select count(*) from {dataset})
from {splits}""")
    passed = rows > 0 and rows == distinct_ids == dataset_rows and not without_split
    metadata: dict[str, Any] = {
        "rows": rows,
        "distinct_ids": distinct_ids,
        "rows_without_a_split": without_split,
        "ml_dataset_rows": dataset_rows,
    }
    summary = (
        f"{rows} rows, {distinct_ids} distinct ids, {dataset_rows} rows in ml_dataset,"
        f" {without_split} rows without a train/validation/test split"
    )
    if not passed:
        examples = {
            "ids_in_several_rows": "group by id having count(*) > 1",
            "ids_without_a_split": f"where {unsplit}",
        }
        for key, condition in examples.items():
            found = query(f"select id from {splits} {condition} order by id limit {EXAMPLES}")
            metadata[key] = [row[0] for row in found]
        summary += (
            f"; e.g. ids in several rows {metadata['ids_in_several_rows']},"
            f" ids without a split {metadata['ids_without_a_split']}"
        )
    return _outcome(ONE_SPLIT, passed, summary, metadata)


@dataclass(frozen=True)
class TagShares:
    """One tag in ml_splits: its rows per split, whether it has enough for each, how far off."""

    tag: str
    rows: int
    per_split: dict[str, int]
    has_enough_rows: bool
    largest_distance: float


def tag_shares(
    query: Query, splits: str, validation_fraction: float, test_fraction: float
) -> list[TagShares]:
    """Per tag: its rows per split, whether it has enough for every split, and how far off."""
    validation, test = validation_fraction, test_fraction
    # rounded in the warehouse, as the split itself rounds
    found = query(f"""select tag, tag_rows, {", ".join(SPLITS)},
    least(round(tag_rows * {validation}), round(tag_rows * {test}),
        tag_rows - round(tag_rows * {validation}) - round(tag_rows * {test})) >= 1
        as has_enough_rows,
    greatest(abs(train - tag_rows * (1 - {validation} - {test})),
        abs(validation - tag_rows * {validation}), abs(test - tag_rows * {test}))
        as largest_distance
from (select tag, count(*) as tag_rows, {SPLIT_COLUMNS} from {splits} group by tag)
order by tag""")
    return [
        TagShares(tag, rows, dict(zip(SPLITS, counts, strict=True)), bool(enough), float(distance))
        for tag, rows, *counts, enough, distance in found
    ]


def every_tag_in_every_split(shares: list[TagShares]) -> CheckOutcome:
    """Every tag with enough rows for every split has rows in each."""
    checked = [share for share in shares if share.has_enough_rows]
    missing = [
        f"{share.tag} (n={share.rows}): no {split} rows"
        for share in checked
        for split, rows in share.per_split.items()
        if rows == 0
    ]
    summary = (
        f"{len(checked)} of {len(shares)} tags have enough rows for every split;"
        f" {len(missing)} (tag, split) pairs of those are empty"
        + (f": {'; '.join(missing[:EXAMPLES])}" if missing else "")
    )
    metadata = {
        "tags_with_enough_rows": [share.tag for share in checked],
        "empty_tag_splits": missing[:EXAMPLES],
    }
    return _outcome(EVERY_SPLIT, not missing, summary, metadata)


def fractions_within_one_row(
    shares: list[TagShares], validation_fraction: float, test_fraction: float
) -> CheckOutcome:
    """Every tag's rows per split are within one row of n * fraction."""
    off = [share for share in shares if share.largest_distance > 1 + TOLERANCE]
    examples = [
        f"{share.tag} (n={share.rows}): {_listed(share.per_split)}" for share in off[:EXAMPLES]
    ]
    largest = max((share.largest_distance for share in shares), default=0.0)
    summary = (
        f"{len(off)} of {len(shares)} tags have a split more than one row away from"
        f" n * fraction (validation {validation_fraction}, test {test_fraction});"
        f" largest distance {largest:.2f} rows" + (f": {'; '.join(examples)}" if examples else "")
    )
    metadata = {
        "largest_distance_rows": round(largest, 4),
        "tags_off": examples,
        "validation_fraction": validation_fraction,
        "test_fraction": test_fraction,
    }
    return _outcome(FRACTIONS, not off, summary, metadata)


def sums_to_split_counts(query: Query, distribution: str, splits: str) -> CheckOutcome:
    """The built tag_distribution against ml_splits: no row lost or counted twice."""
    columns = [*SPLITS, "total"]
    summed = ", ".join(f"coalesce(sum({column}), 0) as summed_{column}" for column in columns)
    [row] = query(f"""select * from (select {summed} from {distribution})
cross join (select {SPLIT_COLUMNS}, count(*) as total from {splits})""")
    sums = dict(zip(columns, map(int, row[:4]), strict=True))
    split_rows = dict(zip(columns, map(int, row[4:]), strict=True))
    differing = [column for column in columns if sums[column] != split_rows[column]]
    summary = f"tag_distribution sums {_listed(sums)}; ml_splits rows {_listed(split_rows)}"
    if differing:
        summary += f"; differing: {', '.join(differing)}"
    metadata = {"tag_distribution_sums": sums, "ml_splits_rows": split_rows}
    return _outcome(SUMS, not differing, summary, metadata)
