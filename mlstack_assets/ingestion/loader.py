"""What the raw asset asks of Airbyte, whichever Airbyte it is.

`AirbyteLoader` is the `airbyte` resource: embedded (`embedded.py`, mlstack runs the File
source connector) or a server (`server.py`, Airbyte OSS / Cloud). Either way a sync ends as
an immutable checkpoint in the lake, which the raw asset stages, audits and publishes. No
warehouse lock is held while a source is read, unless the sync writes the warehouse itself.
"""

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import ConfigurableResource

from mlstack_assets.ingestion.sources import SourceError, SourceSpec
from mlstack_assets.lake import Lake
from mlstack_assets.lake.checkpoints import Checkpoint
from mlstack_assets.warehouse import Warehouse


@dataclass
class Extracted:
    """A finished sync: its checkpoint, and what it says about itself for the metadata."""

    checkpoint: Checkpoint
    records: int | None
    metadata: dict[str, Any] = field(default_factory=dict)
    staged: bool = False  # the sync wrote the staging table itself (an Airbyte server)


class AirbyteLoader(ConfigurableResource):
    """Syncs sources into checkpoints (and, for a server, the staging tables)."""

    lake: str  # MLSTACK_LAKE: a local folder or gs://bucket/prefix

    @property
    def lake_store(self) -> Lake:
        return Lake(self.lake)

    def extract(
        self, specs: Sequence[SourceSpec], warehouse: Warehouse, run_id: str, log: Any
    ) -> Iterator[tuple[SourceSpec, Extracted | SourceError]]:
        """Read every source of `specs`: each one's extract, or the error that stopped it,
        in the order of `specs`. Close the iterator to stop what is still running."""
        raise NotImplementedError
