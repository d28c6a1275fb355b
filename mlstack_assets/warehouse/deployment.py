"""One bundle per warehouse: its resources and its executor, decided together.

Like the per-deployment resources of hooli-data-eng-pipelines and dagster-open-platform,
`warehouse_deployment(settings)` is the one place that says, for the configured warehouse:

- **DuckDB**, one file that takes one writer process at a time: a run's steps execute in
  one process, one after the other (Dagster's in-process executor: a process per step
  would add a process start and a code-location load to every step for no parallel
  write), and every user of the file holds its lock (`warehouse/duckdb.py`), which queues
  concurrent runs and `mlstack rollback`, bounded and saying for whom.
- **BigQuery**, a service: steps run in parallel processes, nothing is locked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Warehouse


@dataclass(frozen=True)
class WarehouseDeployment:
    """How a run uses the configured warehouse."""

    kind: str  # "duckdb" or "bigquery"
    resources: dict[str, Any]  # `warehouse`, and `io_manager` for tables as DataFrames
    executor: ExecutorDefinition

    @property
    def warehouse(self) -> Warehouse:
        return self.resources["warehouse"]


def warehouse_deployment(settings: Settings) -> WarehouseDeployment:
    """The configured warehouse's bundle (BigQuery's client libraries, slow to import, are
    imported only when it is chosen)."""
    if settings.warehouse == "bigquery":
        from mlstack_assets.warehouse.bigquery import build_bigquery_resources

        return WarehouseDeployment(
            "bigquery", build_bigquery_resources(settings), multiprocess_executor
        )
    from mlstack_assets.warehouse.duckdb import build_duckdb_resources

    return WarehouseDeployment("duckdb", build_duckdb_resources(settings), in_process_executor)
