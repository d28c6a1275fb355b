"""Tables that stay in the warehouse while Python assets pass them around.

An ML asset builds its table in the audit dataset, audits it, and returns an
`AuditedTable`: the IO manager publishes it through the one audited publish
(`publish.py`: a version in the lake, the atomic replace of `<dataset>.<asset>`) and
records the published table's metadata. That is where the IO manager and the audited
publish meet; an input annotated `WarehouseTable` then arrives as the published table's
name, not its rows.

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
class AuditedTable:
    """An audited table for the IO manager to publish (`publish.publish_audited`).

    `count_by` names columns to count the published table's rows by, for the metadata."""

    subject: str
    candidate: Any  # publish.Candidate
    audit: Any  # quality.outcomes.Audit (passed)
    policy: Any  # publish.Policy
    count_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class WarehouseQuery:
    """A SELECT that the IO manager materializes as the asset's table.

    `count_by` names columns to count the built table's rows by, for the metadata (one
    GROUP BY on the table, instead of computing the query a second time).
    """

    sql: str
    count_by: tuple[str, ...] = ()


def table_metadata(
    rows: int, columns: list[tuple[str, str]], table: str, counts: list[tuple] | None, count_by
) -> dict[str, Any]:
    """Row count, column schema and table name (and rows per `count_by` values)."""
    metadata: dict[str, Any] = {
        "dagster/row_count": rows,
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name=column, type=dtype) for column, dtype in columns]
        ),
        "dagster/table_name": table,
    }
    if count_by and counts is not None:
        metadata[f"rows_per_{'_and_'.join(count_by)}"] = MetadataValue.table(
            records=[
                TableRecord({**dict(zip(count_by, row[:-1], strict=True)), "rows": int(row[-1])})
                for row in counts
            ],
            schema=TableSchema(
                columns=[
                    *(TableColumn(key, "string") for key in count_by),
                    TableColumn("rows", "int"),
                ]
            ),
        )
    return metadata


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
        return [WarehouseQuery, WarehouseTable, AuditedTable]

    def handle_output(
        self, context: OutputContext, table_slice: TableSlice, obj: WarehouseQuery, connection
    ) -> dict[str, Any]:
        name = self.sql_name(table_slice)
        self.execute(connection, f"create or replace table {name} as\n{obj.sql}")
        [(rows,)] = self.execute(connection, f"select count(*) from {name}")
        counts = None
        if obj.count_by:
            keys = ", ".join(obj.count_by)
            counts = self.execute(
                connection, f"select {keys}, count(*) from {name} group by {keys} order by {keys}"
            )
        return table_metadata(
            rows,
            self.columns(connection, table_slice),
            f"{table_slice.schema}.{table_slice.table}",
            counts,
            obj.count_by,
        )

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
    """`DbIOManager` whose `WarehouseQuery` outputs replace their table in one statement,
    and whose `AuditedTable` outputs go through the one audited publish."""

    def __init__(self, *args: Any, warehouse: Any = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._warehouse = warehouse

    def handle_output(self, context: OutputContext, obj: object) -> None:
        if isinstance(obj, AuditedTable):
            return self._publish(context, obj)
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

    def _publish(self, context: OutputContext, obj: AuditedTable) -> None:
        from mlstack_assets.publish import publish_audited

        warehouse = self._warehouse
        _, published = publish_audited(
            obj.subject, [obj.candidate], obj.audit, warehouse, obj.policy, context.run_id,
            context.log.warning,
        )  # fmt: skip
        table = obj.candidate.table
        relation = warehouse.qualified(warehouse.dataset, table)
        counts = None
        if obj.count_by:
            keys = ", ".join(obj.count_by)
            counts = warehouse.query(
                f"select {keys}, count(*) from {relation} group by {keys} order by {keys}"
            )
        context.add_output_metadata(
            {
                **table_metadata(
                    warehouse.row_count(warehouse.dataset, table),
                    warehouse.table_columns(warehouse.dataset, table) or [],
                    f"{warehouse.dataset}.{table}",
                    counts,
                    obj.count_by,
                ),
                **published[obj.candidate.key],
            }
        )
