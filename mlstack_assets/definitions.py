"""Assembles the code location: each area contributes its own small `Definitions`."""

import warnings

from dagster import BetaWarning, Definitions, PreviewWarning

from mlstack_assets.automation.definitions import build_automation_definitions
from mlstack_assets.automation.freshness import with_freshness_policies
from mlstack_assets.ingestion.assets import build_ingestion_definitions
from mlstack_assets.lake.restore import build_rollback_definitions
from mlstack_assets.ml.assets import build_ml_definitions
from mlstack_assets.settings import Settings, load_settings
from mlstack_assets.transform.assets import build_transform_definitions
from mlstack_assets.warehouse.deployment import warehouse_deployment

# mlstack uses beta dagster-airbyte / observable-source APIs on purpose: their warnings say
# nothing a user can act on, and would greet every CLI call.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)


def build_definitions(settings: Settings | None = None) -> Definitions:
    """The whole code location for `settings` (default: this process's environment)."""
    settings = settings or load_settings()
    deployment = warehouse_deployment(settings)
    defs = Definitions.merge(
        build_ingestion_definitions(settings, deployment),
        build_transform_definitions(settings),
        build_ml_definitions(settings, deployment),
        build_automation_definitions(settings),
        build_rollback_definitions(settings.warehouse_lake),
        Definitions(resources=deployment.resources, executor=deployment.executor),
    )
    return with_freshness_policies(defs, settings)


defs = build_definitions()
