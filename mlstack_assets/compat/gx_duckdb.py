"""A GX SQL datasource for DuckDB that keeps its connection open while it validates.

GX's generic SQL engine runs each metric query on a fresh connection and reads the rows
after closing it. SQLAlchemy rolls back on close, and DuckDB drops a pending result on
rollback, so every metric came back empty ("list index out of range"). GX already keeps
one connection open for SQLite, SQL Server, BigQuery and Databricks for similar reasons;
this datasource does the same for DuckDB. Queries still run inside DuckDB: nothing but
metric values and a few sample rows reach Python. Call `close()` when done, so the file
is free for the next writer.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, Type  # noqa: UP035  (`type` is a field name in the class body)

from great_expectations.datasource.fluent.sql_datasource import SQLDatasource
from great_expectations.execution_engine.sqlalchemy_execution_engine import (
    SqlAlchemyExecutionEngine,
)


class DuckDBExecutionEngine(SqlAlchemyExecutionEngine):
    @contextmanager
    def get_connection(self) -> Iterator:
        if self._connection is None:
            self._connection = self.engine.connect()
        yield self._connection

    def close(self) -> None:
        # The base class only disposes the pool, which leaves a checked-out connection open.
        if self._connection is not None:
            self._connection.close()
            self._connection = None
        super().close()


class DuckDBDatasource(SQLDatasource):
    """Registered with GX as `context.data_sources.add_mlstack_duckdb(...)`.

    The type name is ours, not GX's bare database name: GX registers datasource types by
    name at import and refuses a second one, so a DuckDB datasource in a later GX release
    would collide with ours and stop the package from importing.
    """

    type: Literal["mlstack_duckdb"] = "mlstack_duckdb"  # type: ignore[assignment]

    @property
    def execution_engine_type(self) -> Type[SqlAlchemyExecutionEngine]:  # noqa: UP006
        return DuckDBExecutionEngine
