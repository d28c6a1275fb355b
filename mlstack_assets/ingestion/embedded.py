"""Embedded Airbyte: the File source connector, run locally by PyAirbyte, no server.

Records stream from the connector into PyAirbyte's cache, which *is* the warehouse's
staging schema (DuckDB file or BigQuery dataset): Python holds a batch at a time, never
the table. Full refresh | Overwrite: every sync replaces the staged table, keeping
Airbyte's `_airbyte_*` columns.
"""

import json
import os
import re
import time
from pathlib import Path
from typing import Any

from mlstack_assets.ingestion.connector import (
    CONNECTOR_NAME,
    CONNECTOR_VERSION,
    ensure_connector,
)
from mlstack_assets.ingestion.loader import AirbyteLoader, SyncReport
from mlstack_assets.ingestion.preflight import preflight
from mlstack_assets.ingestion.sources import SourceError, SourceSpec
from mlstack_assets.warehouse import Warehouse


def _configure_pyairbyte(connector_dir: Path) -> None:
    """PyAirbyte reads these when first imported: stay offline, quiet, and inside `.mlstack/`."""
    os.environ.setdefault("AIRBYTE_OFFLINE_MODE", "1")  # no connector registry, no telemetry
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("NO_LIVE_PROGRESS", "1")
    os.environ.setdefault("AIRBYTE_LOGGING_ROOT", str(connector_dir / "logs"))


def _cache(warehouse: Warehouse, connector_dir: Path) -> Any:
    import airbyte as ab

    cache_dir = connector_dir / "cache"
    if warehouse.kind == "bigquery":
        return ab.BigQueryCache(
            project_name=warehouse.project,  # type: ignore[attr-defined]
            dataset_name=warehouse.staging_dataset,
            # PyAirbyte creates the dataset in "US" unless told: staging must be where the
            # published dataset is, or the publishing copy job fails (it cannot cross locations)
            dataset_location=warehouse.location,  # type: ignore[attr-defined]
            credentials_path=os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"),
            cache_dir=cache_dir,
        )
    return ab.DuckDBCache(
        db_path=warehouse.path,  # type: ignore[attr-defined]
        schema_name=warehouse.staging_dataset,
        cache_dir=cache_dir,
    )


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


class EmbeddedAirbyte(AirbyteLoader):
    """The Airbyte File source connector, run in this process's machine by PyAirbyte."""

    connector_dir: str

    def sync_to_staging(self, spec: SourceSpec, warehouse: Warehouse, log: Any) -> SyncReport:
        preflight(spec)
        connector_dir = Path(self.connector_dir)
        executable = ensure_connector(connector_dir)
        _configure_pyairbyte(connector_dir)
        import airbyte as ab
        from airbyte.exceptions import PyAirbyteError

        started_ms = time.time() * 1000
        # PyAirbyte leaves an existing table alone when a sync reads no records: start empty,
        # so a header-only source stages zero rows instead of yesterday's.
        warehouse.drop_staged(spec.name)
        cache = _cache(warehouse, connector_dir)
        try:
            source = ab.get_source(
                CONNECTOR_NAME,
                config=spec.connector_config(),
                local_executable=executable,
                streams=[spec.name],
            )
            result = source.read(cache=cache, force_full_refresh=True, write_strategy="replace")
        except PyAirbyteError as error:
            cause = connector_failure(getattr(error, "log_file", None), started_ms)
            raise SourceError(spec, cause) from None
        finally:
            cache.close()  # release the DuckDB file before anyone else opens it
        return SyncReport(
            records=result.processed_records,
            metadata={"connector": f"airbyte/{CONNECTOR_NAME} {CONNECTOR_VERSION} (PyAirbyte)"},
        )
