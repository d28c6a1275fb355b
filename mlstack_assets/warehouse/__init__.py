"""The warehouse behind every asset, DuckDB by default, BigQuery in production: `Warehouse` is
what the pipeline asks of one; `deployment.warehouse_deployment` decides which one."""

from abc import abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from dagster import ConfigurableResource

from mlstack_assets.settings import DatasetNames
from mlstack_assets.warehouse.dialect import SqlDialect, sql_dialect

if TYPE_CHECKING:
    from mlstack_assets.lake import Entry, Lake
    from mlstack_assets.lake.checkpoints import Checkpoint

TableColumns = list[tuple[str, str]]
Views = dict[str, str] | None  # view name -> its SQL
Hook = Callable[[], None] | None


@dataclass(frozen=True)
class Exported:
    """A relation written to the lake as one Parquet file."""

    rows: int
    columns: list[list[str]]
    sha256: str


class Warehouse(DatasetNames, ConfigurableResource):
    """What the pipeline asks of a warehouse, whichever it is."""

    dataset: str
    kind: ClassVar[str]  # "duckdb" or "bigquery", which names its SQL spellings (`dialect`)

    @abstractmethod  # the SQL name of `<schema>.<table>`
    def qualified(self, schema: str, table: str) -> str: ...
    @abstractmethod  # run SQL; for small results (counts, aggregates, a few rows)
    def query(self, sql: str) -> list[tuple]: ...
    @abstractmethod  # column names and types, or None when the table does not exist
    def table_columns(self, schema: str, table: str) -> TableColumns | None: ...
    @abstractmethod  # create the dataset (a schema in DuckDB) unless it exists
    def ensure_dataset(self, dataset: str) -> None: ...
    @abstractmethod  # replace `<schema>.<table>` by the Parquet file at `uri`, in one step
    def load_parquet(self, schema: str, table: str, uri: str, lake: "Lake") -> None: ...
    @abstractmethod  # write `<schema>.<table>` to the lake as the Parquet file `data_key` (new)
    def export_relation(self, schema: str, table: str, lake: "Lake", data_key: str) -> Exported: ...
    @abstractmethod  # its SQLAlchemy URL, for the tools that read it that way (GX)
    def sqlalchemy_url(self, schema: str) -> str: ...

    @abstractmethod  # replace tables by `<source_schema>`'s, (re)create views: atomically as it
    def publish_relations(  # can; `before_commit` last, in the transaction where there is one
        self, source_schema: str, tables: list[str], views: Views = None, before_commit: Hook = None
    ) -> None: ...

    @property
    def dialect(self) -> SqlDialect:
        return sql_dialect(self.kind)

    @contextmanager
    def session(self, purpose: str = "") -> Iterator[None]:
        """A unit of work whose reads and writes are seen together; nests. DuckDB holds its lock
        (`purpose` tells waiters); BigQuery nothing: a session of atomic jobs is not isolated."""
        yield

    def stage_parquet(self, table: str, uri: str, lake: "Lake", columns: TableColumns) -> None:
        """Replace `<staging>.<table>` by the Parquet file at `uri` (`columns`: what it holds)."""
        self.load_parquet(self.staging_dataset, table, uri, lake)

    def stage_checkpoint(self, table: str, checkpoint: "Checkpoint") -> None:
        """Replace `<staging>.<table>` by the checkpoint's Parquet file."""
        self.stage_parquet(table, checkpoint.data_uri, checkpoint.lake, checkpoint.columns)

    def restore_table(self, version: "Entry", before_commit: Callable[[], None]) -> None:
        """Replace the published table by a version's Parquet file, staged then published."""
        table = version.manifest["table"]
        self.stage_parquet(table, version.data_uri, version.lake, version.columns)
        self.publish_relations(self.staging_dataset, [table], before_commit=before_commit)

    def row_count(self, schema: str, table: str) -> int:
        return self.query(f"select count(*) from {self.qualified(schema, table)}")[0][0]

    def build_audit_table(self, table: str, sql: str) -> str:
        """Build (or replace) `<audit>.<table>` from `sql`, touching nothing published; its name."""
        self.ensure_dataset(self.audit_dataset)
        name = self.qualified(self.audit_dataset, table)
        self.query(f"create or replace table {name} as\n{sql}")
        return name

    def prepare_sqlalchemy_engine(self, engine: Any) -> None:
        """Set up what every connection of a tool's SQLAlchemy `engine` must have."""
