"""A warehouse's resources and executor, decided together (as in hooli-data-eng-pipelines). DuckDB
takes one writer process: a run's steps run in one (a process per step adds a start and a code
load to each, for no parallel write), queueing on the file's lock. BigQuery: parallel, no lock."""

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
    """The configured warehouse's bundle; BigQuery's slow client libraries imported only then."""
    if settings.warehouse == "bigquery":
        from mlstack_assets.warehouse.bigquery import build_bigquery_resources

        resources = build_bigquery_resources(settings)
        return WarehouseDeployment("bigquery", resources, multiprocess_executor)
    from mlstack_assets.warehouse.duckdb import build_duckdb_resources

    return WarehouseDeployment("duckdb", build_duckdb_resources(settings), in_process_executor)
