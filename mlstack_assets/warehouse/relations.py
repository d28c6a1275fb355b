"""Tables that stay in the warehouse while Python assets pass them around.

A Python asset that returns a `WarehouseQuery` gets its table built by the IO manager
with `CREATE OR REPLACE TABLE ... AS <query>`, inside the warehouse; an input annotated
`WarehouseTable` arrives as the upstream table's name, not its rows. So the ML assets
read and write through the IO manager like any pandas asset, at any table size. The
same IO managers still store and load pandas DataFrames.

Dagster's `DbIOManager` deletes a table's rows before its type handler writes (DELETE on
DuckDB, TRUNCATE on BigQuery, each committed on its own: dagster issue #14091), so a
build that fails or is killed in between leaves the table empty. `ReplacingDbIOManager`
skips that delete for `WarehouseQuery` outputs: their one `CREATE OR REPLACE TABLE ... AS`
statement is the whole write, atomic on both warehouses.
"""

from dataclasses import dataclass
from typing import Any

from dagster import (
    Failure,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableRecord,
    TableSchema,
)

from mlstack_assets.compat.db_io_manager import DbIOManager, DbTypeHandler, TableSlice


@dataclass(frozen=True)
class WarehouseTable:
    """A table by name; `sql_name` is how the warehouse's SQL refers to it."""

    sql_name: str
    schema: str
    table: str

    def __str__(self) -> str:
        return self.sql_name


@dataclass(frozen=True)
class WarehouseQuery:
    """A SELECT that the IO manager materializes as the asset's table.

    `count_by` names columns to count the built table's rows by, for the metadata (one
    GROUP BY on the table, instead of computing the query a second time).
    """

    sql: str
    count_by: tuple[str, ...] = ()


class RelationTypeHandler(DbTypeHandler):
    """Shared logic; each warehouse supplies quoting, execution and introspection."""

    def sql_name(self, table_slice: TableSlice) -> str:
        raise NotImplementedError

    def execute(self, connection: Any, sql: str) -> list[tuple]:
        raise NotImplementedError

    def columns(self, connection: Any, table_slice: TableSlice) -> list[tuple[str, str]]:
        raise NotImplementedError

    @property
    def supported_types(self) -> list[type]:
        return [WarehouseQuery, WarehouseTable]

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: WarehouseQuery, connection
    ) -> dict[str, Any]:
        name = self.sql_name(table_slice)
        self.execute(connection, f"create or replace table {name} as\n{obj.sql}")
        [(rows,)] = self.execute(connection, f"select count(*) from {name}")
        columns = self.columns(connection, table_slice)
        metadata: dict[str, Any] = {
            "dagster/row_count": rows,
            "dagster/column_schema": TableSchema(
                columns=[TableColumn(name=column, type=dtype) for column, dtype in columns]
            ),
            "dagster/table_name": f"{table_slice.schema}.{table_slice.table}",
        }
        if obj.count_by:
            keys = ", ".join(obj.count_by)
            counts = self.execute(
                connection, f"select {keys}, count(*) from {name} group by {keys} order by {keys}"
            )
            metadata[f"rows_per_{'_and_'.join(obj.count_by)}"] = MetadataValue.table(
                records=[
                    TableRecord(
                        {**dict(zip(obj.count_by, row[:-1], strict=True)), "rows": int(row[-1])}
                    )
                    for row in counts
                ],
                schema=TableSchema(
                    columns=[
                        *(TableColumn(key, "string") for key in obj.count_by),
                        TableColumn("rows", "int"),
                    ]
                ),
            )
        return metadata

    def load_input(
        self, context: InputContext, table_slice: TableSlice, connection
    ) -> WarehouseTable:
        """The upstream table, by name; a step whose upstream table does not exist yet fails
        here, before any SQL, naming what to materialize first."""
        if not self.columns(connection, table_slice):
            upstream = context.asset_key.to_user_string()
            step = context.op_def.name if context.op_def is not None else "this step"
            raise Failure(
                description=(
                    f"{step}: nothing was built: its upstream {upstream}"
                    f" ({table_slice.schema}.{table_slice.table}) does not exist yet."
                    f" Materialize it first, or with its upstream: --select '+{step}'"
                    f" (dg launch --assets '+{step}')"
                ),
                metadata={"missing_upstream": [upstream]},
                allow_retries=False,
            )
        return WarehouseTable(self.sql_name(table_slice), table_slice.schema, table_slice.table)


class ReplacingDbIOManager(DbIOManager):
    """`DbIOManager` whose `WarehouseQuery` outputs replace their table in one statement."""

    def handle_output(self, context: OutputContext, obj: object) -> None:
        if not isinstance(obj, WarehouseQuery):
            return super().handle_output(context, obj)
        table_slice = self._get_table_slice(context, context)
        with self._db_client.connect(context, table_slice) as connection:
            self._db_client.ensure_schema_exists(context, table_slice, connection)
            # no delete_table_slice here: the published rows stay until the replace commits
            metadata = self._resolve_handler(WarehouseQuery).handle_output(
                context, table_slice, obj, connection
            )
        context.add_output_metadata(
            {**metadata, "Query": self._db_client.get_select_statement(table_slice)}
        )
