"""One bundle per warehouse: its resources, the executor, the pool and the lock, decided together.

Why one bundle: they are one decision, and made apart they drifted (the executor was picked
in `definitions.py`, the pool and "steps share a process" in `settings.py`, the lock in
each asset). Like the per-deployment resources of hooli-data-eng-pipelines and
dagster-open-platform, `warehouse_deployment(settings)` is the one place that says, for
the configured warehouse:

- **DuckDB**, one file that takes one writer process at a time: a run's steps execute in
  one process (the in-process executor; a process per step would add a process start and a
  code-location load to every step for no parallel write); every step that opens the file
  is in the `duckdb_warehouse` pool (one slot, across runs: `deploy/dagster.yaml`), whose
  waits are bounded and free what dead runs held (`compat/executor.py`); and the warehouse
  holds the file's lock itself (`DuckDBWarehouse.session`), bounded by
  `MLSTACK_LOCK_TIMEOUT_SECONDS`, for processes outside Dagster (`mlstack rollback`).
- **BigQuery**, a service: steps run in parallel processes, no pool, no lock.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dagster import ExecutorDefinition, multiprocess_executor

from mlstack_assets.settings import Settings

if TYPE_CHECKING:
    from mlstack_assets.warehouse import Warehouse

DUCKDB_POOL = "duckdb_warehouse"


@dataclass(frozen=True)
class WarehouseDeployment:
    """How a run uses the configured warehouse."""

    kind: str  # "duckdb" or "bigquery"
    resources: dict[str, Any]  # `warehouse` and the `io_manager` of the Python assets
    executor: ExecutorDefinition
    pool: str | None  # the concurrency pool of every step that touches the warehouse
    steps_share_a_process: bool  # so the raw steps' extracts can start together

    @property
    def warehouse(self) -> Warehouse:
        return self.resources["warehouse"]


def warehouse_deployment(settings: Settings) -> WarehouseDeployment:
    """The bundle of the configured warehouse (the BigQuery modules are imported only when it
    is chosen: their client libraries are slow to load)."""
    if settings.warehouse == "bigquery":
        from mlstack_assets.warehouse.bigquery import build_bigquery_resources

        return WarehouseDeployment(
            kind="bigquery",
            resources=build_bigquery_resources(settings),
            executor=multiprocess_executor,
            pool=None,
            steps_share_a_process=False,
        )
    from mlstack_assets.compat.executor import warehouse_in_process_executor
    from mlstack_assets.warehouse.duckdb import build_duckdb_resources

    return WarehouseDeployment(
        kind="duckdb",
        resources=build_duckdb_resources(settings),
        executor=warehouse_in_process_executor(settings.pool_timeout_seconds),
        pool=DUCKDB_POOL,
        steps_share_a_process=True,
    )
