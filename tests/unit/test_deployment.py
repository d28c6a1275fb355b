"""One bundle per warehouse: DuckDB runs execute in one process and queue on the file's
lock; BigQuery runs spread over processes, with nothing locked."""

from dagster import multiprocess_executor

from mlstack_assets.warehouse.deployment import warehouse_deployment
from mlstack_assets.warehouse.duckdb import DuckDBWarehouse
from tests.support.settings import settings_from


def test_duckdb_steps_share_a_process_and_the_lock_wait_is_the_configured_one(tmp_path):
    deployment = warehouse_deployment(
        settings_from(
            {
                "MLSTACK_DUCKDB_PATH": str(tmp_path / "warehouse.duckdb"),
                "MLSTACK_LOCK_TIMEOUT_SECONDS": "7",
            }
        )
    )
    assert deployment.kind == "duckdb"
    assert deployment.executor.name == "in_process"
    assert isinstance(deployment.warehouse, DuckDBWarehouse)
    assert deployment.warehouse.lock_timeout_seconds == 7
    assert deployment.resources["io_manager"].lock_timeout_seconds == 7


def test_bigquery_steps_run_in_parallel_processes():
    deployment = warehouse_deployment(
        settings_from(
            {
                "MLSTACK_WAREHOUSE": "bigquery",
                "MLSTACK_BQ_PROJECT": "some-project",
                "MLSTACK_LAKE": "gs://some-bucket/lake",
            }
        )
    )
    assert deployment.kind == "bigquery"
    assert deployment.executor is multiprocess_executor
    assert deployment.warehouse.sqlalchemy_url("ds") == "bigquery://some-project/ds"
