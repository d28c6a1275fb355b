"""One embedded extract, in a process of its own: source file → connector → checkpoint.

`python -m mlstack_assets.ingestion.extract <sync directory>` reads `request.json` there
and does, with no warehouse and no lock:

1. the local copy: a local path as is; an HTTPS source downloaded (`download.py`: stall
   timeout, deadline, bounded retries), because the connector has no read timeout;
2. the header, read by DuckDB (`strict_csv.read_header`), which gives the configured
   catalog (every column text, as mlstack's reader options read it);
3. the pinned `source-file` connector's `read`, its stdout written to `records.jsonl`
   (a child that dies with this process, bounded by `connector_timeout_seconds`);
4. DuckDB reads that output (`protocol.py`): the connector's errors and stream status,
   then its records into `data.parquet` with Airbyte's `_airbyte_*` columns;
5. DuckDB reads the source file strictly and compares it with `data.parquet`, record for
   record and field for field (`strict_csv.py`);
6. `data.parquet` becomes an immutable checkpoint in the lake, with its manifest.

It writes `log.jsonl` (lines for the step's log) as it goes and `result.json` at the end:
the checkpoint, or the error naming the source and the cause. The step that started it
(`embedded.py`) waits for it, then stages the checkpoint under the warehouse lock.
Each extract being a process, the raw steps of a run read their sources concurrently
without threads; killed with its step, it takes the connector with it.
"""

from __future__ import annotations

import dataclasses
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REQUEST = "request.json"
RESULT = "result.json"
LOG = "log.jsonl"
RECORDS = "records.jsonl"
CONNECTOR_LOG = "connector.stderr"
PARQUET = "data.parquet"
SOURCE_COPY = "source.csv"


