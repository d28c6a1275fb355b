"""dbt models as Dagster assets: `dbt build` runs the models and their tests (as checks).

One `@dbt_assets` for the whole project, because dagster-dbt only respects test failures
within a single definition. dbt sources carry `meta.dagster.asset_key`, which the
translator honours, so `projects` and `tags` (the Airbyte-backed raw assets) are the
upstream of the staging models in the lineage.
"""

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    AutomationCondition,
    MetadataValue,
    Output,
)
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliInvocation,
    DbtCliResource,
    DbtProject,
    dbt_assets,
)
from dagster_dbt.core.dbt_event_iterator import DbtEventIterator

from mlstack_assets.warehouse import Warehouse

TRANSFORM_GROUP = "transform"
GX_SUITE_META = "great_expectations_suite"  # dbt `meta` naming the GX suite that checks a model
OWNER = "team:mlstack"


class MlstackDbtTranslator(DagsterDbtTranslator):
    """dbt nodes become assets of the `transform` group, owned by the data team."""

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if unique_id.startswith("source."):
            return spec  # sources are the raw assets, defined by the ingestion area
        spec = spec.replace_attributes(
            group_name=TRANSFORM_GROUP,
            owners=[OWNER],
            # a raw asset materialized by hand brings its dbt dependents up to date
            automation_condition=AutomationCondition.eager(),
        )
        if GX_SUITE_META in manifest["nodes"][unique_id].get("config", {}).get("meta", {}):
            spec = spec.merge_attributes(kinds={"great_expectations"})
        return spec


def close_in_process_dbt_duckdb() -> None:
    """Close the DuckDB file that dagster-dbt's in-process adapter opened for metadata.

    dbt-duckdb keeps one connection per process open; left open, the next step of this run
    could not open the file with Dagster's own (differently configured) connection.
    """
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with contextlib.suppress(Exception):  # no environment: nothing was opened
        DuckDBConnectionManager.env().close()
    DuckDBConnectionManager.close_all_connections()


def events_with_metadata(invocation: DbtCliInvocation) -> Iterator[Any]:
    """dbt's events with row counts, column schemas and column-level lineage attached.

    dagster-dbt attaches metadata through `dagster._core.utils.imap`, which spins without
    sleeping while its input is not ready: chained twice over a live `dbt build`, two
    threads of this process spin for the whole build. Collecting dbt's events first stops
    that; on DuckDB dagster-dbt waits for dbt to exit before fetching anyway (dbt holds the
    file), and on BigQuery fetching after the build costs a few metadata queries in a row.
    One path for both warehouses keeps the one the tests run the one production runs. If
    dbt fails, the events it did produce are still reported before its error is raised.
    """
    events: list[Any] = []
    error: Exception | None = None
    try:
        for event in invocation.stream():
            events.append(event)
    except Exception as failure:  # re-raised below, after the events it did produce
        error = failure
    yield from (
        DbtEventIterator(iter(events), dbt_cli_invocation=invocation)
        .fetch_row_counts()
        .fetch_column_metadata()
    )
    if error is not None:
        raise error


def with_compiled_sql(event: Any, invocation: DbtCliInvocation) -> Any:
    """Attach the SQL dbt actually ran for a model (what the warehouse executed)."""
    if not isinstance(event, Output):
        return event
    unique_id = event.metadata.get("unique_id")
    node = invocation.manifest["nodes"].get(unique_id.value if unique_id else "", {})
    if node.get("resource_type") != "model":
        return event
    compiled = invocation.target_path.joinpath(
        "compiled", node["package_name"], node["original_file_path"]
    )
    if not compiled.exists():
        return event
    sql = compiled.read_text().strip()
    return event.with_metadata(
        {**event.metadata, "compiled_sql": MetadataValue.md(f"```sql\n{sql}\n```")}
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
            # The adapter's first metadata query imports agate, babel and pytz (which lists
            # ~600 time zones); in dagster-dbt's pool threads, beside its polling loop, that
            # took up to 7 s in `make bench`. Import them now, while dbt runs in its process.
            import dbt_common.clients.agate_helper  # noqa: F401

            try:
                for event in events_with_metadata(invocation):
                    yield with_compiled_sql(event, invocation)
            finally:
                if warehouse.kind == "duckdb":
                    close_in_process_dbt_duckdb()

    return dbt_models
