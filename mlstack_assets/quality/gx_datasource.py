"""The GX datasource that audits a table where it is, in the configured warehouse.

GX's part of the warehouse seam lives here, with GX: which GX datasource type reads which
warehouse. From the warehouse it asks only what is warehouse-specific: its SQLAlchemy URL
and what every engine on it must be set up with (`Warehouse.prepare_sqlalchemy_engine`:
DuckDB's memory cap).
"""

from __future__ import annotations

from typing import Any

from mlstack_assets.warehouse import Warehouse


def gx_table_asset(context: Any, warehouse: Warehouse, schema: str, table: str) -> tuple[Any, Any]:
    """A GX SQL datasource on `warehouse` in GX `context`, and its table asset for
    `<schema>.<table>`. The caller closes the datasource's engine when done."""
    url = warehouse.sqlalchemy_url(schema)
    if warehouse.kind == "bigquery":
        datasource = context.data_sources.add_bigquery(name="warehouse", connection_string=url)
        return datasource, datasource.add_table_asset(name=table, table_name=table)
    from mlstack_assets.compat import gx_duckdb  # noqa: F401  registers add_mlstack_duckdb

    datasource = context.data_sources.add_mlstack_duckdb(name="warehouse", connection_string=url)
    # GX's metric queries run on its execution engine's own SQLAlchemy engine
    warehouse.prepare_sqlalchemy_engine(datasource.get_execution_engine().engine)
    return datasource, datasource.add_table_asset(name=table, table_name=table, schema_name=schema)
