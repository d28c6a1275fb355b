"""The GX suite on labeled_projects, as blocking asset checks (one validation, many checks).

The raw assets run their own suites inside their step (write-audit-publish); the dbt
table is checked after dbt built it, and its blocking checks hold back the ML assets.
"""

from dagster import AssetCheckExecutionContext, AssetChecksDefinition, AssetKey, multi_asset_check

from mlstack_assets.quality.suites import load_suite
from mlstack_assets.quality.validation import validate_table
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Warehouse

LABELED_PROJECTS = AssetKey("labeled_projects")


def build_labeled_projects_checks(settings: Settings) -> AssetChecksDefinition:
    suite = load_suite("labeled_projects")

    @multi_asset_check(
        specs=suite.check_specs(LABELED_PROJECTS),
        name="labeled_projects_suite",
        description=(
            "Validate: the labeled_projects Great Expectations suite, run in the warehouse;"
            " its blocking checks hold back the ML assets."
        ),
        pool=settings.warehouse_pool,
    )
    def labeled_projects_suite(context: AssetCheckExecutionContext, warehouse: Warehouse):
        with warehouse.exclusive():
            validation = validate_table(
                warehouse, warehouse.dataset, "labeled_projects", suite, settings.data_docs_dir
            )
        for outcome in validation.outcomes:
            if outcome.warning:
                context.log.warning(f"{outcome.expectation.check_name}: {outcome.warning}")
        yield from validation.check_results(LABELED_PROJECTS)

    return labeled_projects_suite
