"""The dbt step's second piece: the audit of what `dbt build` built, before any publish.

dbt builds and tests the models in `<dataset>_audit`, where no reader looks; the GX suite of a
model (dbt `meta.great_expectations_suite`) then validates the same relation. Both make one
`Audit`: a failed dbt test says how many rows, a few example ids (a relationships test: the
orphans) and which raw source the failing column comes from (dagster-dbt's column lineage).
"""

from collections.abc import Mapping, Set
from pathlib import Path
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey, MetadataValue

from mlstack_assets.quality.outcomes import Audit, CheckOutcome
from mlstack_assets.quality.suites import Suite
from mlstack_assets.quality.validation import validate_table
from mlstack_assets.transform.build import DbtBuild
from mlstack_assets.warehouse import Warehouse

EXAMPLES = 5
Deps = Mapping[AssetKey, Set[AssetKey]]  # each dbt model's upstream assets


def raw_sources(
    key: AssetKey, column: str | None, lineage: Mapping[AssetKey, Any], deps: Deps
) -> list[str]:
    """The raw assets (not in `deps`: no dbt model) that `key.column` is computed from, by
    column lineage where dagster-dbt found it, else through every upstream asset of the model."""
    if key not in deps:
        return [key.to_user_string()]
    column_deps = lineage[key].deps_by_column.get(column, []) if key in lineage else []
    upstream = [(dep.asset_key, dep.column_name) for dep in column_deps]
    upstream = upstream or [(parent, column) for parent in sorted(deps[key], key=str)]
    found = (raw_sources(parent, col, lineage, deps) for parent, col in upstream)
    return list(dict.fromkeys(source for sources in found for source in sources))


def _examples(
    warehouse: Warehouse, test: Mapping, column: str, model: Mapping, nodes: Mapping
) -> tuple[str, list[Any]]:
    """A few offending rows, queried in the warehouse: the ids of NULL rows (when the model has
    ids), the duplicated values, or the orphans of a relationships test."""
    test_metadata = test.get("test_metadata") or {}
    kind = test_metadata.get("name", "")
    shown = column  # the column whose values the examples are
    if kind == "relationships":
        attached = test.get("attached_node")
        parents = [n for n in test.get("depends_on", {}).get("nodes", []) if n != attached]
        parent = nodes.get(parents[0], {}) if parents else {}
        if not parent:
            return "", []
        field = test_metadata.get("kwargs", {}).get("field", column)
        to = warehouse.qualified(warehouse.audit_dataset, parent.get("alias") or parent["name"])
        label = f"orphan {column}s"
        parent_ids = f"select {field} from {to} where {field} is not null"
        where = f"{column} is not null and {column} not in ({parent_ids})"
    elif kind == "not_null":
        shown = "id" if "id" in model.get("columns", {}) and column != "id" else column
        label, where = ("ids" if shown == "id" else column), f"{column} is null"
    elif kind == "unique":
        label = f"duplicated {column}"
        where = f"{column} is not null group by {column} having count(*) > 1"
    else:
        return "", []
    relation = warehouse.qualified(warehouse.audit_dataset, model.get("alias") or model["name"])
    sql = f"select {shown} from {relation} where {where} order by 1 limit {EXAMPLES}"
    return label, [row[0] for row in warehouse.query(sql)]


def _dbt_outcome(
    result: AssetCheckResult, built: DbtBuild, warehouse: Warehouse, deps: Deps
) -> CheckOutcome:
    """A dbt test's outcome; a failure says on how many rows, shows a few, and names the raw
    source of the tested column: `failed on 1 rows; e.g. ids [9]; column tag comes from ...`."""
    metadata = dict(result.metadata)
    summary = "passed"
    if not result.passed:
        nodes = built.manifest["nodes"]
        unique_id = result.metadata.get("unique_id")
        test = nodes.get(unique_id.value if unique_id else "", {})
        kwargs = (test.get("test_metadata") or {}).get("kwargs", {})
        column = test.get("column_name") or kwargs.get("column_name")
        model = nodes.get(test.get("attached_node") or "", {})
        failed = result.metadata.get("dagster_dbt/failed_row_count")
        summary = "failed" + (f" on {int(failed.value)} rows" if failed is not None else "")
        if column and model:
            try:
                label, examples = _examples(warehouse, test, column, model, nodes)
            except Exception:  # the report must not hide the failure it reports
                label, examples = "", []
            if examples:
                summary += f"; e.g. {label} {examples}"
                metadata["sample_values"] = MetadataValue.json([str(value) for value in examples])
            own = result.asset_key.to_user_string()
            sources = raw_sources(result.asset_key, column, built.lineage, deps)
            if names := [f"'{s}' ({warehouse.dataset}.{s})" for s in sources if s != own]:
                summary += f"; column {column} comes from raw source {', '.join(names)}"
    return CheckOutcome(
        asset_key=result.asset_key,
        name=result.check_name,
        passed=result.passed,
        summary=summary,
        blocking=result.severity == AssetCheckSeverity.ERROR,
        label="dbt test",
        metadata=metadata,
    )


def audit_build(
    built: DbtBuild, warehouse: Warehouse, suites: Mapping[AssetKey, Suite], docs: Path, deps: Deps
) -> Audit:
    """dbt's tests and each model's GX suite (Data Docs in `docs`), on the audit schema."""
    audit = Audit([_dbt_outcome(result, built, warehouse, deps) for result in built.checks])
    if built.error is not None and not audit.blocking_failures:
        audit.errors.append(f"dbt build failed: {built.error}")
    schema = warehouse.audit_dataset
    for model in built.models:
        if model.key in suites:
            suite = suites[model.key]
            audit += validate_table(warehouse, schema, model.alias, suite, docs, model.key).audit
    return audit
