"""Assembles the code location: each area contributes its own small `Definitions`."""

from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions, PreviewWarning

from mlstack_assets.automation.definitions import build_automation_definitions
from mlstack_assets.automation.freshness import with_freshness_policies
from mlstack_assets.ingestion.definitions import build_ingestion_definitions
from mlstack_assets.lake.definitions import build_lake_definitions
from mlstack_assets.ml.definitions import build_ml_definitions
from mlstack_assets.settings import Settings, load_settings
from mlstack_assets.transform.definitions import build_transform_definitions
from mlstack_assets.warehouse.deployment import warehouse_deployment

# mlstack uses beta dagster-airbyte / observable-source APIs on purpose; the warnings say
# nothing a user of mlstack can act on, and they would greet every CLI call.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    deployment = warehouse_deployment(settings)
    defs = Definitions.merge(
        build_ingestion_definitions(settings, deployment),
        build_transform_definitions(settings, deployment),
        build_ml_definitions(settings, deployment),
        build_automation_definitions(settings),
        build_lake_definitions(settings, deployment),
        Definitions(resources=deployment.resources, executor=deployment.executor),
    )
    return with_freshness_policies(defs, settings)


defs = build_definitions()
