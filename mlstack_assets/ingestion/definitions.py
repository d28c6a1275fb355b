"""Extract-load: the source files and the Airbyte-backed raw assets."""

from __future__ import annotations

from dagster import Definitions

from mlstack_assets.ingestion.assets import build_raw_asset, build_source_file_spec
from mlstack_assets.ingestion.sources import source_specs
from mlstack_assets.settings import Settings


def build_ingestion_definitions(settings: Settings) -> Definitions:
    specs = source_specs(settings)
    return Definitions(
        assets=[
            *(build_source_file_spec(spec) for spec in specs),
            *(build_raw_asset(spec, settings, settings.warehouse_pool) for spec in specs),
        ]
    )
