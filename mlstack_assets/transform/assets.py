"""dbt models as Dagster assets, with write-audit-publish.

`dbt build` writes every model into `<dataset>_audit` (dbt's own `+schema: audit` in
dbt_project.yml) and runs dbt's tests there; the Great Expectations suite of a model
(dbt `meta.great_expectations_suite`) then audits the same relation. Only when no
blocking check failed are the models published to `<dataset>`, all in one step
(`Warehouse.publish_relations`); otherwise the step fails with a report and the
published tables keep their content. One multi-asset for the whole project, because
dagster-dbt only respects test failures within a single definition. dbt sources carry
`meta.dagster.asset_key`, which the translator honours, so `projects` and `tags` (the
Airbyte-backed raw assets) are the upstream of the staging models in the lineage.
"""

import json
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import Future
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetsDefinition,
    AssetSpec,
    AutomationCondition,
    Failure,
    MetadataValue,
    Output,
    get_dagster_logger,
    multi_asset,
)
from dagster_dbt import (
    DagsterDbtTranslator,
    DagsterDbtTranslatorSettings,
    DbtCliInvocation,
    DbtProject,
)

from mlstack_assets.compat import (
    InstalledDbtCliResource,
    dbt_asset_and_check_specs,
    dbt_events_with_metadata,
)
from mlstack_assets.quality.suites import load_suite
from mlstack_assets.quality.validation import validate_table
from mlstack_assets.settings import Settings
from mlstack_assets.transform.audit import (
    BuiltModel,
    blocks,
    describe_test_failure,
    lineage_by_key,
)
from mlstack_assets.transform.project import dbt_vars_args
from mlstack_assets.transform.published_checks import checks_on_published
from mlstack_assets.transform.upstream import fail_if_upstream_missing
from mlstack_assets.warehouse import Warehouse

TRANSFORM_GROUP = "transform"
GX_SUITE_META = "great_expectations_suite"  # dbt `meta` naming the GX suite that checks a model
OWNER = "team:mlstack"
logger = get_dagster_logger()


class MlstackDbtTranslator(DagsterDbtTranslator):
    """dbt nodes become assets of the `transform` group, owned by the data team; a model's
    table name is where it is published (`<dataset>`), not where dbt builds it (the audit)."""

    def __init__(self, dataset: str, settings: DagsterDbtTranslatorSettings | None = None):
        super().__init__(settings=settings)
        self.dataset = dataset

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
        node = manifest["nodes"][unique_id]
        if GX_SUITE_META in node.get("config", {}).get("meta", {}):
            spec = spec.merge_attributes(kinds={"great_expectations"})
        published = ".".join(p for p in (node.get("database"), self.dataset, node["alias"]) if p)
        return spec.replace_attributes(metadata={**spec.metadata, "dagster/table_name": published})


def events_with_metadata(invocation: DbtCliInvocation, adapter: "Future[Any]") -> Iterator[Any]:
    """dbt's events with row counts, column schemas and column-level lineage attached.

    dagster-dbt attaches metadata through `dagster._core.utils.imap`, which spins without
    sleeping while its input is not ready: chained twice over a live `dbt build`, two
    threads of this process spin for the whole build. Collecting dbt's events first stops
    that; on DuckDB dagster-dbt waits for dbt to exit before fetching anyway (dbt holds the
    file), and on BigQuery fetching after the build costs a few metadata queries in a row.
    One path for both warehouses keeps the one the tests run the one production runs. If
    dbt fails, the events it did produce are still reported before its error is raised.
    `adapter`: dagster-dbt's in-process adapter, made while dbt ran.
    """
    events: list[Any] = []
    error: Exception | None = None
    try:
        for event in invocation.stream():
            events.append(event)
    except Exception as failure:  # re-raised below, after the events it did produce
        error = failure
    try:
        invocation.adapter = adapter.result()
    except Exception as failure:  # as dagster-dbt does: no metadata, not a failed step
        logger.warning(f"no dbt adapter for row counts and column metadata: {failure}")
    yield from dbt_events_with_metadata(events, invocation)
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


def _failure_report(
    warehouse: Warehouse,
    dbt_failures: list[str],
    gx_failures: list[str],
    dbt_error: Exception | None,
) -> str:
    lines = [
        f"dbt built the models in {warehouse.audit_dataset}, and their audit failed, so nothing"
        f" was published: the tables in {warehouse.dataset} keep their previous content. The"
        f" audited rows stay in {warehouse.audit_dataset} for inspection.",
        *dbt_failures,
        *gx_failures,
    ]
    if dbt_error is not None and not dbt_failures:
        lines.append(f"- dbt build failed: {dbt_error}")
    return "\n".join(lines)


