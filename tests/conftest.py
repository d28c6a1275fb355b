"""Shared set-up: an isolated environment (DuckDB file, Dagster home, sources) per test.

Settings come from the environment, exactly as in production; the tests set `MLSTACK_*`
variables, which dbt's subprocess sees too. The Airbyte connector and the dbt manifest
are shared with the checkout (`.mlstack/airbyte`, `dbt_project/target`), as `make test`
prepares them.
"""

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance, ExecuteInProcessResult, instance_for_test

from mlstack_assets.settings import REPO_ROOT  # noqa: F401  (the tests import it from here)
from tests.support.bigquery_emulator import BigQueryEmulator, running_emulator
from tests.support.fixture_data import write_projects, write_tags
from tests.support.https_server import HTTPSServer, start_https_server


@dataclass
class Stack:
    """One isolated mlstack environment: its sources, warehouse and Dagster instance."""

    root: Path
    monkeypatch: pytest.MonkeyPatch
    instance: DagsterInstance

    @property
    def warehouse_path(self) -> Path:
        return self.root / "warehouse.duckdb"

    def set_source(self, name: str, url: str | Path) -> None:
        self.monkeypatch.setenv(f"MLSTACK_{name.upper()}_URL", str(url))

    def definitions(self):
        from dagster_dbt.dbt_manifest import read_manifest_path

        from mlstack_assets.definitions import build_definitions
        from mlstack_assets.transform.project import dbt_project

        # One process, two warehouses (only the tests do that): the dbt manifest is re-parsed
        # per target, so forget the manifest and project objects cached for the other one.
        read_manifest_path.cache_clear()
        dbt_project.cache_clear()
        return build_definitions()

    def materialize(
        self, selection: str = "*", run_config: dict | None = None
    ) -> ExecuteInProcessResult:
        """Run the selection in process, against this stack's instance."""
        from dagster import AssetSelection

        defs = self.definitions()
        job = defs.resolve_implicit_global_asset_job_def()
        keys = (
            None
            if selection == "*"
            else list(AssetSelection.from_string(selection).resolve(defs.resolve_asset_graph()))
        )
        return job.execute_in_process(
            instance=self.instance,
            raise_on_error=False,
            asset_selection=keys,
            run_config=run_config,
        )

    def query(self, sql: str) -> list[tuple]:
        with duckdb.connect(str(self.warehouse_path), read_only=True) as conn:
            return conn.execute(sql).fetchall()

    def table_bytes(self, table: str) -> list[tuple]:
        """Every row of a table in a stable order: compare before/after to prove it untouched."""
        return self.query(f"select * from {table} order by all")

    def query_write(self, sql: str) -> None:
        """Change the warehouse directly (what a test plays a user or an accident doing)."""
        with duckdb.connect(str(self.warehouse_path)) as conn:
            conn.execute(sql)


@dataclass
class BigQueryStack(Stack):
    """The same environment with `MLSTACK_WAREHOUSE=bigquery`, on the BigQuery emulator."""

    emulator: BigQueryEmulator | None = None

    def query(self, sql: str) -> list[tuple]:
        assert self.emulator is not None
        with self.emulator.client() as client:
            return [tuple(row.values()) for row in client.query(sql).result()]

    def table_bytes(self, table: str) -> list[tuple]:
        # BigQuery has no `order by all`: every row, sorted here.
        return sorted(self.query(f"select * from {table}"), key=repr)


@pytest.fixture(scope="session")
def bigquery_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BigQueryEmulator]:
    """bqemulator on loopback for the session (installed by `make bigquery-emulator`)."""
    with running_emulator(tmp_path_factory.mktemp("bqemulator")) as emulator:
        yield emulator


def use_local_stack(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """The embedded default under `root`: a DuckDB file, a lake folder, the default fixture
    sources, the default dataset and embedded Airbyte, whatever the calling shell had set."""
    monkeypatch.setenv("MLSTACK_DUCKDB_PATH", str(root / "warehouse.duckdb"))
    monkeypatch.setenv("MLSTACK_LAKE", str(root / "lake"))
    monkeypatch.setenv("MLSTACK_WAREHOUSE", "duckdb")
    monkeypatch.delenv("MLSTACK_DATASET", raising=False)
    monkeypatch.delenv("MLSTACK_AIRBYTE", raising=False)
    monkeypatch.setenv("MLSTACK_PROJECTS_URL", str(write_projects(root / "src" / "projects.csv")))
    monkeypatch.setenv("MLSTACK_TAGS_URL", str(write_tags(root / "src" / "tags.csv")))


@pytest.fixture
def stack(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Stack]:
    use_local_stack(monkeypatch, tmp_path)
    (tmp_path / "dagster_home").mkdir()
    overrides = {"concurrency": {"pools": {"default_limit": 1}}}
    with instance_for_test(
        temp_dir=str(tmp_path / "dagster_home"), overrides=overrides
    ) as instance:
        yield Stack(root=tmp_path, monkeypatch=monkeypatch, instance=instance)


@pytest.fixture(scope="session")
def published_warehouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A warehouse built once from the default fixtures; tests copy it instead of rebuilding."""
    root = tmp_path_factory.mktemp("published")
    with pytest.MonkeyPatch.context() as monkeypatch, instance_for_test() as instance:
        use_local_stack(monkeypatch, root)
        result = Stack(root=root, monkeypatch=monkeypatch, instance=instance).materialize()
        assert result.success, [e.message for e in result.all_events if e.is_failure]
    return root / "warehouse.duckdb"


@pytest.fixture
def published_stack(stack: Stack, published_warehouse: Path) -> Stack:
    """`stack`, starting from a warehouse where every table was already published once."""
    shutil.copy(published_warehouse, stack.warehouse_path)
    return stack


@pytest.fixture
def https_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[HTTPSServer]:
    """An HTTPS server on loopback whose certificate this test (and the connector) trusts."""
    cert_dir = tmp_path / "tls"
    cert_dir.mkdir()
    server, httpd = start_https_server(cert_dir)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(server.ca_bundle))
    yield server
    server.release.set()
    httpd.shutdown()
    httpd.server_close()
