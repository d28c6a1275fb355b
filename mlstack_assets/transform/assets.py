"""dbt models as Dagster assets, with write-audit-publish, in four named pieces.

One multi-asset for the whole dbt project (dagster-dbt respects test failures only
within a single definition): 1. build (`build.py`: `dbt build` into `<dataset>_audit`,
the profile's schema), 2. audit (`audit.py`: dbt's tests and each model's GX suite,
there), 3. publish (`publish.py`, the one audited publish: all models at once, a version
of labeled_projects in the lake, views reading the published tables), 4. metadata (each
model's Output). A failed audit fails the step with one report, and the published tables
keep their content. dbt sources carry `meta.dagster.asset_key`, which the translator
honours, so `projects` and `tags` (the Airbyte-backed raw assets) are the upstream of the
staging models in the lineage. A run that selects only checks runs them on the published
tables instead (`published_checks.py`).
"""

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    AutomationCondition,
    Config,
    DataVersion,
    MetadataValue,
    Output,
    multi_asset,
)
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtProject
from pydantic import Field

from mlstack_assets.compat import InstalledDbtCliResource, dbt_asset_and_check_specs
from mlstack_assets.publish import (
    VOLUME_GUARDED,
    AuditFailed,
    Candidate,
    policy,
    publish_audited,
    upstream_versions,
    volume_check_spec,
)
from mlstack_assets.quality.suites import load_suite
from mlstack_assets.settings import Settings
from mlstack_assets.transform.audit import audit_build
from mlstack_assets.transform.build import DbtBuild, run_build
from mlstack_assets.transform.project import dbt_vars_args
from mlstack_assets.transform.published_checks import checks_on_published
from mlstack_assets.transform.upstream import fail_if_upstream_missing
from mlstack_assets.warehouse import Warehouse

TRANSFORM_GROUP = "transform"
RELATION_METADATA = "relation"  # `view` or `table`: the run summary shows views as views
GX_SUITE_META = "great_expectations_suite"  # dbt `meta` naming the GX suite that checks a model
OWNER = "team:mlstack"


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


class DbtConfig(Config):
    """Per-run choices of the dbt step."""

    allow_row_drop: bool = Field(
        default=False,
        description="Publish labeled_projects even if it lost more rows than"
        " MLSTACK_MAX_ROW_DROP_PERCENT (a deliberate shrink; recorded in the materialization).",
    )


def _outputs(
    context: AssetExecutionContext, built: DbtBuild, published: dict[AssetKey, dict], seconds: dict
) -> Iterator[Output]:
    """The fourth piece: each model's Output, with dagster-dbt's metadata (row count,
    schema and lineage of the audit relation: the same after the publish) and the
    publish's (the published table, its version); the step's stages on the first."""
    timings = {"seconds": MetadataValue.json({k: round(v, 3) for k, v in seconds.items()})}
    for position, model in enumerate(built.models):
        metadata = {
            **model.output.metadata,
            **published[model.key],
            RELATION_METADATA: "view" if model.is_view else "table",
        }
        version = published[model.key].get("version")
        yield Output(
            value=None,
            output_name=model.output.output_name,
            metadata={**metadata, **(timings if position == 0 else {})},
            data_version=DataVersion(version) if version else None,
        )


def build_dbt_assets(project: DbtProject, settings: Settings, pool: str | None) -> AssetsDefinition:
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
        check_specs=[
            *dbt_check_specs,
            *gx_check_specs,
            *(volume_check_spec(s.key) for s in specs if s.key.path[-1] in VOLUME_GUARDED),
        ],
        can_subset=True,
        pool=pool,
        allow_arbitrary_check_specs=True,
    )
    def dbt_models(
        context: AssetExecutionContext,
        config: DbtConfig,
        dbt: InstalledDbtCliResource,
        warehouse: Warehouse,
    ):
        """`dbt build` into the audit schema, its tests and GX suites there, then publish."""
        if not context.selected_asset_keys:  # checks only (the UI's "Execute")
            yield from checks_on_published(
                context, dbt, warehouse, settings, dbt_check_specs, suites, aliases, parsed
            )
            return
        with warehouse.session(purpose="build, audit and publish the dbt models"):
            selected = context.selected_asset_keys
            fail_if_upstream_missing(selected, parsed, keys_by_unique_id, warehouse)
            started = time.perf_counter()
            built = run_build(context, dbt, warehouse, build_args)  # 1. build
            seconds = {"transform": built.seconds}
            deps = context.assets_def.asset_deps
            audit = audit_build(built, warehouse, suites, settings.data_docs_dir, deps)  # 2.
            seconds["checks"] = time.perf_counter() - started - seconds["transform"]
            raw = upstream_versions(settings.lake, ["projects", "tags"])
            candidates = [
                Candidate(
                    model.key,
                    model.alias,
                    warehouse.audit_dataset,
                    view_sql=model.published_sql(
                        built.manifest, warehouse.audit_dataset, warehouse.dataset
                    )
                    if model.is_view
                    else None,
                    inputs=raw,
                )
                for model in built.models
            ]
            names = ", ".join(sorted(model.key.to_user_string() for model in built.models))
            try:  # 3. publish (or not)
                audit, published = publish_audited(
                    f"dbt models {names or '(none built)'}",
                    candidates,
                    audit,
                    warehouse,
                    policy(settings, config.allow_row_drop),
                    context.run_id,
                    context.log.warning,
                    name_assets=True,  # one step, several models: each line names its model
                )
            except AuditFailed as failed:
                yield from failed.audit.results()
                raise failed.failure from None
            seconds["publish"] = time.perf_counter() - started - sum(seconds.values())
            if config.allow_row_drop:
                for entry in published.values():
                    entry["allow_row_drop"] = True
            yield from _outputs(context, built, published, seconds)  # 4. metadata
            yield from audit.results()

    return dbt_models
