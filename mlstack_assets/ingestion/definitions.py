"""Extract-load: the source files and the Airbyte-backed raw assets."""

from __future__ import annotations

from dagster import Definitions, with_source_code_references

from mlstack_assets.ingestion.assets import build_raw_asset, build_source_file_asset
from mlstack_assets.ingestion.loader import AirbyteLoader
from mlstack_assets.ingestion.sources import source_specs
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse.deployment import WarehouseDeployment


def build_airbyte_loader(settings: Settings, concurrent_extracts: bool) -> AirbyteLoader:
    """The connector run by mlstack by default; an Airbyte server or Cloud when
    MLSTACK_AIRBYTE says so."""
    if settings.airbyte == "embedded":
        from mlstack_assets.ingestion.embedded import EmbeddedAirbyte

        return EmbeddedAirbyte(
            lake=settings.lake,
            connector_dir=str(settings.connector_dir),
            source_timeout_seconds=settings.source_timeout_seconds,
            source_retries=settings.source_retries,
            source_deadline_seconds=settings.source_deadline_seconds,
            connector_timeout_seconds=settings.connector_timeout_seconds,
            memory_limit=settings.duckdb_memory_limit,
            concurrent_extracts=concurrent_extracts,
        )
    from mlstack_assets.ingestion.server import build_server_loader

    return build_server_loader(settings)


def build_ingestion_definitions(settings: Settings, deployment: WarehouseDeployment) -> Definitions:
    specs = source_specs(settings)
    return Definitions(
        assets=with_source_code_references(
            [
                *(build_source_file_asset(spec) for spec in specs),
                *(build_raw_asset(spec, settings, specs, deployment) for spec in specs),
            ]
        ),
        resources={"airbyte": build_airbyte_loader(settings, deployment.steps_share_a_process)},
    )
