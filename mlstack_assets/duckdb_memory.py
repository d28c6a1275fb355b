"""DuckDB's memory cap, for every DuckDB connection of the pipeline.

A module of its own, outside `warehouse`, because the extract processes use it too and
must not import Dagster: importing the warehouse package there cost each connector start
about 3 s of imports, more than the connector's own read of a 1,000-row file.
"""

from __future__ import annotations

from typing import Any


def limit_memory(conn: Any, memory_limit: str) -> None:
    """Cap DuckDB's working memory for this database (`Settings.duckdb_memory_limit`).

    A SET, not a connect-time config: a second connection to the file in this process (GX,
    dbt's adapter) with a different config would be refused ("different configuration").
    """
    conn.execute(f"set memory_limit = '{memory_limit}'")


# DuckDB's Parquet writer holds a whole row group in memory before writing it (122,880
# rows by default: about 37 MB of text for 300-byte rows). Beside the JSON reader's
# buffers, that ran the extract of a 600,000-row file out of the default 128MB cap.
# 16,384 rows keep it a few MB on lesson-shaped rows, and Parquet readers split the work
# by row group, so DuckDB and BigQuery read these files no slower.
PARQUET_COPY_OPTIONS = "format parquet, row_group_size 16384"
