"""What the raw assets ask of Airbyte, whichever Airbyte it is.

`AirbyteLoader` is the `airbyte` resource: embedded (PyAirbyte runs the connector here)
or a server (Airbyte OSS / Cloud, driven by dagster-airbyte). Either way a Full refresh |
Overwrite sync of one source ends in `<dataset>_staging.<source>`; the raw asset then
audits and publishes that table the same way.

The sync is split in two so that no warehouse lock is held while waiting on a network or
a connector: `extract` reads the source (as long as it takes, no lock), and the
`Extracted.stage` it yields writes the result into the staging table, quickly, called by
the raw asset while it holds the warehouse lock for staging, audit and publish together
(so what is audited is what was staged, and what is published is what was audited).
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
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


def _nothing_to_stage() -> None:
    """The sync already wrote the staging table."""


@dataclass
class Extracted:
    """A finished extract; `stage()` puts it into `<staging>.<source>` (hold the lock)."""

    report: SyncReport
    stage: Callable[[], None] = _nothing_to_stage


class AirbyteLoader(ConfigurableResource):
    def sync_to_staging(self, spec: SourceSpec, warehouse: Warehouse, log: Any) -> SyncReport:
        """Sync `spec` into the warehouse's staging table; raise `SourceError` on failure."""
        raise NotImplementedError

    @contextmanager
    def extract(self, spec: SourceSpec, warehouse: Warehouse, log: Any) -> Iterator[Extracted]:
        """Read `spec`; raise `SourceError` on failure. Holds no lock unless it must.

        By default the sync writes the staging table itself (an Airbyte server), so it
        runs holding the warehouse lock: on DuckDB the destination writes the very file
        our steps open. Loaders that can extract elsewhere first override this.
        """
        with warehouse.exclusive(purpose=f"sync {spec.name} through Airbyte"):
            report = self.sync_to_staging(spec, warehouse, log)
        yield Extracted(report=report)
