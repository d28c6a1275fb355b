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

    @property
    def audit_dataset(self) -> str:
        """Where tables are built and checked before they replace the published ones (the
        ML tables here, dbt's models with `+schema: audit`): readers never look there."""
        return f"{self.dataset}_audit"

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
        self.publish_relations(self.staging_dataset, tables=[table])

    def publish_relations(
        self, source_schema: str, tables: list[str], views: dict[str, str] | None = None
    ) -> None:
        """Replace `<dataset>.<table>` by `<source_schema>.<table>` for each table, and
        (re)create each view in `<dataset>` from its SQL, as atomically as the warehouse can:
        DuckDB in one transaction, BigQuery one atomic job per relation."""
        raise NotImplementedError

    def ensure_dataset(self, dataset: str) -> None:
        """Create the schema / dataset when it does not exist yet."""
        raise NotImplementedError

    def build_audit_table(self, table: str, sql: str) -> str:
        """Build `<audit>.<table>` from `sql`, replacing any earlier one; return its SQL name.

        The same statement on both warehouses; nothing published is touched.
        """
        self.ensure_dataset(self.audit_dataset)
        name = self.qualified(self.audit_dataset, table)
        self.query(f"create or replace table {name} as\n{sql}")
        return name


def build_warehouse_resources(settings: Settings) -> dict[str, Any]:
    """`warehouse` and `io_manager` for the configured warehouse."""
    if settings.warehouse == "bigquery":
        from mlstack_assets.warehouse.bigquery import build_bigquery_resources

        return build_bigquery_resources(settings)
    from mlstack_assets.warehouse.duckdb import build_duckdb_resources

    return build_duckdb_resources(settings)
