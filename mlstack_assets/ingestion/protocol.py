"""The Airbyte protocol the File source connector writes to stdout, read by DuckDB.

DuckDB reads the messages file twice, never Python per record: leniently for logs, TRACE errors
and stream statuses (a line cut off by a killed connector is skipped: the exit status and a
missing COMPLETE tell), strictly for the records.
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlstack_assets.warehouse.dialect import sql_identifier, sql_string
from mlstack_assets.warehouse.duckdb import PARQUET_COPY_OPTIONS

# the connector writes one record per line: up to twice the longest CSV line (escapes)
MAXIMUM_OBJECT_BYTES = 16 << 20
LOG_LINES_KEPT = 500

_MESSAGE_COLUMNS = (
    "{type: 'VARCHAR', log: 'STRUCT(level VARCHAR, message VARCHAR)',"
    " trace: 'STRUCT(type VARCHAR, error STRUCT(message VARCHAR, internal_message VARCHAR,"
    " stack_trace VARCHAR, failure_type VARCHAR), stream_status STRUCT(status VARCHAR))'}"
)
_DRAFT_07 = "http://json-schema.org/draft-07/schema#"
_ROOT_CAUSE = re.compile(r"^([\w.]+(?:Error|Exception|Warning)): (.+)$")


def configured_catalog(stream: str, header: Sequence[str]) -> dict[str, Any]:
    """What `discover` would report (every column a nullable string), without its guessing."""
    properties = {name: {"type": ["string", "null"]} for name in header}
    entry = {
        "name": stream,
        "json_schema": {"$schema": _DRAFT_07, "type": "object", "properties": properties},
        "supported_sync_modes": ["full_refresh"],
        "source_defined_cursor": False,
    }
    modes = {"sync_mode": "full_refresh", "destination_sync_mode": "overwrite"}
    return {"streams": [{"stream": entry, **modes}]}


@dataclass
class Messages:
    """What the connector said besides its records."""

    logs: list[tuple[str, str]] = field(default_factory=list)  # (level, message)
    error: dict[str, Any] | None = None  # the last TRACE error's payload
    last_status: str | None = None  # the stream's last status

    def failure(self) -> str | None:
        """Its last TRACE error in one line: the root cause (first exception of a chained trace)."""
        if (error := self.error) is None:
            return None
        for line in (error.get("stack_trace") or "").splitlines():
            if match := _ROOT_CAUSE.match(line.strip()):
                return f"{match[2]} ({match[1].rsplit('.', 1)[-1]})"
        return error.get("internal_message") or error.get("message") or "no message"


def read_messages(conn: Any, path: Path) -> Messages:
    """The non-record messages of the connector output at `path`."""
    rows = conn.execute(
        f"""select type, log.level, log.message, trace.type, trace.error, trace.stream_status.status
from read_ndjson({sql_string(str(path))}, columns = {_MESSAGE_COLUMNS}, ignore_errors = true,
                 maximum_object_size = {MAXIMUM_OBJECT_BYTES})
where type is distinct from 'RECORD'"""  # a literal: binding a value imports pandas
    ).fetchall()
    messages = Messages()
    for kind, level, text, trace_type, error, status in rows:
        if kind == "LOG" and text is not None and len(messages.logs) < LOG_LINES_KEPT:
            messages.logs.append((level or "INFO", text))
        elif kind == "TRACE" and trace_type == "ERROR" and error is not None:
            messages.error = error
        elif kind == "TRACE" and trace_type == "STREAM_STATUS" and status is not None:
            messages.last_status = status
    return messages


def records_to_parquet(
    conn: Any, path: Path, columns: Sequence[tuple[str, str]], parquet: Path
) -> int:
    """Write the connector's records at `path` to `parquet`, return how many: `columns` (field,
    table column) as text, then Airbyte's own columns as its destinations write them."""
    fields = ", ".join(f"{sql_identifier(name)} VARCHAR" for name, _ in columns)
    record_type = sql_string(f"STRUCT(stream VARCHAR, emitted_at BIGINT, data STRUCT({fields}))")
    selected = ", ".join(
        f"record.data.{sql_identifier(name)} as {sql_identifier(column)}"
        for name, column in columns
    )
    [(rows,)] = conn.execute(
        f"""copy (select {selected}, cast(uuidv7() as varchar) as _airbyte_raw_id,
       make_timestamp(record.emitted_at * 1000) as _airbyte_extracted_at,
       cast('{{"changes": []}}' as json) as _airbyte_meta
from read_ndjson({sql_string(str(path))}, columns = {{type: 'VARCHAR', record: {record_type}}},
                 maximum_object_size = {MAXIMUM_OBJECT_BYTES})
where type = 'RECORD') to {sql_string(str(parquet))} ({PARQUET_COPY_OPTIONS})"""
    ).fetchall()
    return int(rows)
