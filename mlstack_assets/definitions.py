"""Assembles the code location: each area contributes its own small `Definitions`."""

from __future__ import annotations

import warnings

from dagster import BetaWarning, Definitions, PreviewWarning, multiprocess_executor

from mlstack_assets.automation.definitions import build_automation_definitions
from mlstack_assets.automation.freshness import with_freshness_policies
from mlstack_assets.ingestion.definitions import build_ingestion_definitions
from mlstack_assets.lake.definitions import build_lake_definitions
from mlstack_assets.ml.definitions import build_ml_definitions
from mlstack_assets.settings import Settings, load_settings
from mlstack_assets.transform.definitions import build_transform_definitions
from mlstack_assets.warehouse import build_warehouse_resources

# mlstack uses beta dagster-airbyte / observable-source APIs on purpose; the warnings say
# nothing a user of mlstack can act on, and they would greet every CLI call.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)


def build_definitions(settings: Settings | None = None) -> Definitions:
    settings = settings or load_settings()
    # BigQuery steps run in parallel processes; on DuckDB the raw steps' extracts still run
    # concurrently (`AirbyteLoader.start_extracts`), and the in-process executor's waits
    # for the warehouse pool are bounded and free what dead runs held
    if settings.steps_share_a_process:
        from mlstack_assets.compat.executor import warehouse_in_process_executor

        executor = warehouse_in_process_executor(settings.pool_timeout_seconds)
    else:
        executor = multiprocess_executor
    defs = Definitions.merge(
        build_ingestion_definitions(settings),
        build_transform_definitions(settings),
        build_ml_definitions(settings),
        build_automation_definitions(settings),
        build_lake_definitions(settings),
        Definitions(resources=build_warehouse_resources(settings), executor=executor),
    )
    return with_freshness_policies(defs, settings)


defs = build_definitions()
