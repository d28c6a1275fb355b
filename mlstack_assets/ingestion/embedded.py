"""Embedded Airbyte: the File source connector, run by mlstack on this machine, no server.

Every selected source's extract runs at once, each in a thread of the raw step, with no
warehouse and no lock; its six steps are listed in docs/architecture.md ("The raw step").
Each extract works in `<connector_dir>/syncs/<source>-<pid>-<random>`, removed when done;
the next extract removes those of processes that no longer run.
"""

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

CONNECTOR = "the Airbyte File source connector"


def prune_stale(root: Path, log: Callable[[str], None]) -> list[Path]:
    """Remove the sync directories of processes that no longer run; return them."""
    removed = []
    for directory in root.glob("*-*-*") if root.is_dir() else []:
        pid = directory.name.split("-")[-2]
        if pid.isdigit() and int(pid) != os.getpid() and not pid_alive(int(pid)):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    if removed:
        names = ", ".join(d.name for d in removed)
        log(f"removed {len(removed)} sync directories left by ended processes: {names}")
    return removed


def normalized_name(name: str) -> str:
    """The column name Airbyte's destinations give a field: lower case, `_` for every other
    character than letters and digits, `_` before a leading digit."""
    result = re.sub(r"[^A-Za-z0-9]", "_", name.lower())
    return f"_{result}" if result[:1].isdigit() else result


def extract_connection(memory_limit: str, workdir: Path) -> Any:
    """The extract's own in-memory DuckDB, capped, spilling into its directory, on one
    thread: with two, DuckDB held what one read ahead of the other (a 1M-row extract beside
    another source's connector ran out of 128MB); the connector is what an extract waits for."""
    import duckdb

    conn = duckdb.connect()
    limit_memory(conn, memory_limit)
    conn.execute("set threads = 1")
    conn.execute(f"set temp_directory = '{workdir / 'duckdb.tmp'}'")
    return conn


def connector_failed(returncode: int, messages: protocol.Messages) -> str | None:
    """Why the connector's run does not count as a finished sync, or None."""
    last = f"(its last stream status: {messages.last_status or 'none'})"
    if messages.failure() is not None:
        return f"{CONNECTOR} failed: {messages.failure()}"
    if returncode < 0:
        killer = signal.Signals(-returncode).name
        return f"{CONNECTOR} was killed by {killer} before it finished {last}"
    if returncode != 0:
        return f"{CONNECTOR} exited with code {returncode} and no error"
    if messages.last_status != "COMPLETE":
        return f"{CONNECTOR} ended without reporting its stream complete {last}"
    return None


class EmbeddedAirbyte(AirbyteLoader):
    """The Airbyte File source connector, run on this machine by mlstack."""

    connector_dir: str
    source_timeout_seconds: float
    source_retries: int
    source_deadline_seconds: float
    source_low_speed_bytes_per_second: int
    source_low_speed_seconds: float
    connector_timeout_seconds: float
    memory_limit: str

    def extract(
        self, specs: Sequence[SourceSpec], warehouse: Any, run_id: str, log: Any
    ) -> Iterator[tuple[SourceSpec, Extracted | SourceError]]:
        syncs = Path(self.connector_dir) / "syncs"
        syncs.mkdir(parents=True, exist_ok=True)
        prune_stale(syncs, log.info)
        # every one now: the connectors read while the step goes on
        running = [_Extract(self, spec, syncs, run_id, log) for spec in specs]
        return _results(running)


def _results(running: list["_Extract"]) -> Iterator[tuple[SourceSpec, Extracted | SourceError]]:
    try:
        for extract in running:
            yield extract.spec, extract.outcome.result()
    finally:  # done with them, or stopped early: nothing runs on
        for extract in running:
            extract.stop()


