"""The warehouse behind every asset: DuckDB by default, BigQuery in production.

`Warehouse` is what the pipeline asks of a warehouse, and nothing about any one tool:
inspect a table, load a checkpoint into staging, build an audit table, publish atomically,
export a relation to the lake and restore one from it, its SQL spellings (`dialect`), a
session for a unit of work (`session(purpose)`), and its SQLAlchemy URL for the tools that
read it that way (GX). Which warehouse, with which executor and IO manager, is decided in
one place: `deployment.warehouse_deployment`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource

from mlstack_assets.settings import audit_dataset, staging_dataset
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
        return staging_dataset(self.dataset)

    @property
    def audit_dataset(self) -> str:
        return audit_dataset(self.dataset)

    @contextmanager
    def session(self, purpose: str = "") -> Iterator[None]:
        """One unit of work whose reads and writes must be seen together, as a database
        transaction is: the caller names it, the warehouse takes what that needs. Sessions
        nest. DuckDB holds its file lock for the session (`purpose` is what a process waiting
        for it is told); BigQuery holds nothing: each job is atomic, a session of several
        is not isolated (docs/architecture.md)."""
        yield

    def qualified(self, schema: str, table: str) -> str:
        raise NotImplementedError

    def query(self, sql: str) -> list[tuple]:
        """Run SQL in the warehouse; for small results (counts, aggregates, a few rows)."""
        raise NotImplementedError

    def table_columns(self, schema: str, table: str) -> TableColumns | None:
        """Column names and types, or None when the table does not exist."""
        raise NotImplementedError

    def row_count(self, schema: str, table: str) -> int:
        return self.query(f"select count(*) from {self.qualified(schema, table)}")[0][0]

    def ensure_dataset(self, dataset: str) -> None:
        raise NotImplementedError

    def stage_checkpoint(self, table: str, checkpoint: Checkpoint) -> None:
        """Replace `<staging>.<table>` by the checkpoint's Parquet file, in one step."""
        raise NotImplementedError

    def export_relation(self, schema: str, table: str, lake: Lake, data_key: str) -> Exported:
        """Write `<schema>.<table>` to the lake as the Parquet file `data_key` (a new key)."""
        raise NotImplementedError

    def restore_table(self, table: str, uri: str, lake: Lake) -> None:
        """Replace `<dataset>.<table>` by the Parquet file at `uri`, atomically."""
        raise NotImplementedError

    def publish_relations(
        self, source_schema: str, tables: list[str], views: dict[str, str] | None = None
    ) -> None:
        """Replace `<dataset>.<table>` by `<source_schema>.<table>` for each table and
        (re)create each view in `<dataset>` from its SQL, as atomically as the warehouse
        can: DuckDB in one transaction, BigQuery one atomic job per relation."""
        raise NotImplementedError

    def build_audit_table(self, table: str, sql: str) -> str:
        """Build `<audit>.<table>` from `sql`, replacing any earlier one; its SQL name.
        Nothing published is touched."""
        self.ensure_dataset(self.audit_dataset)
        name = self.qualified(self.audit_dataset, table)
        self.query(f"create or replace table {name} as\n{sql}")
        return name

    def sqlalchemy_url(self, schema: str) -> str:
        raise NotImplementedError

    def prepare_sqlalchemy_engine(self, engine: Any) -> None:
        """Set up what every connection of a tool's SQLAlchemy `engine` must have."""
