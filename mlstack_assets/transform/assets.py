"""dbt's models as Dagster assets, with write-audit-publish.

One multi-asset for the whole project (dagster-dbt respects test failures only within one
definition): `dbt build` into `<dataset>_audit` (`build.py`), dbt's tests and each model's GX
suite there (`audit.py`), then every model published at once, with a version of labeled_projects
in the lake (`publish.py`), or none. dbt sources carry `meta.dagster.asset_key`: the raw tables
are the staging models' upstream. Checks run alone run on the published tables.
"""

import json
import time
from collections.abc import Iterator, Mapping
from typing import Any

import dagster as dg
from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, DbtProject, dbt_assets
from pydantic import Field

from mlstack_assets import publish
from mlstack_assets.compat import InstalledDbtCliResource
from mlstack_assets.lake.versions import current_versions, warehouse_lake
from mlstack_assets.quality.outcomes import CheckOutcome
from mlstack_assets.quality.suites import load_suite
from mlstack_assets.quality.validation import validate_table
from mlstack_assets.settings import Settings
from mlstack_assets.sources import source_names
from mlstack_assets.transform.audit import audit_build
from mlstack_assets.transform.build import fail_if_upstream_missing, run_build
from mlstack_assets.transform.dbt_child import dbt_child_executable
from mlstack_assets.transform.project import dbt_project, dbt_vars_args
from mlstack_assets.warehouse import Warehouse

TRANSFORM_GROUP = "transform"
OWNER = "team:mlstack"
FRESHNESS_CHECK = "dbt_source_freshness"
UNIQUE_ID = "dagster_dbt/unique_id"  # a dbt asset's or test's node in the manifest
PERIOD_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}


class MlstackDbtTranslator(DagsterDbtTranslator):
    """dbt nodes become assets of the `transform` group, owned by the data team; a model's
    table name is where it is published (`<dataset>`), not where dbt builds it (the audit)."""

    def __init__(self, dataset: str, settings: DagsterDbtTranslatorSettings | None = None):
        super().__init__(settings=settings)
        self.dataset = dataset

    def get_asset_spec(
        self, manifest: Mapping[str, Any], unique_id: str, project: DbtProject | None
    ) -> dg.AssetSpec:
        spec = super().get_asset_spec(manifest, unique_id, project)
        if unique_id.startswith("source."):
            return spec  # sources are the raw assets, defined by the ingestion area
        spec = spec.replace_attributes(
            group_name=TRANSFORM_GROUP,
            owners=[OWNER],
            # a raw asset materialized by hand brings its dbt dependents up to date
            automation_condition=dg.AutomationCondition.eager(),
        )
        node = manifest["nodes"][unique_id]
        if "great_expectations_suite" in node.get("config", {}).get("meta", {}):
            spec = spec.merge_attributes(kinds={"great_expectations"})
        published = ".".join(p for p in (node.get("database"), self.dataset, node["alias"]) if p)
        return spec.replace_attributes(metadata={**spec.metadata, "dagster/table_name": published})


class DbtConfig(dg.Config):
    """Per-run choices of the dbt step."""

    allow_row_drop: bool = Field(
        default=False,
        description="Publish labeled_projects even if it lost more rows than"
        " MLSTACK_MAX_ROW_DROP_PERCENT (a deliberate shrink; recorded in the materialization).",
    )


