"""What dbt's adapter keeps open in the Dagster process, released once dbt's results are read.

dagster-dbt opens dbt's adapter in the Dagster process (row counts, column metadata), and
the published checks run dbt tests through it. dbt-duckdb keeps one process-wide
connection to the file open afterwards (`compat.close_dbt_duckdb_connections`); left open,
the next step of the run could not open the file with Dagster's own, differently
configured connection. dbt-bigquery holds nothing that matters. This is dbt's part of the
warehouse seam: it asks the warehouse only which dbt adapter it is (its kind is the dbt
target's name, `profiles.yml`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def dbt_connections_released(adapter_type: str) -> Iterator[None]:
    """Run dbt inside; afterwards (whatever happened) close what its adapter left open."""
    try:
        yield
    finally:
        if adapter_type == "duckdb":
            from mlstack_assets.compat import close_dbt_duckdb_connections

            close_dbt_duckdb_connections()
