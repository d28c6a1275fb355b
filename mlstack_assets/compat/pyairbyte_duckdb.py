"""A PyAirbyte DuckDB cache whose record batches are written as plain JSONL, not gzip.

Why: PyAirbyte's DuckDB cache writes every record to a JSONL batch file through
`gzip.open` at gzip's default level 9 (`airbyte/_writers/jsonl.py`), then loads the
batch with DuckDB's `read_json_auto`. The batch files are temporary (deleted once
loaded, on the machine that wrote them), so compressing them buys nothing, and it was
the largest single cost in the Python half of a sync: `GzipFile.write` took 31 % of the
extract thread's samples in a py-spy profile of both raw steps at 300k rows. On DuckDB
both syncs' record handling runs in one Python process, so that time adds up directly
to extract-load's wall time.

Why private: PyAirbyte has no public setting for the batch format; the writer is the
processor's `file_writer_class` and the processor the cache's `_sql_processor_class`
(`airbyte/_processors/sql/duckdb.py`, `airbyte/caches/duckdb.py`). This module imports
PyAirbyte, so it is imported only when a sync runs.
"""

from pathlib import Path
from typing import IO, ClassVar

from airbyte._processors.sql.duckdb import DuckDBSqlProcessor
from airbyte._writers.jsonl import JsonlWriter
from airbyte.caches.duckdb import DuckDBCache
from airbyte.shared.sql_processor import SqlProcessorBase


class PlainJsonlWriter(JsonlWriter):
    """PyAirbyte's JSONL batch writer without compression; DuckDB reads `.jsonl` as text."""

    default_cache_file_suffix = ".jsonl"

    def _open_new_file(self, file_path: Path) -> IO[str]:
        return file_path.open("w", encoding="utf-8")


class PlainJsonlDuckDBProcessor(DuckDBSqlProcessor):
    """PyAirbyte's DuckDB processor, writing its batches with `PlainJsonlWriter`."""

    file_writer_class = PlainJsonlWriter


class PlainJsonlDuckDBCache(DuckDBCache):
    """`airbyte.DuckDBCache` (same fields, same tables) with uncompressed record batches."""

    _sql_processor_class: ClassVar[type[SqlProcessorBase]] = PlainJsonlDuckDBProcessor