def build_dbt_assets(project: DbtProject, settings: Settings) -> AssetsDefinition:
    """One multi-asset for every dbt model: write (dbt build in the audit schema), audit
    (dbt's tests and the GX suite, there), publish (all models at once, atomically)."""
    translator = MlstackDbtTranslator(
        settings.dataset,
        settings=DagsterDbtTranslatorSettings(
            enable_asset_checks=True, enable_code_references=True
        ),
    )
    specs, dbt_check_specs = dbt_asset_and_check_specs(project, translator)
    suites = {
        spec.key: load_suite(spec.key.path[-1])
        for spec in specs
        if "great_expectations" in spec.kinds
    }
    gx_check_specs = [spec for key, suite in suites.items() for spec in suite.check_specs(key)]
    build_args = ["build", *dbt_vars_args(settings)]
    parsed = json.loads(project.manifest_path.read_text())
    aliases = {
        spec.key: parsed["nodes"][spec.metadata["dagster_dbt/unique_id"]]["alias"] for spec in specs
    }
    # every node an asset stands for: the models, and the sources (the raw assets)
    model_ids = [spec.metadata["dagster_dbt/unique_id"] for spec in specs]
    keys_by_unique_id = {
        unique_id: translator.get_asset_spec(parsed, unique_id, project).key
        for unique_id in [*parsed["sources"], *model_ids]
    }

    @multi_asset(
        name="dbt_models",
        specs=specs,
        check_specs=[*dbt_check_specs, *gx_check_specs],
        can_subset=True,
        pool=settings.warehouse_pool,
        allow_arbitrary_check_specs=True,
    )
    def dbt_models(
        context: AssetExecutionContext, dbt: InstalledDbtCliResource, warehouse: Warehouse
    ):
        """`dbt build` into the audit schema, its tests and GX suites there, then publish."""
        if not context.selected_asset_keys:  # checks only (the UI's "Execute")
            yield from checks_on_published(
                context, dbt, warehouse, settings, dbt_check_specs, suites, aliases, parsed
            )
            return
        with warehouse.exclusive():
            fail_if_upstream_missing(
                context.selected_asset_keys, parsed, keys_by_unique_id, warehouse
            )
            started = time.perf_counter()
            invocation = dbt.cli(build_args, context=context, raise_on_error=False)
            adapter = dbt.adapter_while_dbt_runs(build_args)
            try:
                events = [
                    with_compiled_sql(e, invocation)
                    for e in events_with_metadata(invocation, adapter)
                ]
            finally:
                warehouse.after_dbt()
            manifest = invocation.manifest
            models = [
                model
                for event in events
                if isinstance(event, Output)
                and (
                    model := BuiltModel.from_output(
                        context.asset_key_for_output(event.output_name),
                        event,
                        manifest,
                        invocation.target_path,
                    )
                )
            ]
            dbt_checks = [e for e in events if isinstance(e, AssetCheckResult)]
            seconds = {"transform": time.perf_counter() - started}
            gx_checks: list[AssetCheckResult] = []
            gx_failures: list[str] = []
            for model in models:
                if model.key not in suites:
                    continue
                validation = validate_table(
                    warehouse,
                    warehouse.audit_dataset,
                    model.alias,
                    suites[model.key],
                    settings.data_docs_dir,
                )
                for outcome in validation.outcomes:
                    if outcome.warning:
                        context.log.warning(f"{outcome.expectation.check_name}: {outcome.warning}")
                gx_checks += validation.check_results(model.key)
                gx_failures += [
                    f"- {model.key.to_user_string()}: {line.removeprefix('- ')}"
                    for line in validation.failure_report().splitlines()
                    if line
                ]
            seconds["checks"] = time.perf_counter() - started - seconds["transform"]
            lineage = lineage_by_key(models)
            dbt_failures = [
                describe_test_failure(
                    check, manifest, warehouse, lineage, context.assets_def.asset_deps
                ).describe(warehouse.dataset)
                for check in dbt_checks
                if blocks(check)
            ]
            dbt_error = invocation.get_error()
            if dbt_failures or gx_failures or dbt_error is not None:
                yield from dbt_checks
                yield from gx_checks
                raise Failure(
                    description=_failure_report(warehouse, dbt_failures, gx_failures, dbt_error),
                    metadata={"audit_dataset": warehouse.audit_dataset},
                    allow_retries=False,
                )
            warehouse.publish_relations(
                warehouse.audit_dataset,
                tables=[m.alias for m in models if m.materialized != "view"],
                views={m.alias: m.compiled_sql for m in models if m.materialized == "view"},
            )
            seconds["publish"] = time.perf_counter() - started - sum(seconds.values())
            timings = {"seconds": MetadataValue.json({k: round(v, 3) for k, v in seconds.items()})}
            for position, model in enumerate(models):
                # dagster-dbt fetched row count, schema and lineage from the audit relation:
                # the same after the copy; the table name is the published one
                table_name = context.assets_def.specs_by_key[model.key].metadata.get(
                    "dagster/table_name"
                )
                yield model.output.with_metadata(
                    {
                        **model.output.metadata,
                        "dagster/table_name": table_name,
                        # the step's stages, once (on its first model), for `make bench`
                        **(timings if position == 0 else {}),
                    }
                )
            yield from dbt_checks
            yield from gx_checks

    return dbt_models
