"""Embedded Airbyte: the File source connector, run locally by PyAirbyte, no server.

A sync, step by step, none of it holding the warehouse lock:
1. the source arrives as a local file: a local path is used as is; an HTTPS source is
   downloaded by mlstack (`download.py`: stall timeout, bounded retries), because the
   connector has no read timeout and would hang on a stalled server;
2. the pre-flight checks that file (header, first record, UTF-8, NUL bytes);
3. the connector reads the local file and PyAirbyte writes its records into a private
   DuckDB cache in the sync's own directory (on BigQuery: into the staging dataset);
4. the records in the file are counted and compared with the rows that arrived.
Then `Extracted.stage`, called by the raw asset under the warehouse lock, copies the
synced table into `<dataset>_staging.<source>` in one statement. Full refresh | Overwrite:
every sync replaces the staged table, keeping Airbyte's `_airbyte_*` columns.
"""

import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlstack_assets.compat import preset_discovered_catalog
from mlstack_assets.imports import import_serially, importing
from mlstack_assets.ingestion.connector import (
    CONNECTOR_NAME,
    CONNECTOR_VERSION,
    ensure_connector,
)
from mlstack_assets.ingestion.download import download
from mlstack_assets.ingestion.loader import AirbyteLoader, Extracted, SyncReport
from mlstack_assets.ingestion.preflight import count_records, preflight
from mlstack_assets.ingestion.sources import SourceError, SourceSpec, local_file
from mlstack_assets.ingestion.syncdir import sync_directory
from mlstack_assets.warehouse import PyAirbyteTarget, Warehouse


def configure_pyairbyte(connector_dir: Path) -> None:
    """PyAirbyte reads these when first imported: stay offline, quiet, and inside `.mlstack/`.

    PyAirbyte's own variables, set (unless the user set them), not mlstack's configuration:
    that is why they are not in `settings.py`."""
    os.environ.setdefault("AIRBYTE_OFFLINE_MODE", "1")  # no connector registry, no telemetry
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("NO_LIVE_PROGRESS", "1")
    os.environ.setdefault("AIRBYTE_LOGGING_ROOT", str(connector_dir / "logs"))


def import_pyairbyte() -> None:
    """Import PyAirbyte (one heavy import at a time) and keep the process's logging as it was.

    Importing PyAirbyte imports the Airbyte CDK's entrypoint, whose `init_logger` points the
    root logger at a handler printing Airbyte-protocol JSON on stdout (`airbyte_cdk/logger.py`,
    at import). From then on every library's warning in the Dagster process came out on the
    CLI as a `{"type":"LOG",...}` line; the handlers the import installed are taken off.
    """
    with importing():
        root = logging.getLogger()
        handlers = list(root.handlers)
        import_serially("airbyte", "airbyte.caches", "airbyte.exceptions")
        root.handlers[:] = handlers


_ROOT_CAUSE = re.compile(r"^([\w.]+(?:Error|Exception|Warning)): (.+)$")


def connector_failure(log_file: Path | None, since_ms: float) -> str:
    """The connector's own account of a failure: its last ERROR trace and the root cause.

    PyAirbyte only says "Connector failed"; the Airbyte protocol TRACE message that the
    connector emitted (message + stack trace) is in the connector log.
    """
    if log_file is None or not Path(log_file).exists():
        return "the Airbyte File source connector failed (no connector log was written)"
    trace_error: dict[str, Any] | None = None
    for line in Path(log_file).read_text(errors="replace").splitlines():
        if '"TRACE"' not in line or '"ERROR"' not in line:
            continue
        try:
            message = json.loads(line[line.index("{") :])
        except ValueError:
            continue
        trace = message.get("trace") or {}
        if trace.get("type") == "ERROR" and trace.get("emitted_at", 0) >= since_ms:
            trace_error = trace.get("error") or {}
    if trace_error is None:
        return f"the Airbyte File source connector failed; see its log {log_file}"
    causes = [
        match.groups()
        for line in (trace_error.get("stack_trace") or "").splitlines()
        if (match := _ROOT_CAUSE.match(line.strip()))
    ]
    if causes:  # the first exception of a chained traceback is the root cause
        kind, text = causes[0]
        return f"the Airbyte File source connector failed: {text} ({kind.rsplit('.', 1)[-1]})"
    detail = trace_error.get("internal_message") or trace_error.get("message")
    return f"the Airbyte File source connector failed: {detail}"


_SQL_CAUSE = re.compile(r"\(([\w.]+(?:Error|Exception))\) (.+)")


def short_cause(error: BaseException) -> str:
    """One line about an exception: a DuckDB/SQLAlchemy cause when there is one, not the SQL.

    PyAirbyte's `SQLRuntimeError` carries the whole statement (35 lines for a wide table)
    before the database's own message; the full text goes to the debug log instead.
    """
    text = str(error)
    for line in text.splitlines():
        if match := _SQL_CAUSE.search(line):
            return f"{match.group(2).strip()} ({match.group(1).rsplit('.', 1)[-1]})"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    first = first if len(first) <= 300 else first[:300] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def catalog_from_header(stream: str, header: list[str]) -> Any:
    """The File source's catalog for a CSV whose columns are `header`, all read as text.

    What `discover` would report for this file with mlstack's reader options (every column
    a nullable string, full refresh only), without parsing it. None when pandas would rename
    columns (a blank or repeated name), so that discover names them as the reader will.
    """
    if len(set(header)) != len(header) or not all(name.strip() for name in header):
        return None
    from airbyte_protocol.models import AirbyteCatalog, AirbyteStream, SyncMode

    schema = {
        "$schema": "http://json-schema.org/draft-07/schema#",
        "type": "object",
        "properties": {name: {"type": ["string", "null"]} for name in header},
    }
    return AirbyteCatalog(
        streams=[
            AirbyteStream(
                name=stream,
                json_schema=schema,
                supported_sync_modes=[SyncMode.full_refresh],
                source_defined_cursor=False,
            )
        ]
    )


