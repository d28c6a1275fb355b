"""The warehouse behind every asset: DuckDB by default, BigQuery in production.

`Warehouse` is what the pipeline asks of a warehouse and nothing about any one tool: the
SQL operations it needs (inspect a table, load a lake checkpoint into staging, build an
audit table, publish atomically, export and restore a version), its SQL spellings
(`dialect`), a session for a unit of work (`session(purpose)`) and how tools reach it through
SQLAlchemy. Each implementation wraps Dagster's own DuckDB / BigQuery resource, and Python
assets store their outputs through the matching Dagster IO manager. Which warehouse, with
which executor, pool and lock, is decided in one place: `deployment.warehouse_deployment`.
Each tool's adapter lives with its tool and asks the warehouse only what is
warehouse-specific: GX in `quality/gx_datasource.py`, dbt's in-process connections in
`transform/dbt_connections.py`, the Airbyte server's destination in
`ingestion/airbyte_setup.py`.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource

from mlstack_assets.warehouse.dialect import SqlDialect, sql_dialect

if TYPE_CHECKING:
    from mlstack_assets.lake import Lake
    from mlstack_assets.lake.checkpoints import Checkpoint

TableColumns = list[tuple[str, str]]


@dataclass(frozen=True)
class Exported:
    """A relation written to the lake as one Parquet file."""

    rows: int
    columns: list[list[str]]
    sha256: str


class Warehouse(ConfigurableResource):
    """What the pipeline asks of a warehouse, whichever it is."""

    dataset: str

    @property
    def kind(self) -> str:
        raise NotImplementedError

    @property
    def dialect(self) -> SqlDialect:
        return sql_dialect(self.kind)

    @property
    def staging_dataset(self) -> str:
        return f"{self.dataset}_staging"

    @property
    def audit_dataset(self) -> str:
        """Where tables are built and checked before they replace the published ones (the
        ML tables, and dbt's models: the profile's schema is this dataset): readers never look
        there."""
        return f"{self.dataset}_audit"

    @contextmanager
    def session(self, purpose: str = "") -> Iterator[None]:
        """One unit of work whose reads and writes must be seen together, as a database session's
        transaction is: the caller names it and the warehouse takes what that needs. Each
        operation also takes it on its own; sessions nest (re-entrant).

        DuckDB holds its file lock for the session (one writer at a time, bounded wait);
        `purpose` (e.g. "publish tags") is what a process waiting for it is told. BigQuery
        holds nothing: each of its jobs is atomic, but a session of several jobs is not
        isolated there (docs/architecture.md, "What one session covers")."""
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
        return self.query(f"select count(*) from {self.qualified(schema, table)}")[0][0]

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

    def stage_checkpoint(self, table: str, checkpoint: "Checkpoint") -> None:
        """Replace `<staging>.<table>` by the checkpoint's Parquet file, in one step."""
        raise NotImplementedError

    def export_relation(self, schema: str, table: str, lake: "Lake", data_key: str) -> Exported:
        """Write `<schema>.<table>` to the lake as the Parquet file `data_key` (a new key);
        return its rows, columns and sha256. DuckDB: COPY to a local file, then into the
        lake; BigQuery: an extract job straight to its `gs://` URI."""
        raise NotImplementedError

    def restore_table(self, table: str, uri: str, lake: "Lake") -> None:
        """Replace `<dataset>.<table>` by the Parquet file at `uri`, atomically (a rollback)."""
        raise NotImplementedError

    def sqlalchemy_url(self, schema: str) -> str:
        """The SQLAlchemy URL of the warehouse, for tools that read it through SQLAlchemy
        (GX: `quality/gx_datasource.py`); `schema` is the default schema where that matters."""
        raise NotImplementedError

    def prepare_sqlalchemy_engine(self, engine: Any) -> None:
        """Set up what every connection of a tool's SQLAlchemy `engine` must have (nothing,
        unless the warehouse needs it)."""

    def build_audit_table(self, table: str, sql: str) -> str:
        """Build `<audit>.<table>` from `sql`, replacing any earlier one; return its SQL name.

        The same statement on both warehouses; nothing published is touched.
        """
        self.ensure_dataset(self.audit_dataset)
        name = self.qualified(self.audit_dataset, table)
        self.query(f"create or replace table {name} as\n{sql}")
        return name