def build_dbt_assets(project: DbtProject, settings: Settings) -> dg.AssetsDefinition:
    """One multi-asset for every dbt model: write (dbt build in the audit schema), audit
    (dbt's tests and the GX suite, there), publish (all models at once, atomically)."""
    options = DagsterDbtTranslatorSettings(enable_asset_checks=True, enable_code_references=True)
    translator = MlstackDbtTranslator(settings.dataset, settings=options)

    # dagster-dbt's specs, its tests as checks; the GX suites and the volume guard join them on
    # the one multi-asset below (`@dbt_assets` takes no others)
    @dbt_assets(manifest=project.manifest_path, project=project, dagster_dbt_translator=translator)
    def dbt_specs(): ...

    specs, dbt_check_specs = list(dbt_specs.specs), list(dbt_specs.check_specs)
    suites = {s.key: load_suite(s.key.path[-1]) for s in specs if "great_expectations" in s.kinds}
    manifest = json.loads(project.manifest_path.read_text())
    nodes = manifest["nodes"]
    aliases = {s.key: nodes[s.metadata[UNIQUE_ID]]["alias"] for s in specs}
    guarded = [key for key in aliases if key.path[-1] in publish.VOLUME_GUARDED]
    docs = settings.data_docs_dir
    sources = {  # the raw assets the staging models read, and their tables
        translator.get_asset_spec(manifest, unique_id, project).key: source["identifier"]
        for unique_id, source in manifest["sources"].items()
    }

    def checks_on_published(
        context: dg.AssetExecutionContext, dbt: InstalledDbtCliResource, warehouse: Warehouse
    ) -> Iterator[dg.AssetCheckResult]:
        """The selected checks alone, nothing built: `dbt test` with the models resolved to
        `<dataset>` (the profile's schema var) and the GX suites, on the published tables.
        (dagster-dbt's own subsetting looks every check up as a dbt test: `KeyError` on GX.)"""
        selected = set(context.selected_asset_check_keys)
        tests = {s.metadata[UNIQUE_ID]: s for s in dbt_check_specs if s.key in selected}
        with warehouse.session(purpose="run the selected checks on the published tables"):
            results = {}
            if tests:
                fqns = [".".join(nodes[test_id]["fqn"]) for test_id in tests]
                published = dbt_vars_args(settings, audit_dataset=settings.dataset)
                invocation = dbt.cli(["test", "--select", *fqns, *published], raise_on_error=False)
                invocation.wait()
                results = invocation.get_artifact("run_results.json")["results"]
                results = {r["unique_id"]: r for r in results}
            for test_id, spec in tests.items():
                result = results.get(test_id, {"status": "error", "message": "dbt did not run it"})
                metadata = {"status": result["status"], "table": f"{settings.dataset} (published)"}
                if result.get("failures") is not None:
                    metadata["dagster_dbt/failed_row_count"] = result["failures"]
                yield CheckOutcome(
                    spec.asset_key,
                    spec.name,
                    passed=result["status"] == "pass",
                    summary=result.get("message") or result["status"],
                    blocking=nodes[test_id]["config"].get("severity", "").lower() != "warn",
                    metadata=metadata,
                ).result()
            for key, suite in suites.items():
                wanted = {c.name for c in selected if c.asset_key == key}
                if wanted := wanted & {e.check_name for e in suite.expectations}:
                    validation = validate_table(
                        warehouse, warehouse.dataset, aliases[key], suite, docs, key
                    )
                    yield from (r for r in validation.audit.results() if r.check_name in wanted)

    @dg.multi_asset(
        name="dbt_models",
        specs=specs,
        check_specs=[
            *dbt_check_specs,
            *(check for key, suite in suites.items() for check in suite.check_specs(key)),
            *map(publish.volume_check_spec, guarded),
        ],
        can_subset=True,
        allow_arbitrary_check_specs=True,
    )
    def dbt_models(
        context: dg.AssetExecutionContext,
        config: DbtConfig,
        dbt: InstalledDbtCliResource,
        warehouse: Warehouse,
    ):
        """`dbt build` into the audit schema, its tests and GX suites there, then publish."""
        if not context.selected_asset_keys:  # checks only (the UI's "Execute")
            yield from checks_on_published(context, dbt, warehouse)
            return
        with warehouse.session(purpose="build, audit and publish the dbt models"):
            schema, dataset = warehouse.audit_dataset, warehouse.dataset
            relations = {key: (dataset, table) for key, table in sources.items()}
            relations.update({key: (schema, alias) for key, alias in aliases.items()})
            deps = context.assets_def.asset_deps
            fail_if_upstream_missing(context.selected_asset_keys, deps, relations, warehouse)
            started = time.perf_counter()
            args = ["build", *dbt_vars_args(settings)]  # 1. build
            built = run_build(context, dbt, args, project.project_dir / project.target_path)
            seconds = {"transform": time.perf_counter() - started}
            audit = audit_build(built, warehouse, suites, docs, deps)  # 2. audit
            seconds["checks"] = time.perf_counter() - started - seconds["transform"]
            raw = current_versions(warehouse_lake(settings), source_names())
            views = {
                m.key: m.published_sql(built.manifest, schema, dataset)
                for m in built.models
                if m.is_view
            }
            candidates = [
                publish.Candidate(m.key, m.alias, schema, view_sql=views.get(m.key), inputs=raw)
                for m in built.models
            ]
            names = ", ".join(sorted(model.key.to_user_string() for model in built.models))
            try:  # 3. publish (or not)
                audit, published = publish.publish_audited(
                    f"dbt models {names or '(none built)'}",
                    candidates,
                    audit,
                    warehouse,
                    publish.policy(settings, config.allow_row_drop),
                    context.run_id,
                    context.log.warning,
                    name_assets=True,  # one step, several models: each line names its model
                )
            except publish.AuditFailed as failed:
                yield from failed.audit.results()
                raise failed.failure from None
            seconds["publish"] = time.perf_counter() - started - sum(seconds.values())
            timings = {k: round(v, 3) for k, v in seconds.items()}
            first = {"seconds": dg.MetadataValue.json(timings)}  # the step's stages, once
            for model in built.models:  # 4. dagster-dbt's metadata, as published; the publish's
                metadata = {**model.output.metadata, **published[model.key], **first}
                metadata["relation"] = "view" if model.is_view else "table"  # the summary shows it
                if config.allow_row_drop:
                    metadata["allow_row_drop"] = True
                if not model.is_view:
                    metadata["dagster/row_count"] = warehouse.row_count(dataset, model.alias)
                version = published[model.key].get("version")
                yield dg.Output(
                    None,
                    model.output.output_name,
                    metadata=metadata,
                    data_version=dg.DataVersion(version) if version else None,
                )
                first = {}
            yield from audit.results()

    return dbt_models


