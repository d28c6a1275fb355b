"""The code location loads the same graph whatever the configuration, and without network."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from mlstack_assets.settings import SettingsError, load_settings
from tests.conftest import REPO_ROOT

LIST_GRAPH = """
import json, socket
def refuse(*args, **kwargs):
    raise OSError("network access while loading definitions")
socket.socket.connect = refuse
import mlstack_assets
graph = mlstack_assets.defs.resolve_asset_graph()
resources = mlstack_assets.defs.resources
print(json.dumps({
    "assets": sorted(key.to_user_string() for key in graph.get_all_asset_keys()),
    "checks": sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys),
    "warehouse": type(resources["warehouse"]).__name__,
    "io_manager": type(resources["io_manager"]).__name__,
}))
"""


def load_graph_offline(**env: str) -> dict:
    """Load the definitions in a fresh process with no network (its own netns when possible)."""
    command = [sys.executable, "-c", LIST_GRAPH]
    if (
        shutil.which("unshare")
        and subprocess.run(
            ["unshare", "--net", "true"], capture_output=True, check=False
        ).returncode
        == 0
    ):
        command = ["unshare", "--net", *command]
    completed = subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_definitions_load_on_bigquery_without_network():
    duckdb_graph = load_graph_offline(MLSTACK_WAREHOUSE="duckdb")
    bigquery_graph = load_graph_offline(
        MLSTACK_WAREHOUSE="bigquery", MLSTACK_BQ_PROJECT="placeholder-project"
    )

    assert bigquery_graph["assets"] == duckdb_graph["assets"]
    assert bigquery_graph["checks"] == duckdb_graph["checks"]
    assert {"projects", "tags", "labeled_projects"} <= set(bigquery_graph["assets"])
    assert (bigquery_graph["warehouse"], bigquery_graph["io_manager"]) == (
        "BigQueryWarehouse",
        "BigQueryPandasIOManager",
    )
    assert (duckdb_graph["warehouse"], duckdb_graph["io_manager"]) == (
        "DuckDBWarehouse",
        "WarehouseDuckDBIOManager",
    )


def test_default_sources_are_pinned_to_the_lesson_era_commit():
    settings = load_settings({})

    commit = "e8dfdbe98f55cba8befaf8409e16e48fac2d26d8"
    assert settings.projects_url == (
        f"https://raw.githubusercontent.com/GokuMohandas/Made-With-ML/{commit}/datasets/projects.csv"
    )
    assert settings.tags_url.endswith(f"/{commit}/datasets/tags.csv")
    assert (settings.warehouse, settings.dataset, settings.airbyte) == (
        "duckdb",
        "mlops_course",
        "embedded",
    )
    assert settings.duckdb_path == REPO_ROOT / ".mlstack" / "warehouse.duckdb"


def test_relative_paths_resolve_against_the_repo_root():
    settings = load_settings(
        {"MLSTACK_PROJECTS_URL": "data/p.csv", "MLSTACK_DUCKDB_PATH": "w.duckdb"}
    )

    assert settings.projects_url == str(REPO_ROOT / "data" / "p.csv")
    assert settings.duckdb_path == REPO_ROOT / "w.duckdb"


@pytest.mark.parametrize(
    "variable, value",
    [("MLSTACK_WAREHOUSE", "snowflake"), ("MLSTACK_AIRBYTE", "docker"), ("MLSTACK_DATASET", "a-b")],
)
def test_unsupported_settings_are_rejected_with_the_variable_named(variable: str, value: str):
    with pytest.raises(SettingsError, match=variable):
        load_settings({variable: value})
