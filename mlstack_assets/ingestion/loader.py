"""What the raw assets ask of Airbyte, whichever Airbyte it is.

`AirbyteLoader` is the `airbyte` resource: embedded (PyAirbyte runs the connector here)
or a server (Airbyte OSS / Cloud, driven by dagster-airbyte). Either way one call runs a
Full refresh | Overwrite sync of one source into `<dataset>_staging.<source>`; the raw
asset then audits and publishes that table the same way.
"""

from dataclasses import dataclass, field
from typing import Any

from dagster import ConfigurableResource

from mlstack_assets.ingestion.sources import SourceSpec
from mlstack_assets.warehouse import Warehouse


@dataclass
class SyncReport:
    """What a sync says about itself, for the materialization's metadata."""

    records: int | None
    metadata: dict[str, Any] = field(default_factory=dict)


class AirbyteLoader(ConfigurableResource):
    def sync_to_staging(self, spec: SourceSpec, warehouse: Warehouse, log: Any) -> SyncReport:
        """Sync `spec` into the warehouse's staging table; raise `SourceError` on failure."""
        raise NotImplementedError
