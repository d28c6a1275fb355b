"""`dbt source freshness` on the raw tables, as a (warn-only) check of projects and tags.

The dbt sources say when each raw table was last loaded: `loaded_at_field:
_airbyte_extracted_at` (Airbyte's column) and `warn_after` the window the Dagster
freshness policy uses (`MLSTACK_FRESHNESS_MAX_AGE_HOURS`). This check runs dbt's own
freshness command against the published tables and reports its verdict, the newest
extraction and its age on each raw asset, so dbt users see what `dbt source freshness`
says without leaving Dagster.
"""

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    AssetsDefinition,
    multi_asset_check,
)

from mlstack_assets.compat import InstalledDbtCliResource
from mlstack_assets.settings import Settings
from mlstack_assets.sources import source_names
from mlstack_assets.transform.project import dbt_vars_args
from mlstack_assets.warehouse import Warehouse

CHECK = "dbt_source_freshness"


def build_source_freshness_check(settings: Settings) -> AssetsDefinition:
    @multi_asset_check(
        name="dbt_source_freshness",
        specs=[
            AssetCheckSpec(
                CHECK,
                asset=AssetKey(source),
                description="`dbt source freshness`: extracted (_airbyte_extracted_at) within"
                " MLSTACK_FRESHNESS_MAX_AGE_HOURS (warns; does not block).",
            )
            for source in source_names()
        ],
        can_subset=True,
    )
    def dbt_source_freshness(
        context: AssetCheckExecutionContext, dbt: InstalledDbtCliResource, warehouse: Warehouse
    ):
        selected = sorted(key.asset_key.path[-1] for key in context.selected_asset_check_keys)
        sources = [f"source:mlstack.mlops_course.{name}" for name in selected]
        with warehouse.session(purpose="run dbt source freshness"):
            invocation = dbt.cli(
                [
                    "source",
                    "freshness",
                    "--select",
                    " ".join(sources),
                    *dbt_vars_args(settings),
                ],
                raise_on_error=False,
            )
            invocation.wait()
            results = invocation.get_artifact("sources.json")["results"]
        by_name = {result["unique_id"].rsplit(".", 1)[-1]: result for result in results}
        for name in selected:
            result = by_name.get(name, {"status": "error", "error": "dbt reported nothing"})
            age = result.get("max_loaded_at_time_ago_in_s")
            status = result["status"]
            yield AssetCheckResult(
                asset_key=AssetKey(name),
                check_name=CHECK,
                passed=status == "pass",
                severity=AssetCheckSeverity.WARN,
                description=(
                    f"dbt source freshness: {status}"
                    + (f"; extracted {age / 3600:.1f} h ago" if age is not None else "")
                    + (f"; {result['error']}" if result.get("error") else "")
                ),
                metadata={
                    "status": status,
                    "max_loaded_at": str(result.get("max_loaded_at", "")),
                    "age_hours": round(age / 3600, 3) if age is not None else -1,
                    "warn_after_hours": settings.freshness_max_age_hours,
                },
            )

    return dbt_source_freshness