class EmbeddedAirbyte(AirbyteLoader):
    """The Airbyte File source connector, run in this process's machine by PyAirbyte."""

    connector_dir: str
    source_timeout_seconds: float = 60.0
    source_retries: int = 3

    @contextmanager
    def extract(self, spec: SourceSpec, warehouse: Warehouse, log: Any) -> Iterator[Extracted]:
        connector_dir = Path(self.connector_dir)
        timings: dict[str, float] = {}
        clock = time.perf_counter()

        def lap(name: str) -> None:
            nonlocal clock
            timings[name] = round(time.perf_counter() - clock, 3)
            clock = time.perf_counter()

        with sync_directory(connector_dir, spec.name, log.info) as workdir:
            path = self._local_copy(spec, workdir, log)
            lap("download")
            header = preflight(spec, path).header
            lap("preflight")
            executable = ensure_connector(connector_dir)
            configure_pyairbyte(connector_dir)
            import_pyairbyte()
            target = warehouse.pyairbyte_target(spec.name, workdir)
            report = self._read(spec, path, executable, target.cache, log, header)
            lap("connector")
            self._reconcile(spec, path, report, target.synced_rows())
            lap("reconcile")
            report.metadata["extract_seconds"] = timings
            yield Extracted(report=report, stage=lambda: self._stage(spec, target, log))

    def _local_copy(self, spec: SourceSpec, workdir: Path, log: Any) -> Path:
        if not spec.is_remote:
            return local_file(spec)
        path = workdir / f"{spec.name}.csv"
        started = time.perf_counter()
        size = download(spec, path, self.source_timeout_seconds, self.source_retries, log.warning)
        log.info(f"downloaded {spec.url} ({size:,} bytes) in {time.perf_counter() - started:.2f} s")
        return path

    @staticmethod
    def _read(
        spec: SourceSpec,
        path: Path,
        executable: Path,
        cache: Any,
        log: Any,
        header: list[str],
    ) -> SyncReport:
        import airbyte as ab
        from airbyte.exceptions import PyAirbyteError

        started_ms = time.time() * 1000
        # the connector reads the local copy: it never touches the network
        config = dataclasses.replace(spec, url=str(path)).connector_config()
        try:
            # streams are selected after the catalog is set: selecting them in get_source
            # would run `discover` to list the streams
            # one name per source: PyAirbyte keeps one log file per connector name, and the
            # two sources' extracts may run at once (`AirbyteLoader.start_extracts`)
            source = ab.get_source(
                f"{CONNECTOR_NAME}-{spec.name}", config=config, local_executable=executable
            )
            catalog = catalog_from_header(spec.name, header)
            if catalog is not None:  # the stream is known: no `discover` over the file
                preset_discovered_catalog(source, catalog)
            source.select_streams([spec.name])
            # the pinned connector validates its config itself when it reads; PyAirbyte's
            # own validation would start it once more just to ask for its spec
            result = source.read(
                cache=cache,
                force_full_refresh=True,
                write_strategy="replace",
                skip_validation=True,
            )
        except PyAirbyteError as error:
            log.debug(f"PyAirbyte error while syncing {spec.name}: {error}")
            cause = connector_failure(getattr(error, "log_file", None), started_ms)
            raise SourceError(spec, cause) from None
        except Exception as error:  # e.g. SQLRuntimeError, which is not a PyAirbyteError
            log.debug(f"error while syncing {spec.name}: {error!r}")
            raise SourceError(spec, f"the sync failed: {short_cause(error)}") from None
        finally:
            cache.close()  # release the cache file before anyone opens it
        return SyncReport(
            records=result.processed_records,
            metadata={"connector": f"airbyte/{CONNECTOR_NAME} {CONNECTOR_VERSION} (PyAirbyte)"},
        )

    @staticmethod
    def _reconcile(spec: SourceSpec, path: Path, report: SyncReport, rows: int | None) -> None:
        """Every record of the file arrived, no more and no fewer: nothing silently dropped."""
        in_file = count_records(path)
        arrived = rows if rows is not None else report.records
        if arrived is None:  # a cache that cannot be counted (BigQuery, nothing reported)
            return
        report.metadata["records_in_file"] = in_file
        if arrived != in_file:
            raise SourceError(
                spec,
                f"the file holds {in_file:,} CSV records but {arrived:,} arrived in the sync:"
                " the connector's reader dropped or split records without an error",
            )

    @staticmethod
    def _stage(spec: SourceSpec, target: PyAirbyteTarget, log: Any) -> None:
        try:
            target.stage()
        except Exception as error:
            log.debug(f"error while staging {spec.name}: {error!r}")
            raise SourceError(
                spec, f"staging the synced rows failed: {short_cause(error)}"
            ) from None
