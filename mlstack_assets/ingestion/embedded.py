"""Embedded Airbyte: the File source connector, run by mlstack on this machine, no server.

Each source's extract runs in a thread of the raw step, all of them at once, so the
connectors (child processes) read concurrently while the step imports what its audit
needs. One extract, with no warehouse and no lock:

1. the local copy: a local path as is; an HTTPS source downloaded (`download.py`: stall
   timeout, deadline, bounded retries), because the connector has no read timeout;
2. the header, read by DuckDB (`strict_csv.read_header`), which gives the configured
   catalog: every column text, as mlstack's reader options read it;
3. the pinned `source-file` connector's `read`, its stdout (the Airbyte protocol) to
   `records.jsonl`: a child that dies with its thread, bounded by
   `MLSTACK_CONNECTOR_TIMEOUT_SECONDS`. This is how the Airbyte platform runs connectors;
4. DuckDB reads that output (`protocol.py`): the connector's errors and stream status,
   then its records into `data.parquet` with Airbyte's `_airbyte_*` columns;
5. DuckDB reads the source file strictly and compares it with `data.parquet`, record for
   record and field for field (`strict_csv.py`);
6. `data.parquet` becomes an immutable checkpoint in the lake, with its manifest.

Each extract works in a private directory, `<connector_dir>/syncs/<source>-<pid>-<random>`,
removed when it is done; a process killed mid-sync leaves its directory behind, and the
next extract on the machine removes those of processes that no longer run.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlstack_assets.ingestion import protocol, strict_csv
from mlstack_assets.ingestion.connector import CONNECTOR_NAME, CONNECTOR_VERSION, ensure_connector
from mlstack_assets.ingestion.download import download
from mlstack_assets.ingestion.loader import AirbyteLoader, Extracted
from mlstack_assets.ingestion.sources import SourceError, SourceSpec, local_file
from mlstack_assets.lake import file_sha256
from mlstack_assets.lake.checkpoints import write_checkpoint
from mlstack_assets.processes import child_command, pid_alive
from mlstack_assets.warehouse.duckdb import limit_memory


def prune_stale(root: Path, log: Callable[[str], None]) -> list[Path]:
    """Remove the sync directories of processes that no longer run; return them."""
    removed = []
    for directory in root.glob("*-*-*") if root.is_dir() else []:
        try:
            pid = int(directory.name.split("-")[-2])
        except ValueError:
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    if removed:
        names = ", ".join(d.name for d in removed)
        log(f"removed {len(removed)} sync directories left by ended processes: {names}")
    return removed


def normalized_name(name: str) -> str:
    """The column name Airbyte's destinations give a field: lower case, every character but
    letters and digits as `_`, a leading digit prefixed with `_`."""
    result = re.sub(r"[^A-Za-z0-9]", "_", name.lower())
    return f"_{result}" if result[:1].isdigit() else result


def extract_connection(memory_limit: str, workdir: Path) -> Any:
    """The extract's own DuckDB (in memory, spilling into its directory), under the memory
    cap, on one thread: the records keep the file's order, and with two threads DuckDB held
    what one read ahead of the other (a 1M-row extract beside another source's connector ran
    out of 128MB). The connector, not DuckDB, is what an extract waits for."""
    import duckdb

    conn = duckdb.connect()
    limit_memory(conn, memory_limit)
    conn.execute("set threads = 1")
    conn.execute(f"set temp_directory = '{workdir / 'duckdb.tmp'}'")
    return conn


def connector_failed(returncode: int, messages: protocol.Messages) -> str | None:
    """Why the connector's run does not count as a finished sync, or None."""
    cause = messages.failure()
    if cause is not None:
        return f"the Airbyte File source connector failed: {cause}"
    status = messages.last_status or "none"
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return (
            f"the Airbyte File source connector was killed by {name} before it finished"
            f" (its last stream status: {status})"
        )
    if returncode != 0:
        return f"the Airbyte File source connector exited with code {returncode} and no error"
    if status != "COMPLETE":
        return (
            "the Airbyte File source connector ended without reporting its stream complete"
            f" (its last stream status: {status})"
        )
    return None


