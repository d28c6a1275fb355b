"""What the raw assets ask of Airbyte, whichever Airbyte it is.

`AirbyteLoader` is the `airbyte` resource: embedded (mlstack runs the connector,
`embedded.py`) or a server (Airbyte OSS / Cloud, driven by dagster-airbyte, `server.py`).
Either way one Full refresh | Overwrite sync of a source ends as an immutable checkpoint
in the lake (`lake/checkpoints.py`) and in `<dataset>_staging.<source>`; the raw asset
then audits and publishes that table the same way.

A sync is split in two so that no warehouse lock is held while waiting on a network or
a connector: `extract` reads the source (as long as it takes, no lock) and yields an
`Extracted`, whose `stage` loads the checkpoint into the staging table, quickly, called
by the raw asset while it holds the warehouse lock for staging, audit and publish
together (so what is audited is what was staged, and what is published was audited).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dagster import ConfigurableResource

from mlstack_assets.ingestion.sources import SourceSpec
from mlstack_assets.lake import Lake
from mlstack_assets.lake.checkpoints import Checkpoint
from mlstack_assets.warehouse import Warehouse


@dataclass
class SyncReport:
    """What a sync says about itself, for the materialization's metadata."""

    records: int | None
    metadata: dict[str, Any] = field(default_factory=dict)


def _already_staged() -> None:
    """The sync wrote the staging table itself (an Airbyte server)."""


@dataclass
class Extracted:
    """A finished extract: its checkpoint in the lake, and `stage()`, which puts it into
    `<staging>.<source>` (call it holding the warehouse lock)."""

    report: SyncReport
    checkpoint: Checkpoint
    stage: Callable[[], None] = _already_staged


class AirbyteLoader(ConfigurableResource):
    """Syncs one source into a checkpoint and the staging table."""

    lake: str  # MLSTACK_LAKE: a local folder or gs://bucket/prefix
    # True when the raw steps of a run share this resource in one process (the in-process
    # executor): their extracts then start together (`start_extracts`)
    concurrent_extracts: bool = False

    @property
    def lake_store(self) -> Lake:
        return Lake(self.lake)

    def start_extracts(self, specs: Sequence[SourceSpec], run_id: str, log: Any) -> None:
        """Start reading every source in `specs` now, for the raw steps of this run that
        will take them (`extract`). Nothing to do unless a loader can read ahead."""

    @contextmanager
    def extract(
        self, spec: SourceSpec, warehouse: Warehouse, log: Any, run_id: str
    ) -> Iterator[Extracted]:
        """Read `spec` into a checkpoint; raise `SourceError` on failure."""
        raise NotImplementedError
        yield  # pragma: no cover