def freshness_status(age: float, freshness: Mapping[str, Any]) -> str:
    """dbt's verdict for a source extracted `age` seconds ago: error, warn or pass."""
    for status in ("error", "warn"):
        limit = freshness.get(f"{status}_after") or {}
        count = limit.get("count")
        if count is not None and age > float(count) * PERIOD_SECONDS[limit["period"]]:
            return status
    return "pass"


def build_source_freshness_check(project: DbtProject, settings: Settings) -> dg.AssetsDefinition:
    """dbt's source freshness (`loaded_at_field: _airbyte_extracted_at`, `warn_after` the Dagster
    freshness window), as dbt evaluates it: one `max(loaded_at_field)` query per table, here in
    the warehouse rather than a second dbt process (4 s a run for two rows of SQL). It warns."""
    manifest = json.loads(project.manifest_path.read_text())
    sources = {s["name"]: s for s in manifest["sources"].values() if s["name"] in source_names()}

    @dg.multi_asset_check(
        name=FRESHNESS_CHECK,
        specs=[
            dg.AssetCheckSpec(
                FRESHNESS_CHECK,
                asset=dg.AssetKey(source),
                description="dbt source freshness: extracted (_airbyte_extracted_at) within"
                " MLSTACK_FRESHNESS_MAX_AGE_HOURS (warns; does not block).",
            )
            for source in source_names()
        ],
        can_subset=True,
    )
    def dbt_source_freshness(context: dg.AssetCheckExecutionContext, warehouse: Warehouse):
        for name in sorted(key.asset_key.path[-1] for key in context.selected_asset_check_keys):
            source, age, newest, error = sources[name], None, None, ""
            column = source["loaded_at_field"]
            seconds = warehouse.dialect.seconds_since.format(expr=f"max({column})")
            try:
                with warehouse.session(purpose=f"check the freshness of {name}"):
                    [(newest, age)] = warehouse.query(
                        f"select max({column}), {seconds} from {source['relation_name']}"
                    )
                error = f"no {column} in {name}" if age is None else ""
            except Exception as failure:  # a table that is not there: dbt's runtime error
                error = str(failure).strip().splitlines()[0]
            status = "error" if error else freshness_status(float(age), source["freshness"])
            extracted = age is not None and f"extracted {age / 3600:.1f} h ago"
            description = [f"dbt source freshness: {status}", extracted, error]
            yield dg.AssetCheckResult(
                asset_key=dg.AssetKey(name),
                check_name=FRESHNESS_CHECK,
                passed=status == "pass",
                severity=dg.AssetCheckSeverity.WARN,
                description="; ".join(part for part in description if part),
                metadata={
                    "status": status,
                    "max_loaded_at": str(newest or ""),
                    "age_hours": round(age / 3600, 3) if age is not None else -1,
                    "warn_after_hours": settings.freshness_max_age_hours,
                },
            )

    return dbt_source_freshness


def build_transform_definitions(settings: Settings) -> dg.Definitions:
    """The dbt project (staging views, labeled_projects), its tests as checks, and dbt's
    source freshness as a check of the raw tables."""
    project = dbt_project(settings)
    dbt = InstalledDbtCliResource(project_dir=project, dbt_executable=dbt_child_executable())
    return dg.Definitions(
        assets=[build_dbt_assets(project, settings)],
        asset_checks=[build_source_freshness_check(project, settings)],
        resources={"dbt": dbt},
    )
