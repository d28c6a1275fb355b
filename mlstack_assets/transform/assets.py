"""dbt models as Dagster assets: `dbt build` runs the models and their tests (as checks).

One `@dbt_assets` for the whole project, because dagster-dbt only respects test failures
within a single definition. dbt sources carry `meta.dagster.asset_key`, which the
translator honours, so `projects` and `tags` (the Airbyte-backed raw assets) are the
upstream of the staging models in the lineage.
"""

from collections.abc import Mapping
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    AutomationCondition,
    Output,
    TableColumn,
    TableSchema,
)
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)

from mlstack_assets.warehouse import Warehouse

TRANSFORM_GROUP = "transform"
OWNER = "team:mlstack"


class MlstackDbtTranslator(DagsterDbtTranslator):
    """dbt nodes become assets of the `transform` group, owned by the data team."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if unique_id.startswith("source."):
            return spec  # sources are the raw assets, defined by the ingestion area
        return spec.replace_attributes(
            group_name=TRANSFORM_GROUP,
            owners=[OWNER],
            # a raw asset materialized by hand brings its dbt dependents up to date
            automation_condition=AutomationCondition.eager(),
        )


def with_table_metadata(event: Any, manifest: Mapping[str, Any], warehouse: Warehouse) -> Any:
    """Add row count, column schema and table name to a dbt model's materialization."""
    if not isinstance(event, Output):
        return event
    unique_id = event.metadata.get("unique_id")
    node = manifest["nodes"].get(unique_id.value if unique_id else "", {})
    if node.get("resource_type") != "model":
        return event
    schema, table = node["schema"], node.get("alias") or node["name"]
    columns = warehouse.table_columns(schema, table) or []
    return event.with_metadata(
        {
            **event.metadata,
            "dagster/row_count": warehouse.row_count(schema, table),
            "dagster/column_schema": TableSchema(
                columns=[TableColumn(name=name, type=dtype) for name, dtype in columns]
            ),
            "dagster/table_name": f"{schema}.{table}",
        }
    )


def build_dbt_assets(project: DbtProject, pool: str | None) -> AssetsDefinition:
    translator = MlstackDbtTranslator(
        settings=DagsterDbtTranslatorSettings(enable_asset_checks=True, enable_code_references=True)
    )

    @dbt_assets(
        manifest=project.manifest_path,
        project=project,
        dagster_dbt_translator=translator,
        name="dbt_models",
        pool=pool,
    )
    def dbt_models(context: AssetExecutionContext, dbt: DbtCliResource, warehouse: Warehouse):
        """`dbt build`: staging views, then labeled_projects, then its schema tests."""
        with warehouse.exclusive():
            invocation = dbt.cli(["build"], context=context)
            # Buffer until dbt exits: on DuckDB, dbt holds the file while it runs, so the
            # tables can only be inspected afterwards (dagster-dbt's own fetch_row_counts
            # queries in parallel with dbt and fails on the file lock).
            events, error = [], None
            try:
                events.extend(invocation.stream())
            except Exception as exc:  # re-raised below, after what dbt did finish is reported
                error = exc
            for event in events:
                yield with_table_metadata(event, invocation.manifest, warehouse)
            if error is not None:
                raise error

    return dbt_models
