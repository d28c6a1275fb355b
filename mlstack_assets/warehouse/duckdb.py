"""DuckDB: one file, one writer process at a time, so every user of it holds a file lock."""

import fcntl
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_duckdb import DuckDBResource
from dagster_duckdb.io_manager import DuckDbClient
from dagster_duckdb_pandas import DuckDBPandasIOManager, DuckDBPandasTypeHandler

from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import TableColumns, Warehouse
from mlstack_assets.warehouse.relations import RelationTypeHandler, ReplacingDbIOManager


class _ProcessFileLock:
    """An exclusive lock on a file, held by one process at a time, re-entrant inside it.

    DuckDB lets one process open a database file for writing; a second writer (or reader)
    fails with "Could not set lock on file". Every step that touches the file holds this
    lock, so concurrent runs queue instead of failing, whatever the Dagster instance.
    """

    def __init__(self, path: Path):
        self._path = path
        self._thread_lock = threading.RLock()
        self._depth = 0
        self._handle: Any = None

    @contextmanager
    def hold(self) -> Iterator[None]:
        with self._thread_lock:
            if self._depth == 0:
                self._path.parent.mkdir(parents=True, exist_ok=True)
                self._handle = self._path.open("w")
                fcntl.flock(self._handle, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0:
                    self._handle.close()  # closing releases the flock
                    self._handle = None


_FILE_LOCKS: dict[Path, _ProcessFileLock] = {}
_FILE_LOCKS_GUARD = threading.Lock()


def duckdb_file_lock(database: str | Path) -> _ProcessFileLock:
    path = Path(f"{Path(database).resolve()}.lock")
    with _FILE_LOCKS_GUARD:
        return _FILE_LOCKS.setdefault(path, _ProcessFileLock(path))


class DuckDBWarehouse(Warehouse):
    """A DuckDB file; publishing is one `CREATE OR REPLACE TABLE` transaction."""

    duckdb: DuckDBResource

    @property
    def kind(self) -> str:
        return "duckdb"

    @property
    def path(self) -> str:
        return self.duckdb.database

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with duckdb_file_lock(self.path).hold():
            yield

    @contextmanager
    def connection(self) -> Iterator[Any]:
        with self.exclusive(), self.duckdb.get_connection() as conn:
            yield conn

    def qualified(self, schema: str, table: str) -> str:
        return f'"{schema}"."{table}"'

    def query(self, sql: str, parameters: Sequence[Any] = ()) -> list[tuple]:
        with self.connection() as conn:
            return conn.execute(sql, list(parameters)).fetchall()

    def table_columns(self, schema: str, table: str) -> TableColumns | None:
        rows = self.query(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = ? and table_name = ? order by ordinal_position",
            (schema, table),
        )
        return [(name, dtype) for name, dtype in rows] or None

    def row_count(self, schema: str, table: str) -> int:
        return self.query(f"select count(*) from {self.qualified(schema, table)}")[0][0]

    def drop_staged(self, table: str) -> None:
        with self.connection() as conn:
            conn.execute(f"drop table if exists {self.qualified(self.staging_dataset, table)}")

    def ensure_dataset(self, dataset: str) -> None:
        self.query(f'create schema if not exists "{dataset}"')

    def publish_relations(
        self, source_schema: str, tables: list[str], views: dict[str, str] | None = None
    ) -> None:
        self.ensure_dataset(self.dataset)
        with self.connection() as conn:
            conn.execute("begin transaction")
            try:
                for name, sql in (views or {}).items():
                    conn.execute(
                        f"create or replace view {self.qualified(self.dataset, name)} as {sql}"
                    )
                for table in tables:
                    conn.execute(
                        f"create or replace table {self.qualified(self.dataset, table)} as"
                        f" select * from {self.qualified(source_schema, table)}"
                    )
                conn.execute("commit")
            except Exception:
                conn.execute("rollback")
                raise


class DuckDBRelationTypeHandler(RelationTypeHandler):
    def sql_name(self, table_slice: TableSlice) -> str:
        return f'"{table_slice.schema}"."{table_slice.table}"'

    def execute(self, connection: Any, sql: str) -> list[tuple]:
        return connection.execute(sql).fetchall()

    def columns(self, connection: Any, table_slice: TableSlice) -> list[tuple[str, str]]:
        return connection.execute(
            "select column_name, data_type from information_schema.columns"
            " where table_schema = ? and table_name = ? order by ordinal_position",
            [table_slice.schema, table_slice.table],
        ).fetchall()


class _LockingDuckDbClient(DuckDbClient):
    """Dagster's DuckDB client, holding the warehouse file lock while connected."""

    @staticmethod
    @contextmanager
    def connect(context, table_slice):  # type: ignore[override]
        lock = duckdb_file_lock(context.resource_config["database"])
        with lock.hold(), DuckDbClient.connect(context, table_slice) as conn:
            yield conn


class WarehouseDuckDBIOManager(DuckDBPandasIOManager):
    """`DuckDBPandasIOManager` that also materializes `WarehouseQuery` outputs in DuckDB
    (in one statement, see `ReplacingDbIOManager`), and queues on the warehouse file lock
    instead of failing."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [DuckDBPandasTypeHandler(), DuckDBRelationTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return ReplacingDbIOManager(
            db_client=_LockingDuckDbClient(),
            database=self.database,
            schema=self.schema_,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
            io_manager_name="WarehouseDuckDBIOManager",
        )


def build_duckdb_resources(settings: Settings) -> dict[str, Any]:
    database = str(settings.duckdb_path)
    return {
        "warehouse": DuckDBWarehouse(
            dataset=settings.dataset, duckdb=DuckDBResource(database=database)
        ),
        "io_manager": WarehouseDuckDBIOManager(database=database, schema=settings.dataset),
    }
