"""The audit of what `dbt build` built, before anything is published.

dbt builds the models in `<dataset>_audit`, where no reader looks, and tests them there.
This module turns the outcome into the decision to publish or not, and, when not, into a
report a person can act on: the model, the failed check, how many rows, a few example
ids, and which raw source (`projects` or `tags`) the failing column comes from, traced
through the column-level lineage dagster-dbt computes for each model.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey, Output

from mlstack_assets.warehouse import Warehouse

EXAMPLES = 5
COLUMN_LINEAGE = "dagster/column_lineage"


def blocks(result: AssetCheckResult) -> bool:
    """A failed check of ERROR severity (dbt `severity: error`, GX `critical`) stops the publish."""
    return not result.passed and result.severity == AssetCheckSeverity.ERROR


@dataclass(frozen=True)
class BuiltModel:
    """A model this `dbt build` built in the audit schema, with what publishing it needs."""

    key: AssetKey
    output: Output
    alias: str
    materialized: str
    compiled_path: Path

    @classmethod
    def from_output(
        cls, key: AssetKey, output: Output, manifest: Mapping[str, Any], target_path: Path
    ) -> BuiltModel | None:
        unique_id = output.metadata.get("unique_id")
        node = manifest["nodes"].get(unique_id.value if unique_id else "", {})
        if node.get("resource_type") != "model":
            return None
        return cls(
            key=key,
            output=output,
            alias=node.get("alias") or node["name"],
            materialized=node.get("config", {}).get("materialized", "view"),
            compiled_path=target_path
            / "compiled"
            / node["package_name"]
            / node["original_file_path"],
        )

    @property
    def compiled_sql(self) -> str:
        """The SELECT dbt ran for this model (a view is published by running it again)."""
        return self.compiled_path.read_text().strip()


def lineage_by_key(models: Iterable[BuiltModel]) -> dict[AssetKey, Any]:
    """Column lineage of each built model, as dagster-dbt attached it to the model's output."""
    return {
        model.key: model.output.metadata[COLUMN_LINEAGE].value
        for model in models
        if COLUMN_LINEAGE in model.output.metadata
    }


def raw_sources(
    key: AssetKey,
    column: str | None,
    lineage: Mapping[AssetKey, Any],
    deps: Mapping[AssetKey, AbstractSet[AssetKey]],
) -> list[str]:
    """The raw assets that `key.column` is computed from. Column lineage (computed by
    dagster-dbt with sqlglot) is followed where it exists; where it does not (e.g. a view
    over a source), every upstream asset of the model counts. An asset that is not a dbt
    model (not in `deps`) is raw."""
    if key not in deps:
        return [key.to_user_string()]
    column_deps = lineage[key].deps_by_column.get(column, []) if key in lineage else []
    upstream = (
        [(dep.asset_key, dep.column_name) for dep in column_deps]
        if column_deps
        else [(parent, column) for parent in sorted(deps[key], key=str)]
    )
    found: list[str] = []
    for parent, parent_column in upstream:
        for source in raw_sources(parent, parent_column, lineage, deps):
            if source not in found:
                found.append(source)
    return found


@dataclass(frozen=True)
class DbtTestFailure:
    model: str
    check_name: str
    failed_rows: int | None
    column: str | None
    examples: list[Any]
    example_label: str
    sources: list[str]

    def describe(self, dataset: str) -> str:
        line = f"- {self.model}: dbt test {self.check_name} failed"
        if self.failed_rows is not None:
            line += f" on {self.failed_rows} rows"
        if self.examples:
            line += f"; e.g. {self.example_label} {self.examples}"
        if self.sources:
            names = ", ".join(f"'{s}' ({dataset}.{s})" for s in self.sources)
            line += f"; column {self.column} comes from raw source {names}"
        return line


def _examples(
    warehouse: Warehouse, relation: str, test: str, column: str, columns: set[str]
) -> tuple[str, list[Any]]:
    """A few offending rows, found with a query in the warehouse: the ids of rows with a
    NULL (when the model has ids), or the duplicated values."""
    if test == "not_null":
        shown = "id" if "id" in columns and column != "id" else column
        sql = f"select {shown} from {relation} where {column} is null order by 1 limit {EXAMPLES}"
        label = "ids" if shown == "id" else column
    elif test == "unique":
        sql = (
            f"select {column} from {relation} where {column} is not null"
            f" group by {column} having count(*) > 1 order by 1 limit {EXAMPLES}"
        )
        label = f"duplicated {column}"
    else:
        return "", []
    return label, [row[0] for row in warehouse.query(sql)]


def describe_test_failure(
    result: AssetCheckResult,
    manifest: Mapping[str, Any],
    warehouse: Warehouse,
    lineage: Mapping[AssetKey, Any],
    deps: Mapping[AssetKey, AbstractSet[AssetKey]],
) -> DbtTestFailure:
    """What failed, on which rows, and which raw source the tested column comes from."""
    unique_id = result.metadata.get("unique_id")
    test = manifest["nodes"].get(unique_id.value if unique_id else "", {})
    failed = result.metadata.get("dagster_dbt/failed_row_count")
    column = test.get("column_name") or (test.get("test_metadata") or {}).get("kwargs", {}).get(
        "column_name"
    )
    model_id = test.get("attached_node")
    model = manifest["nodes"].get(model_id or "", {})
    examples: list[Any] = []
    label = ""
    sources: list[str] = []
    if column and model:
        relation = warehouse.qualified(warehouse.audit_dataset, model.get("alias") or model["name"])
        kind = (test.get("test_metadata") or {}).get("name", "")
        try:
            label, examples = _examples(
                warehouse, relation, kind, column, set(model.get("columns", {}))
            )
        except Exception:  # the report must not hide the failure it reports
            examples = []
        sources = raw_sources(result.asset_key, column, lineage, deps)
    return DbtTestFailure(
        model=result.asset_key.to_user_string(),
        check_name=result.check_name,
        failed_rows=int(failed.value) if failed is not None else None,
        column=column,
        examples=examples,
        example_label=label,
        sources=[s for s in sources if s != result.asset_key.to_user_string()],
    )
