"""One bundle per warehouse: DuckDB runs share a process and queue on one pool; BigQuery
runs spread over processes with no pool; every step that touches DuckDB is in its pool."""

import pytest
from dagster import multiprocess_executor

from mlstack_assets.settings import load_settings
from mlstack_assets.warehouse.deployment import DUCKDB_POOL, warehouse_deployment
from mlstack_assets.warehouse.duckdb import DuckDBWarehouse


@pytest.fixture
def duckdb_env(tmp_path, monkeypatch):
    monkeypatch.setenv("MLSTACK_WAREHOUSE", "duckdb")
    # the file's name is dbt's database name: the one the parsed manifest has
    monkeypatch.setenv("MLSTACK_DUCKDB_PATH", str(tmp_path / "warehouse.duckdb"))
    monkeypatch.setenv("MLSTACK_LAKE", str(tmp_path / "lake"))


def test_duckdb_steps_share_a_process_and_one_bounded_pool(duckdb_env, monkeypatch):
    monkeypatch.setenv("MLSTACK_LOCK_TIMEOUT_SECONDS", "7")
    deployment = warehouse_deployment(load_settings())
    shape = (deployment.kind, deployment.pool, deployment.steps_share_a_process)
    assert shape == ("duckdb", DUCKDB_POOL, True)
    assert deployment.executor.name == "in_process"
    assert isinstance(deployment.warehouse, DuckDBWarehouse)
    assert deployment.warehouse.lock_timeout_seconds == 7
    assert deployment.resources["io_manager"].lock_timeout_seconds == 7


def test_bigquery_steps_run_in_parallel_processes_with_no_pool(monkeypatch, tmp_path):
    monkeypatch.setenv("MLSTACK_WAREHOUSE", "bigquery")
    monkeypatch.setenv("MLSTACK_BQ_PROJECT", "some-project")
    monkeypatch.setenv("MLSTACK_LAKE", "gs://some-bucket/lake")
    deployment = warehouse_deployment(load_settings())
    shape = (deployment.kind, deployment.pool, deployment.steps_share_a_process)
    assert shape == ("bigquery", None, False)
    assert deployment.executor is multiprocess_executor
    assert deployment.warehouse.sqlalchemy_url("ds") == "bigquery://some-project/ds"


def test_every_step_that_opens_the_duckdb_file_is_in_its_pool(duckdb_env):
    from mlstack_assets.definitions import build_definitions

    defs = build_definitions(load_settings())
    graph = defs.resolve_asset_graph()
    steps = {node.node_def.name: node.node_def.pool for node in graph.assets_defs}
    steps["restore_version"] = (
        defs.resolve_job_def("rollback").graph.node_dict["restore_version"].definition.pool
    )
    observations = {n for n, pool in steps.items() if pool is None}
    # the source files' observations read only the sources, never the warehouse
    assert observations == {"observe_projects_csv", "observe_tags_csv"}, steps
    assert "dbt_source_freshness" in steps
    assert {pool for pool in steps.values() if pool} == {DUCKDB_POOL}
