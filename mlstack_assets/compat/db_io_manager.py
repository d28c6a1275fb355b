"""Dagster's database IO manager machinery, which mlstack's IO managers build on.

Why private: `dagster._core.storage.db_io_manager` (`DbIOManager`, `DbTypeHandler`,
`TableSlice`) is what dagster-duckdb's and dagster-gcp's own IO managers are made of, and
the only way to store a `WarehouseQuery` output as one `CREATE OR REPLACE TABLE ... AS`
in the warehouse (no DataFrame in Python, no delete-before-write: dagster issue #14091).
`tests/unit/test_compat.py` checks the methods mlstack overrides are still there.
"""

from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice

__all__ = ["DbIOManager", "DbTypeHandler", "TableSlice"]
