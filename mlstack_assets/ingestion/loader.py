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

When every step of a run shares one process (the in-process executor, on DuckDB), the
first raw step starts the extracts of all raw sources of the run at once
(`start_extracts`), each in its own thread: the connectors read concurrently, as they do
in the parallel steps of a multiprocess run, and each raw step then stages, audits and
publishes its own source, in turn, under the warehouse lock.
"""

import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

from dagster import ConfigurableResource, InitResourceContext
from pydantic import PrivateAttr

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


class DeferredLog:
    """A log for an extract running ahead of its step: kept, then replayed into the step's
    own log when the step takes the extract, so every line is attributed to its source's
    step (a thread has no step of its own)."""

    def __init__(self) -> None:
        self._lines: list[tuple[str, str]] = []
        self._lock = threading.Lock()

    def _keep(self, level: str, message: str) -> None:
        with self._lock:
            self._lines.append((level, message))

    def debug(self, message: str) -> None:
        self._keep("debug", message)

    def info(self, message: str) -> None:
        self._keep("info", message)

    def warning(self, message: str) -> None:
        self._keep("warning", message)

    def error(self, message: str) -> None:
        self._keep("error", message)

    def replay(self, log: Any) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        for level, message in lines:
            getattr(log, level)(message)


@dataclass
class _StartedExtract:
    future: "Future[tuple[ExitStack, Extracted]]"
    log: DeferredLog


class AirbyteLoader(ConfigurableResource):
    # True when the raw steps of a run share this resource in one process (the in-process
    # executor): their extracts then start together (`start_extracts`).
    concurrent_extracts: bool = False
    _started: dict[str, _StartedExtract] = PrivateAttr(default_factory=dict)
    # every source started in this run, taken by its step or not: each is read once
    _requested: set[str] = PrivateAttr(default_factory=set)
    _pool: ThreadPoolExecutor | None = PrivateAttr(default=None)

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

    def start_extracts(self, specs: Sequence[SourceSpec], warehouse: Warehouse) -> None:
        """Start reading every source in `specs` now, concurrently, each in its own thread,
        for the raw steps of this run that will stage them (`extracted`). Does nothing
        unless `concurrent_extracts`. A source started once in this run is not started
        again, even after its step took it: every raw step calls this, and a second read
        would run on, unused, until the process exits."""
        if not self.concurrent_extracts:
            return
        pending = [spec for spec in specs if spec.name not in self._requested]
        if not pending:
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(thread_name_prefix="mlstack-extract")
        for spec in pending:
            log = DeferredLog()
            future = self._pool.submit(self._open_extract, spec, warehouse, log)
            self._started[spec.name] = _StartedExtract(future, log)
            self._requested.add(spec.name)

    def _open_extract(
        self, spec: SourceSpec, warehouse: Warehouse, log: DeferredLog
    ) -> tuple[ExitStack, Extracted]:
        stack = ExitStack()
        try:
            extracted = stack.enter_context(self.extract(spec, warehouse, log))
        except BaseException:
            stack.close()
            raise
        return stack, extracted

    @contextmanager
    def extracted(self, spec: SourceSpec, warehouse: Warehouse, log: Any) -> Iterator[Extracted]:
        """`spec`'s extract: the one `start_extracts` began (waited for, its log replayed
        into `log`), or a new one read now."""
        started = self._started.pop(spec.name, None)
        if started is None:
            with self.extract(spec, warehouse, log) as extracted:
                yield extracted
            return
        try:
            # bounded: the extract has its own time-outs (download stall, retries)
            stack, extracted = started.future.result()
        finally:
            started.log.replay(log)
        with stack:
            yield extracted

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """Extracts no step took (the run failed or was stopped first): remove their files
        as they finish, without keeping the run waiting for them."""
        for started in self._started.values():
            started.future.add_done_callback(_close_extract)
        self._started.clear()
        self._requested.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _close_extract(future: "Future[tuple[ExitStack, Extracted]]") -> None:
    if not future.cancelled() and future.exception() is None:
        stack, _ = future.result()
        stack.close()
