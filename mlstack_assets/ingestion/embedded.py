"""Embedded Airbyte: the File source connector, run by mlstack on this machine, no server.

Each source's extract is a process of its own (`extract.py`: download, the connector's
`read`, DuckDB reading its output and checking it against the file, the checkpoint in
the lake). When a run's steps share one process (DuckDB), the first raw step starts the
extracts of every raw source of the run (`start_extracts`), so the connectors read
concurrently; each raw step then waits for its own, replays its log lines into the
step's log, and stages the checkpoint under the warehouse lock. No threads: the extract
processes die with the step's process (`processes.die_with_parent`), and what a step did
not take is stopped when the run's resources are torn down.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import InitResourceContext
from pydantic import PrivateAttr

from mlstack_assets.ingestion import extract as extract_process
from mlstack_assets.ingestion.connector import CONNECTOR_NAME, CONNECTOR_VERSION
from mlstack_assets.ingestion.loader import AirbyteLoader, Extracted, SyncReport
from mlstack_assets.ingestion.sources import SourceError, SourceSpec
from mlstack_assets.ingestion.syncdir import new_sync_directory
from mlstack_assets.lake.checkpoints import Checkpoint
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Warehouse

# beyond the extract's own bounds (download deadline, connector time-out): its start,
# DuckDB's reading and checking, the checkpoint's upload
EXTRACT_MARGIN_SECONDS = 600.0
WAIT_LOG_EVERY_SECONDS = 60.0


def short_cause(error: BaseException) -> str:
    """One line about an exception (the warehouse's message, without its long context)."""
    first = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
    first = first if len(first) <= 300 else first[:300] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


@dataclass
class _RunningExtract:
    """An extract process and its directory."""

    spec: SourceSpec
    workdir: Path
    process: subprocess.Popen
    started: float

    def wait(self, bound: float, log: Any) -> dict[str, Any]:
        """Its result, once it ended (bounded); its log lines replayed into `log`."""
        waited = 0.0
        try:
            while True:
                try:
                    self.process.wait(timeout=min(WAIT_LOG_EVERY_SECONDS, bound - waited))
                    break
                except subprocess.TimeoutExpired:
                    waited = time.monotonic() - self.started
                    if waited >= bound:
                        self.stop()
                        raise SourceError(
                            self.spec,
                            f"the extract did not end in {bound:g} s (the download deadline,"
                            " the connector's time-out and a margin); stopped it",
                        ) from None
                    log.info(f"{self.spec.name}: still extracting after {waited:.0f} s")
        finally:
            self._replay(log)
        result_file = self.workdir / extract_process.RESULT
        if not result_file.exists():
            output = (self.workdir / "extract.out").read_text(errors="replace").strip()
            last = output.splitlines()[-1] if output else "no output"
            log.debug(
                f"extract of {self.spec.name} ended with {self.process.returncode}:\n{output}"
            )
            raise SourceError(
                self.spec,
                f"the extract process ended with code {self.process.returncode} before it"
                f" finished: {last}",
            )
        return json.loads(result_file.read_text())

    def _replay(self, log: Any) -> None:
        path = self.workdir / extract_process.LOG
        if not path.exists():
            return
        for line in path.read_text(errors="replace").splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            getattr(log, entry.get("level", "info"), log.info)(entry.get("message", ""))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class EmbeddedAirbyte(AirbyteLoader):
    """The Airbyte File source connector, run on this machine by mlstack."""

    connector_dir: str
    source_timeout_seconds: float = Settings.default("source_timeout_seconds")
    source_retries: int = Settings.default("source_retries")
    source_deadline_seconds: float = Settings.default("source_deadline_seconds")
    connector_timeout_seconds: float = Settings.default("connector_timeout_seconds")
    memory_limit: str = Settings.default("duckdb_memory_limit")
    _running: dict[str, _RunningExtract] = PrivateAttr(default_factory=dict)
    # every source started in this run, taken by its step or not: each is read once
    _requested: set[str] = PrivateAttr(default_factory=set)

    @property
    def _bound(self) -> float:
        return (
            self.source_deadline_seconds + self.connector_timeout_seconds + EXTRACT_MARGIN_SECONDS
        )

    def request(self, spec: SourceSpec, run_id: str) -> extract_process.ExtractRequest:
        """What the extract process of `spec` is told."""
        return extract_process.ExtractRequest(
            source=spec.name,
            url=spec.url,
            connector_dir=self.connector_dir,
            lake=self.lake,
            run_id=run_id,
            stall_timeout_seconds=self.source_timeout_seconds,
            retries=self.source_retries,
            deadline_seconds=self.source_deadline_seconds,
            connector_timeout_seconds=self.connector_timeout_seconds,
            memory_limit=self.memory_limit,
        )

    def _start(self, spec: SourceSpec, run_id: str, log: Any) -> _RunningExtract:
        workdir = new_sync_directory(Path(self.connector_dir), spec.name, log.info)
        self.request(spec, run_id).write(workdir)
        with (workdir / "extract.out").open("wb") as output:
            process = subprocess.Popen(
                [sys.executable, "-m", extract_process.__name__, str(workdir)],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        self._requested.add(spec.name)
        return _RunningExtract(spec, workdir, process, time.monotonic())

    def start_extracts(self, specs: Sequence[SourceSpec], run_id: str, log: Any) -> None:
        """Start every source's extract process now (only when the run's steps share this
        resource). A source started once in this run is not started again, even after
        its step took it: every raw step calls this."""
        if not self.concurrent_extracts:
            return
        for spec in specs:
            if spec.name not in self._requested:
                self._running[spec.name] = self._start(spec, run_id, log)

    @contextmanager
    def extract(
        self, spec: SourceSpec, warehouse: Warehouse, log: Any, run_id: str
    ) -> Iterator[Extracted]:
        running = self._running.pop(spec.name, None) or self._start(spec, run_id, log)
        try:
            result = running.wait(self._bound, log)
            if not result["ok"]:
                raise SourceError.from_message(result["error"])
            checkpoint = Checkpoint(self.lake_store, result["checkpoint_key"], result["manifest"])
            report = SyncReport(
                records=result["records"],
                metadata={
                    "connector": f"airbyte/{CONNECTOR_NAME} {CONNECTOR_VERSION} (embedded)",
                    "records_in_file": result["records_in_file"],
                    "file_read_by_duckdb": result["file_read"],
                    "extract_seconds": result["timings"],
                },
            )
            yield Extracted(
                report=report,
                checkpoint=checkpoint,
                stage=lambda: self._stage(spec, warehouse, checkpoint, log),
            )
        finally:
            running.stop()
            shutil.rmtree(running.workdir, ignore_errors=True)

    @staticmethod
    def _stage(spec: SourceSpec, warehouse: Warehouse, checkpoint: Checkpoint, log: Any) -> None:
        try:
            warehouse.stage_checkpoint(spec.name, checkpoint)
        except Exception as error:
            log.debug(f"error while staging {spec.name}: {error!r}")
            raise SourceError(
                spec, f"loading the checkpoint into staging failed: {short_cause(error)}"
            ) from None

    def teardown_after_execution(self, context: InitResourceContext) -> None:
        """Extracts no step took (the run failed or was stopped first): stop them, and
        remove what they wrote."""
        for running in self._running.values():
            running.stop()
            shutil.rmtree(running.workdir, ignore_errors=True)
        self._running.clear()
        self._requested.clear()