class _Extract:
    """One source's extract in a daemon thread (it never keeps a process alive); its
    connector is killed when the step stops it."""

    def __init__(
        self, loader: EmbeddedAirbyte, spec: SourceSpec, syncs: Path, run_id: str, log: Any
    ):
        self.loader, self.spec, self.run_id, self.log = loader, spec, run_id, log
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{spec.name}-{os.getpid()}-", dir=syncs))
        self.connector: subprocess.Popen | None = None
        self.stopped = threading.Event()
        self.outcome: Future = Future()
        self.outcome.add_done_callback(lambda _: self._remove_workdir_once_stopped())
        threading.Thread(target=self._run, name=f"extract-{spec.name}", daemon=True).start()

    def stop(self) -> None:
        self.stopped.set()
        if self.connector is not None and self.connector.poll() is None:
            self.connector.kill()
        self._remove_workdir_once_stopped()

    def _remove_workdir_once_stopped(self) -> None:
        if self.stopped.is_set() and self.outcome.done():
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _run(self) -> None:
        try:
            self.outcome.set_result(self._extract())
        except SourceError as error:
            self.outcome.set_result(error)
        except Exception as error:  # a time-out, the lake, DuckDB on the connector's output
            self.log.debug(f"extract of {self.spec.name} failed: {error!r}")
            text = next((line.strip() for line in str(error).splitlines() if line.strip()), "")
            if not isinstance(error, TimeoutError):  # a time-out's message says it all
                text = f"{type(error).__name__}: {text[:300]}"
            self.outcome.set_result(SourceError(self.spec, text[:330]))

    def _extract(self) -> Extracted:
        spec, loader, seconds = self.spec, self.loader, {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            seconds[name] = round(time.perf_counter() - clock, 3)
            clock = time.perf_counter()

        path = self.workdir / "source.csv" if spec.is_remote else local_file(spec)
        if spec.is_remote:
            size = download(
                spec,
                path,
                loader.source_timeout_seconds,
                loader.source_retries,
                self.log.warning,
                deadline=loader.source_deadline_seconds,
                stopped=self.stopped,
                low_speed=(
                    loader.source_low_speed_bytes_per_second,
                    loader.source_low_speed_seconds,
                ),
            )
            took = time.perf_counter() - clock
            self.log.info(f"downloaded {spec.url} ({size:,} bytes) in {took:.2f} s")
        lap("download")
        conn = extract_connection(loader.memory_limit, self.workdir)
        try:
            header = strict_csv.read_header(conn, path)
        except strict_csv.CsvError as error:
            raise SourceError(spec, str(error)) from None
        fields = [(name, normalized_name(name)) for name in header]
        columns = [column for _, column in fields]
        clashing = sorted({c for c in columns if columns.count(c) > 1})
        if clashing:
            named = [name for name, column in fields if column in clashing]
            raise SourceError(
                spec,
                f"the header's columns {named} would all be named {clashing[0]!r} in the"
                " warehouse; rename them in the source",
            )
        extracted_at = datetime.now(timezone.utc)
        returncode = self._run_connector(dataclasses.replace(spec, url=str(path)), header)
        lap("connector")
        parquet, synced, comparison = self._verified_records(conn, returncode, path, fields, lap)
        types = conn.execute(f"describe select * from read_parquet('{parquet}')").fetchall()
        conn.close()
        manifest = {
            "source_url": spec.url,
            "source_sha256": file_sha256(path),
            "source_bytes": path.stat().st_size,
            "connector": f"airbyte/{CONNECTOR_NAME}",
            "connector_version": CONNECTOR_VERSION,
            "run_id": self.run_id,
            "rows": synced,
            "columns": [[name, dtype] for name, dtype, *_ in types],
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

    def _verified_records(
        self, conn: Any, returncode: int, path: Path, fields: list[tuple[str, str]], lap: Callable
    ) -> tuple[Path, int, strict_csv.Comparison]:
        """The connector's records as Parquet, once its messages say it finished and DuckDB's
        strict read of the file agrees with them: the file, its rows, the comparison.
        `fields`: each header name with its table column."""
        spec, records = self.spec, self.workdir / "records.jsonl"
        header, columns = [name for name, _ in fields], [column for _, column in fields]
        messages = protocol.read_messages(conn, records)
        for level, message in messages.logs:
            self.log.debug(f"connector {level}: {message}")
        failed = connector_failed(returncode, messages)
        if failed is not None:
            stderr = (self.workdir / "connector.stderr").read_text(errors="replace").splitlines()
            if stderr:
                self.log.debug("connector stderr (last lines):\n" + "\n".join(stderr[-20:]))
            # DuckDB names the line the connector stumbled on, when there is one
            rejected, first = strict_csv.strict_rejects(conn, path, header)
            if rejected:
                failed = f"{strict_csv.describe_rejects(rejected, first, header)} ({failed})"
            raise SourceError(spec, failed)
        parquet = self.workdir / "data.parquet"
        synced = protocol.records_to_parquet(conn, records, fields, parquet)
        lap("records")
        comparison = strict_csv.compare(conn, path, header, parquet, columns)
        lap("verify")
        if comparison.reject_count:
            raise SourceError(
                spec,
                strict_csv.describe_rejects(comparison.reject_count, comparison.rejects, header),
            )
        if comparison.differing:
            differences = strict_csv.describe_differences(comparison, header)
            raise SourceError(spec, f"the connector's records differ from the file: {differences}")
        return parquet, synced, comparison

    def _run_connector(self, local: SourceSpec, header: list[str]) -> int:
        """The connector's `read` of the local copy, its stdout to `records.jsonl`; its exit
        code (negative: the signal that killed it)."""
        workdir, timeout = self.workdir, self.loader.connector_timeout_seconds
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
            command = child_command(str(executable), *args)
            self.connector = subprocess.Popen(
                command, cwd=workdir, stdin=subprocess.DEVNULL, stdout=out, stderr=err
            )
            try:
                return self.connector.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.connector.kill()
                self.connector.wait()
                raise TimeoutError(
                    f"{CONNECTOR} did not finish reading in {timeout:g} s"
                    " (MLSTACK_CONNECTOR_TIMEOUT_SECONDS)"
                ) from None