class EmbeddedAirbyte(AirbyteLoader):
    """The Airbyte File source connector, run on this machine by mlstack."""

    connector_dir: str
    source_timeout_seconds: float
    source_retries: int
    source_deadline_seconds: float
    connector_timeout_seconds: float
    memory_limit: str

    def extract(
        self, specs: Sequence[SourceSpec], warehouse: Any, run_id: str, log: Any
    ) -> Iterator[tuple[SourceSpec, Extracted | SourceError]]:
        syncs = Path(self.connector_dir) / "syncs"
        syncs.mkdir(parents=True, exist_ok=True)
        prune_stale(syncs, log.info)
        running = []
        for spec in specs:  # all of them now: the connectors read while the step goes on
            workdir = Path(tempfile.mkdtemp(prefix=f"{spec.name}-{os.getpid()}-", dir=syncs))
            running.append(_Extract(self, spec, workdir, run_id, log))
        return self._results(running)

    @staticmethod
    def _results(running: list[_Extract]) -> Iterator[tuple[SourceSpec, Extracted | SourceError]]:
        try:
            for extract in running:
                yield extract.spec, extract.result()
        finally:  # the step is done with them, or stopped early: nothing runs on
            for extract in running:
                extract.stop()


class _Extract:
    """One source's extract, in a thread of its own (a daemon: it never keeps a process
    alive), its connector killed when the step stops it."""

    def __init__(
        self, loader: EmbeddedAirbyte, spec: SourceSpec, workdir: Path, run_id: str, log: Any
    ):
        self.loader, self.spec, self.workdir, self.run_id, self.log = (
            loader,
            spec,
            workdir,
            run_id,
            log,
        )
        self.connector: subprocess.Popen | None = None
        self.stopped = threading.Event()
        self.outcome: Future = Future()
        threading.Thread(target=self._run, name=f"extract-{spec.name}", daemon=True).start()

    def result(self) -> Extracted | SourceError:
        return self.outcome.result()

    def stop(self) -> None:
        self.stopped.set()
        if self.connector is not None and self.connector.poll() is None:
            self.connector.kill()
        if self.outcome.done():
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:  # the thread removes it once it ends
            self.outcome.add_done_callback(
                lambda _: shutil.rmtree(self.workdir, ignore_errors=True)
            )

    def _run(self) -> None:
        try:
            self.outcome.set_result(self._extract())
        except SourceError as error:
            self.outcome.set_result(error)
        except Exception as error:  # a time-out, the lake, DuckDB on the connector's output
            self.log.debug(f"extract of {self.spec.name} failed: {error!r}")
            text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
            detail = (
                text[:300]
                if isinstance(error, TimeoutError)
                else f"{type(error).__name__}: {text[:300]}"
            )
            self.outcome.set_result(SourceError(self.spec, detail))

    def _extract(self) -> Extracted:
        spec, loader, workdir = self.spec, self.loader, self.workdir
        seconds: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            seconds[name] = round(time.perf_counter() - clock, 3)
            clock = time.perf_counter()

        if spec.is_remote:
            path = workdir / "source.csv"
            size = download(
                spec,
                path,
                loader.source_timeout_seconds,
                loader.source_retries,
                self.log.warning,
                deadline=loader.source_deadline_seconds,
                stopped=self.stopped,
            )
            self.log.info(
                f"downloaded {spec.url} ({size:,} bytes) in {time.perf_counter() - clock:.2f} s"
            )
        else:
            path = local_file(spec)
        lap("download")
        conn = extract_connection(loader.memory_limit, workdir)
        try:
            header = strict_csv.read_header(conn, path)
        except strict_csv.CsvError as error:
            raise SourceError(spec, str(error)) from None
        columns = [normalized_name(name) for name in header]
        clashing = sorted({c for c in columns if columns.count(c) > 1})
        if clashing:
            named = [h for h, c in zip(header, columns, strict=True) if c in clashing]
            raise SourceError(
                spec,
                f"the header's columns {named} would all be named {clashing[0]!r} in the"
                " warehouse; rename them in the source",
            )
        extracted_at = datetime.now(timezone.utc)
        returncode = self._run_connector(dataclasses.replace(spec, url=str(path)), header)
        lap("connector")
        records = workdir / "records.jsonl"
        messages = protocol.read_messages(conn, records)
        for level, message in messages.logs:
            self.log.debug(f"connector {level}: {message}")
        failed = connector_failed(returncode, messages)
        if failed is not None:
            stderr = (workdir / "connector.stderr").read_text(errors="replace").splitlines()
            if stderr:
                self.log.debug("connector stderr (last lines):\n" + "\n".join(stderr[-20:]))
            # DuckDB names the line the connector stumbled on, when there is one
            _, rejected, first = strict_csv.strict_rejects(conn, path, header)
            if rejected:
                described = strict_csv.describe_rejects(rejected, first, header)
                raise SourceError(spec, f"{described} ({failed})")
            raise SourceError(spec, failed)
        parquet = workdir / "data.parquet"
        synced = protocol.records_to_parquet(
            conn, records, list(zip(header, columns, strict=True)), parquet
        )
        lap("records")
        comparison = strict_csv.compare(conn, path, header, parquet, columns)
        lap("verify")
        if comparison.reject_count:
            raise SourceError(
                spec,
                strict_csv.describe_rejects(comparison.reject_count, comparison.rejects, header),
            )
        if comparison.differing:
            raise SourceError(
                spec,
                "the connector's records differ from the file: "
                + strict_csv.describe_differences(comparison, header),
            )
        types = conn.execute(
            "select column_name, column_type"
            f" from (describe select * from read_parquet('{parquet}'))"
        ).fetchall()
        conn.close()
        manifest = {
            "source_url": spec.url,
            "source_sha256": file_sha256(path),
            "source_bytes": path.stat().st_size,
            "connector": f"airbyte/{CONNECTOR_NAME}",
            "connector_version": CONNECTOR_VERSION,
            "run_id": self.run_id,
            "rows": synced,
            "columns": [[name, dtype] for name, dtype in types],
        }
        checkpoint = write_checkpoint(loader.lake_store, spec.name, parquet, extracted_at, manifest)
        lap("checkpoint")
        return Extracted(
            checkpoint=checkpoint,
            records=synced,
            metadata={
                "connector": f"airbyte/{CONNECTOR_NAME} {CONNECTOR_VERSION} (embedded)",
                "records_in_file": comparison.records_in_file,
                "file_read_by_duckdb": "strict"
                if comparison.strict
                else "strict mode off (mixed line ends)",
                "extract_seconds": seconds,
            },
        )

    def _run_connector(self, local: SourceSpec, header: list[str]) -> int:
        """The connector's `read` of the local copy, its stdout to `records.jsonl`; its exit
        code (negative: the signal that killed it)."""
        workdir = self.workdir
        executable = ensure_connector(Path(self.loader.connector_dir))
        (workdir / "config.json").write_text(json.dumps(local.connector_config()))
        catalog = protocol.configured_catalog(local.name, header)
        (workdir / "catalog.json").write_text(json.dumps(catalog))
        args = ["read", "--config", str(workdir / "config.json")]
        args += ["--catalog", str(workdir / "catalog.json")]
        with (
            (workdir / "records.jsonl").open("wb") as out,
            (workdir / "connector.stderr").open("wb") as err,
        ):
            if self.stopped.is_set():
                raise SourceError(self.spec, "stopped before the connector started")
            self.connector = subprocess.Popen(
                child_command(str(executable), *args),
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
            )
            try:
                return self.connector.wait(timeout=self.loader.connector_timeout_seconds)
            except subprocess.TimeoutExpired:
                self.connector.kill()
                self.connector.wait()
                raise TimeoutError(
                    "the Airbyte File source connector did not finish reading in"
                    f" {self.loader.connector_timeout_seconds:g} s"
                    " (MLSTACK_CONNECTOR_TIMEOUT_SECONDS)"
                ) from None
