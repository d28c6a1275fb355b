"""The dbt step's second piece: the audit of what `dbt build` built, before any publish.

dbt builds the models in `<dataset>_audit`, where no reader looks, and tests them there;
the GX suite of a model (dbt `meta.great_expectations_suite`) then validates the same
relation. `audit_build` turns both into one `Audit` (`quality/outcomes.py`): a failed
dbt test says how many rows, a few example ids (a relationships test: the orphan ids)
and which raw source (`projects` or `tags`) the failing column comes from, traced
through the column-level lineage dagster-dbt computes for each model.
"""

from __future__ import annotations

from collections.abc import Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey, MetadataValue

from mlstack_assets.quality.outcomes import Audit, CheckOutcome
from mlstack_assets.quality.suites import Suite
from mlstack_assets.quality.validation import validate_table
from mlstack_assets.transform.build import DbtBuild
from mlstack_assets.warehouse import Warehouse

EXAMPLES = 5


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
        """e.g. `failed on 1 rows; e.g. ids [9]; column tag comes from raw source 'tags'`."""
        line = "failed" + (f" on {self.failed_rows} rows" if self.failed_rows is not None else "")
        if self.examples:
            line += f"; e.g. {self.example_label} {self.examples}"
        if self.sources:
            names = ", ".join(f"'{s}' ({dataset}.{s})" for s in self.sources)
            line += f"; column {self.column} comes from raw source {names}"
        return line


def _examples(
    warehouse: Warehouse,
    relation: str,
    test: Mapping[str, Any],
    column: str,
    columns: set[str],
    manifest: Mapping[str, Any],
) -> tuple[str, list[Any]]:
    """A few offending rows, found with a query in the warehouse: the ids of rows with a
    NULL (when the model has ids), the duplicated values, or the orphans of a
    relationships test."""
    kind = (test.get("test_metadata") or {}).get("name", "")
    kwargs = (test.get("test_metadata") or {}).get("kwargs", {})
    if kind == "relationships":
        parents = [
            n for n in test.get("depends_on", {}).get("nodes", []) if n != test.get("attached_node")
        ]
        parent = manifest["nodes"].get(parents[0], {}) if parents else {}
        if not parent:
            return "", []
        field = kwargs.get("field", column)
        to = warehouse.qualified(warehouse.audit_dataset, parent.get("alias") or parent["name"])
        sql = (
            f"select {column} from {relation} where {column} is not null and {column} not in"
            f" (select {field} from {to} where {field} is not null) order by 1 limit {EXAMPLES}"
        )
        return f"orphan {column}s", [row[0] for row in warehouse.query(sql)]
    test = kind
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
    built: DbtBuild,
    warehouse: Warehouse,
    deps: Mapping[AssetKey, AbstractSet[AssetKey]],
) -> DbtTestFailure:
    """What failed, on which rows, and which raw source the tested column comes from."""
    manifest = built.manifest
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
        try:
            label, examples = _examples(
                warehouse, relation, test, column, set(model.get("columns", {})), manifest
            )
        except Exception:  # the report must not hide the failure it reports
            examples = []
        sources = raw_sources(result.asset_key, column, built.lineage, deps)
    return DbtTestFailure(
        model=result.asset_key.to_user_string(),
        check_name=result.check_name,
        failed_rows=int(failed.value) if failed is not None else None,
        column=column,
        examples=examples,
        example_label=label,
        sources=[s for s in sources if s != result.asset_key.to_user_string()],
    )


def _dbt_outcome(
    result: AssetCheckResult,
    built: DbtBuild,
    warehouse: Warehouse,
    deps: Mapping[AssetKey, AbstractSet[AssetKey]],
) -> CheckOutcome:
    blocking = result.severity == AssetCheckSeverity.ERROR
    metadata = dict(result.metadata)
    if result.passed:
        summary = "passed"
    else:
        failure = describe_test_failure(result, built, warehouse, deps)
        summary = failure.describe(warehouse.dataset)
        if failure.examples:
            metadata["sample_values"] = MetadataValue.json(
                [str(value) for value in failure.examples]
            )
    return CheckOutcome(
        asset_key=result.asset_key,
        name=result.check_name,
        passed=result.passed,
        summary=summary,
        blocking=blocking,
        label="dbt test",
        metadata=metadata,
    )


def audit_build(
    built: DbtBuild,
    warehouse: Warehouse,
    suites: Mapping[AssetKey, Suite],
    data_docs_dir: Path,
    deps: Mapping[AssetKey, AbstractSet[AssetKey]],
) -> Audit:
    """dbt's tests and each model's GX suite, on the audit schema, as one audit."""
    outcomes = [_dbt_outcome(result, built, warehouse, deps) for result in built.checks]
    audit = Audit(outcomes)
    for model in built.models:
        if model.key in suites:
            audit = (
                audit
                + validate_table(
                    warehouse,
                    warehouse.audit_dataset,
                    model.alias,
                    suites[model.key],
                    data_docs_dir,
                    model.key,
                ).audit
            )
    if built.error is not None and not any(o.blocks for o in outcomes):
        audit = audit + Audit(errors=[f"dbt build failed: {built.error}"])
    return audit
