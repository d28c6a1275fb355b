"""A GX SQL datasource for DuckDB that keeps its connection open while it validates.

GX's generic SQL engine reads each metric's rows after closing its connection; SQLAlchemy
rolls back on close and DuckDB drops a pending result on rollback, so every metric came back
empty ("list index out of range"). GX keeps one connection for SQLite, BigQuery and others
already. Call `close()` when done, so the file is free for the next writer.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal, Type  # noqa: UP035  (`type` is a field name in the class body)

from great_expectations.datasource.fluent.sql_datasource import SQLDatasource
from great_expectations.execution_engine import SqlAlchemyExecutionEngine


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
    """`context.data_sources.add_mlstack_duckdb(...)`. Not named `duckdb`: GX refuses a second
    type of one name at import, so a DuckDB datasource in a later GX would stop ours loading."""

    type: Literal["mlstack_duckdb"] = "mlstack_duckdb"  # type: ignore[assignment]

    @property
    def execution_engine_type(self) -> Type[SqlAlchemyExecutionEngine]:  # noqa: UP006
        return DuckDBExecutionEngine
