"""dbt's models as Dagster assets, with write-audit-publish, in four named pieces.

One multi-asset for the whole dbt project (dagster-dbt respects test failures only within
one definition): 1. build (`build.py`: `dbt build` into `<dataset>_audit`, the profile's
schema), 2. audit (`audit.py`: dbt's tests and each model's GX suite, there), 3. publish
(`publish.py`: every model at once, a version of labeled_projects in the lake, views
reading the published tables), 4. each model's Output with its metadata. A failed audit
fails the step with one report and the published tables keep their content. dbt sources
carry `meta.dagster.asset_key`, so the raw tables are the staging models' upstream. A run
that selects only checks runs them on the published tables (`published_checks.py`).
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
    Definitions,
    MetadataValue,
    Output,
    multi_asset,
)
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtProject, dbt_assets
from pydantic import Field

from mlstack_assets.compat import InstalledDbtCliResource
from mlstack_assets.lake import Lake
from mlstack_assets.lake.versions import current_versions
from mlstack_assets.publish import (
    VOLUME_GUARDED,
    AuditFailed,
    Candidate,
    policy,
    publish_audited,
    volume_check_spec,
)
from mlstack_assets.quality.suites import load_suite
from mlstack_assets.settings import Settings
from mlstack_assets.sources import source_names
from mlstack_assets.transform.audit import audit_build
from mlstack_assets.transform.build import DbtBuild, run_build
from mlstack_assets.transform.dbt_child import dbt_child_executable
from mlstack_assets.transform.project import dbt_project, dbt_vars_args
from mlstack_assets.transform.published_checks import checks_on_published
from mlstack_assets.transform.source_freshness import build_source_freshness_check
from mlstack_assets.transform.upstream import fail_if_upstream_missing
from mlstack_assets.warehouse import Warehouse

TRANSFORM_GROUP = "transform"
RELATION_METADATA = "relation"  # `view` or `table`: the run summary shows views as views
GX_SUITE_META = "great_expectations_suite"  # dbt `meta` naming the GX suite of a model
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
    built: DbtBuild, warehouse: Warehouse, published: dict[AssetKey, dict], seconds: dict
) -> Iterator[Output]:
    """The fourth piece: each model's Output, with dagster-dbt's metadata (schema and
    lineage of the audit relation: the same as the published one), its row count, and the
    publish's (the published table, its version); the step's stages on the first."""
    timings = {"seconds": MetadataValue.json({k: round(v, 3) for k, v in seconds.items()})}
    for position, model in enumerate(built.models):
        metadata = {**model.output.metadata, **published[model.key]}
        metadata[RELATION_METADATA] = "view" if model.is_view else "table"
        if not model.is_view:
            metadata["dagster/row_count"] = warehouse.row_count(warehouse.dataset, model.alias)
        version = published[model.key].get("version")
        yield Output(
            value=None,
            output_name=model.output.output_name,
            metadata={**metadata, **(timings if position == 0 else {})},
            data_version=DataVersion(version) if version else None,
        )


def build_dbt_assets(project: DbtProject, settings: Settings) -> AssetsDefinition:
    """One multi-asset for every dbt model: write (dbt build in the audit schema), audit
    (dbt's tests and the GX suite, there), publish (all models at once, atomically)."""
    translator = MlstackDbtTranslator(
        settings.dataset,
        settings=DagsterDbtTranslatorSettings(
            enable_asset_checks=True, enable_code_references=True
        ),
    )

    # dagster-dbt's own specs for the project, its tests as checks; the GX suites and the
    # volume guard join them on the one multi-asset below (`@dbt_assets` takes no others)
    @dbt_assets(manifest=project.manifest_path, project=project, dagster_dbt_translator=translator)
    def dbt_specs(): ...

    specs, dbt_check_specs = list(dbt_specs.specs), list(dbt_specs.check_specs)
    suites = {s.key: load_suite(s.key.path[-1]) for s in specs if "great_expectations" in s.kinds}
    manifest = json.loads(project.manifest_path.read_text())
    aliases = {
        s.key: manifest["nodes"][s.metadata["dagster_dbt/unique_id"]]["alias"] for s in specs
    }
    # every node an asset stands for: the models, and the sources (the raw assets)
    keys_by_unique_id = {
        unique_id: translator.get_asset_spec(manifest, unique_id, project).key
        for unique_id in [
            *manifest["sources"],
            *(s.metadata["dagster_dbt/unique_id"] for s in specs),
        ]
    }
    build_args = ["build", *dbt_vars_args(settings)]

    @multi_asset(
        name="dbt_models",
        specs=specs,
        check_specs=[
            *dbt_check_specs,
            *(check for key, suite in suites.items() for check in suite.check_specs(key)),
            *(volume_check_spec(s.key) for s in specs if s.key.path[-1] in VOLUME_GUARDED),
        ],
        can_subset=True,
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
                context, dbt, warehouse, settings, dbt_check_specs, suites, aliases, manifest
            )
            return
        with warehouse.session(purpose="build, audit and publish the dbt models"):
            fail_if_upstream_missing(
                context.selected_asset_keys, manifest, keys_by_unique_id, warehouse
            )
            started = time.perf_counter()
            built = run_build(context, dbt, build_args)  # 1. build
            seconds = {"transform": built.seconds}
            deps = context.assets_def.asset_deps
            audit = audit_build(built, warehouse, suites, settings.data_docs_dir, deps)  # 2.
            seconds["checks"] = time.perf_counter() - started - seconds["transform"]
            raw = current_versions(Lake(settings.lake), source_names())
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
            yield from _outputs(built, warehouse, published, seconds)  # 4. metadata
            yield from audit.results()

    return dbt_models


def build_transform_definitions(settings: Settings) -> Definitions:
    """The dbt project (staging views, labeled_projects), its tests as checks, and dbt's
    source freshness as a check of the raw tables."""
    project = dbt_project(settings)
    return Definitions(
        assets=[build_dbt_assets(project, settings)],
        asset_checks=[build_source_freshness_check(settings)],
        resources={
            "dbt": InstalledDbtCliResource(
                project_dir=project, dbt_executable=dbt_child_executable()
            )
        },
    )