@dataclass(frozen=True)
class ExtractRequest:
    """What one extract needs to know, written by the step as `request.json`."""

    source: str
    url: str
    connector_dir: str
    lake: str
    run_id: str
    stall_timeout_seconds: float
    retries: int
    deadline_seconds: float
    connector_timeout_seconds: float
    memory_limit: str

    def write(self, workdir: Path) -> None:
        (workdir / REQUEST).write_text(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def read(cls, workdir: Path) -> ExtractRequest:
        return cls(**json.loads((workdir / REQUEST).read_text()))


class ExtractLog:
    """Lines for the step's log, one JSON object per line (the step replays them)."""

    def __init__(self, path: Path):
        self._path = path

    def _write(self, level: str, message: str) -> None:
        with self._path.open("a") as handle:
            handle.write(json.dumps({"level": level, "message": message}) + "\n")

    def debug(self, message: str) -> None:
        self._write("debug", message)

    def info(self, message: str) -> None:
        self._write("info", message)

    def warning(self, message: str) -> None:
        self._write("warning", message)


def normalized_name(name: str) -> str:
    """The column name Airbyte's destinations (and PyAirbyte) give a field: lower case,
    every character but letters and digits as `_`, a leading digit prefixed with `_`."""
    import re

    result = re.sub(r"[^A-Za-z0-9]", "_", name.lower())
    return f"_{result}" if result[:1].isdigit() else result


def _connector_failed(returncode: int, messages: Any, records_seen: int | None) -> str | None:
    """Why the connector's run does not count as a finished sync, or None."""
    cause = messages.failure()
    if cause is not None:
        return f"the Airbyte File source connector failed: {cause}"
    if returncode < 0:
        name = signal.Signals(-returncode).name
        return (
            f"the Airbyte File source connector was killed by {name} before it finished"
            f" (its last stream status: {messages.last_status or 'none'})"
        )
    if returncode != 0:
        return f"the Airbyte File source connector exited with code {returncode} and no error"
    if messages.last_status != "COMPLETE":
        return (
            "the Airbyte File source connector ended without reporting its stream complete"
            f" (its last stream status: {messages.last_status or 'none'})"
        )
    return None


def _run_connector(
    request: ExtractRequest, workdir: Path, config: dict, catalog: dict, log: ExtractLog
) -> int:
    """The connector's `read`, its stdout to `records.jsonl`; its exit code."""
    from mlstack_assets.ingestion.connector import ensure_connector
    from mlstack_assets.processes import child_command

    executable = ensure_connector(Path(request.connector_dir))
    (workdir / "config.json").write_text(json.dumps(config))
    (workdir / "catalog.json").write_text(json.dumps(catalog))
    args = ["read", "--config", str(workdir / "config.json")]
    args += ["--catalog", str(workdir / "catalog.json")]
    with (workdir / RECORDS).open("wb") as out, (workdir / CONNECTOR_LOG).open("wb") as err:
        process = subprocess.Popen(
            child_command(str(executable), *args),
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
        try:
            return process.wait(timeout=request.connector_timeout_seconds)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise TimeoutError(
                f"the Airbyte File source connector did not finish reading in"
                f" {request.connector_timeout_seconds:g} s (MLSTACK_CONNECTOR_TIMEOUT_SECONDS)"
            ) from None


def extract_connection(request: ExtractRequest, workdir: Path) -> Any:
    """The extract's own DuckDB (in memory, spilling into the sync directory), under the
    memory cap every DuckDB of the pipeline has (`MLSTACK_DUCKDB_MEMORY_LIMIT`), on one
    thread. The records keep the file's order, so with two threads DuckDB holds what one
    thread read ahead of the other: a 1M-row extract beside another source's connector ran
    out of the default 128MB reading its records (alone, it did not). The connector, not
    DuckDB, is what an extract waits for (one thread reads 1M records in about 1.3 s)."""
    import duckdb

    from mlstack_assets.duckdb_memory import limit_memory

    conn = duckdb.connect()
    limit_memory(conn, request.memory_limit)
    conn.execute("set threads = 1")
    conn.execute(f"set temp_directory = '{workdir / 'duckdb.tmp'}'")
    return conn


def run(request: ExtractRequest, workdir: Path, log: ExtractLog) -> dict[str, Any]:
    """The extract; returns what `result.json` holds on success. Raises `SourceError`."""
    from mlstack_assets.ingestion import protocol, strict_csv
    from mlstack_assets.ingestion.connector import CONNECTOR_NAME, CONNECTOR_VERSION
    from mlstack_assets.ingestion.download import download
    from mlstack_assets.ingestion.sources import SourceError, SourceSpec, local_file
    from mlstack_assets.lake import Lake, file_sha256
    from mlstack_assets.lake.checkpoints import write_checkpoint

    spec = SourceSpec(request.source, request.url)
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal clock
        timings[name] = round(time.perf_counter() - clock, 3)
        clock = time.perf_counter()

    if spec.is_remote:
        path = workdir / SOURCE_COPY
        size = download(
            spec,
            path,
            request.stall_timeout_seconds,
            request.retries,
            log.warning,
            deadline=request.deadline_seconds,
        )
        log.info(f"downloaded {spec.url} ({size:,} bytes) in {time.perf_counter() - clock:.2f} s")
    else:
        path = local_file(spec)
    lap("download")

    conn = extract_connection(request, workdir)
    try:
        header = strict_csv.read_header(conn, path)
    except strict_csv.CsvError as error:
        raise SourceError(spec, str(error)) from None
    columns = [normalized_name(name) for name in header]
    clashing = sorted({c for c in columns if columns.count(c) > 1})
    if clashing:
        raise SourceError(
            spec,
            f"the header's columns {[h for h, c in zip(header, columns, strict=True) if c in clashing]}"  # noqa: E501
            f" would all be named {clashing[0]!r} in the warehouse; rename them in the source",
        )
    extracted_at = datetime.now(timezone.utc)
    config = dataclasses.replace(spec, url=str(path)).connector_config()
    returncode = _run_connector(
        request, workdir, config, protocol.configured_catalog(spec.name, header), log
    )
    lap("connector")

    records = workdir / RECORDS
    messages = protocol.read_messages(conn, records)
    for level, message in messages.logs:
        log.debug(f"connector {level}: {message}")
    failed = _connector_failed(returncode, messages, None)
    if failed is not None:
        stderr = (workdir / CONNECTOR_LOG).read_text(errors="replace").strip().splitlines()
        if stderr:
            log.debug("connector stderr (last lines):\n" + "\n".join(stderr[-20:]))
        # DuckDB names the line the connector stumbled on, when there is one
        _, rejected, first = strict_csv.strict_rejects(conn, path, header)
        if rejected:
            described = strict_csv.describe_rejects(rejected, first, header)
            raise SourceError(spec, f"{described} ({failed})")
        raise SourceError(spec, failed)
    parquet = workdir / PARQUET
    synced = protocol.records_to_parquet(
        conn, records, list(zip(header, columns, strict=True)), parquet
    )
    lap("records")
    comparison = strict_csv.compare(conn, path, header, parquet, columns)
    lap("verify")
    if comparison.reject_count:
        raise SourceError(
            spec, strict_csv.describe_rejects(comparison.reject_count, comparison.rejects, header)
        )
    if comparison.differing:
        raise SourceError(
            spec,
            "the connector's records differ from the file: "
            + strict_csv.describe_differences(comparison, header),
        )
    types = conn.execute(
        f"select column_name, column_type from (describe select * from read_parquet('{parquet}'))"
    ).fetchall()
    conn.close()
    manifest = {
        "source_url": spec.url,
        "source_sha256": file_sha256(path),
        "source_bytes": path.stat().st_size,
        "connector": f"airbyte/{CONNECTOR_NAME}",
        "connector_version": CONNECTOR_VERSION,
        "run_id": request.run_id,
        "rows": synced,
        "columns": [[name, dtype] for name, dtype in types],
    }
    checkpoint = write_checkpoint(Lake(request.lake), spec.name, parquet, extracted_at, manifest)
    lap("checkpoint")
    return {
        "checkpoint_key": checkpoint.key,
        "manifest": checkpoint.manifest,
        "records": synced,
        "records_in_file": comparison.records_in_file,
        "file_read": "strict" if comparison.strict else "strict mode off (mixed line ends)",
        "timings": timings,
    }


def main() -> None:
    from mlstack_assets.processes import die_with_parent

    die_with_parent()
    workdir = Path(sys.argv[1])
    log = ExtractLog(workdir / LOG)
    request = ExtractRequest.read(workdir)
    from mlstack_assets.ingestion.sources import SourceError

    try:
        result = {"ok": True, **run(request, workdir, log)}
    except SourceError as error:
        result = {"ok": False, "error": str(error)}
    except Exception as error:  # a time-out, the lake, DuckDB on the connector's output
        import traceback

        log.debug(traceback.format_exc())
        cause = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
        kind = type(error).__name__
        detail = cause if isinstance(error, TimeoutError) else f"{kind}: {cause}"
        result = {"ok": False, "error": f"source '{request.source}' ({request.url}): {detail}"}
    partial = workdir / f"{RESULT}.partial"
    partial.write_text(json.dumps(result, default=str))
    partial.rename(workdir / RESULT)


if __name__ == "__main__":
    main()
