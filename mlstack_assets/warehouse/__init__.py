"""The warehouse behind every asset: DuckDB by default, BigQuery in production.

`Warehouse` is the small set of SQL operations the pipeline itself needs (inspect a
table, publish a staged table atomically); each implementation wraps Dagster's own
DuckDB / BigQuery resource, and Python assets store their outputs through the matching
Dagster IO manager. `build_warehouse_resources` is the one switch between the two; the
BigQuery module is imported only when it is chosen (its client libraries are slow to load).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster import ConfigurableResource

from mlstack_assets.settings import Settings

TableColumns = list[tuple[str, str]]


class Warehouse(ConfigurableResource):
    """What the pipeline asks of a warehouse, whichever it is."""

    dataset: str

    @property
    def kind(self) -> str:
        raise NotImplementedError

    @property
    def staging_dataset(self) -> str:
        return f"{self.dataset}_staging"

    @contextmanager
    def exclusive(self, purpose: str = "") -> Iterator[None]:
        """Hold while reading or writing the warehouse from this process (DuckDB needs it).

        `purpose` (e.g. "publish tags") is what a process waiting for it is told.
        """
        yield

    def qualified(self, schema: str, table: str) -> str:
        raise NotImplementedError

    def query(self, sql: str) -> list[tuple]:
        """Run a query in the warehouse; for small results (counts, aggregates) only."""
        raise NotImplementedError

    def table_columns(self, schema: str, table: str) -> TableColumns | None:
        """Column names and types, or None when the table does not exist."""
        raise NotImplementedError

    def row_count(self, schema: str, table: str) -> int:
        raise NotImplementedError

    def drop_staged(self, table: str) -> None:
        """Remove `<staging>.<table>`, so what the next sync stages is only what it read."""
        raise NotImplementedError

    def publish(self, table: str) -> None:
        """Replace `<dataset>.<table>` by `<staging>.<table>` in one atomic step."""
        raise NotImplementedError


def build_warehouse_resources(settings: Settings) -> dict[str, Any]:
    """`warehouse` and `io_manager` for the configured warehouse."""
    if settings.warehouse == "bigquery":
        from mlstack_assets.warehouse.bigquery import build_bigquery_resources

        return build_bigquery_resources(settings)
    from mlstack_assets.warehouse.duckdb import build_duckdb_resources

    return build_duckdb_resources(settings)
