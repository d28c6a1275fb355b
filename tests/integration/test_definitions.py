"""The code location loads the same graph whatever the configuration, and without network."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mlstack_assets.settings import SettingsError
from mlstack_assets.transform.project import dbt_vars
from tests.conftest import REPO_ROOT
from tests.support.processes import offline
from tests.support.settings import settings_from

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
    "io_manager": [cls.__name__ for cls in type(resources["io_manager"]).__mro__],
    "airbyte": type(resources["airbyte"]).__name__,
}))
"""


def load_graph_offline(**env: str) -> dict:
    """Load the definitions in a fresh process with no network (its own netns when possible)."""
    completed = subprocess.run(
        offline([sys.executable, "-c", LIST_GRAPH]),
        cwd=REPO_ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


PLACEHOLDER_CREDENTIALS = {
    "MLSTACK_BQ_PROJECT": "placeholder-project",
    "MLSTACK_AIRBYTE_WORKSPACE_ID": "00000000-0000-4000-8000-000000000000",
    "MLSTACK_AIRBYTE_CLIENT_ID": "placeholder-client",
    "MLSTACK_AIRBYTE_CLIENT_SECRET": "placeholder-secret",
    "MLSTACK_AIRBYTE_PROJECTS_CONNECTION_ID": "11111111-1111-4111-8111-111111111111",
    "MLSTACK_AIRBYTE_TAGS_CONNECTION_ID": "22222222-2222-4222-8222-222222222222",
    "MLSTACK_AIRBYTE_API_URL": "http://airbyte.invalid:8000/api/public/v1",
}
EXPECTED = {
    "duckdb": ("DuckDBWarehouse", "DuckDBPandasIOManager"),
    "bigquery": ("BigQueryWarehouse", "BigQueryPandasIOManager"),
    "embedded": "EmbeddedAirbyte",
    "server": "AirbyteServer",
    "cloud": "AirbyteServer",
}


@pytest.fixture(scope="module")
def default_graph() -> dict:
    return load_graph_offline(MLSTACK_WAREHOUSE="duckdb", MLSTACK_AIRBYTE="embedded")


@pytest.mark.parametrize("airbyte", ["embedded", "server", "cloud"])
@pytest.mark.parametrize("warehouse", ["duckdb", "bigquery"])
def test_every_configuration_loads_the_same_graph_without_network(
    default_graph: dict, warehouse: str, airbyte: str
):
    graph = load_graph_offline(
        MLSTACK_WAREHOUSE=warehouse, MLSTACK_AIRBYTE=airbyte, **PLACEHOLDER_CREDENTIALS
    )

    assert graph["assets"] == default_graph["assets"]
    assert graph["checks"] == default_graph["checks"]
    assert {"projects", "tags", "labeled_projects", "ml_splits"} <= set(graph["assets"])
    warehouse_class, io_manager_base = EXPECTED[warehouse]
    assert graph["warehouse"] == warehouse_class
    assert io_manager_base in graph["io_manager"]
    assert graph["airbyte"] == EXPECTED[airbyte]


def test_default_sources_are_pinned_to_the_lesson_era_commit():
    settings = settings_from({})

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
    settings = settings_from(
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
        settings_from({variable: value})


def test_dbt_reads_only_the_values_settings_passes_it():
    """One configuration path into dbt: its profile, sources and models read no environment
    variable and have no defaults; every `var()` they read is one `Settings` passes."""
    dbt_dir = REPO_ROOT / "dbt_project"
    generated = {"target", "dbt_packages", "logs"}  # dbt's output, not the project's source
    sources = [
        path
        for path in dbt_dir.rglob("*")
        if path.is_file()
        and path.suffix in {".yml", ".sql"}
        and not generated & set(path.relative_to(dbt_dir).parts)
    ]
    assert dbt_dir / "profiles.yml" in sources
    texts = [path.read_text() for path in sources]
    assert not any("env_var(" in text for text in texts)
    read = set(re.findall(r"\bvar\(\s*'(\w+)'\s*\)", "\n".join(texts)))
    assert {"target", "dataset", "audit_dataset", "duckdb_path"} <= read
    assert read <= set(dbt_vars(settings_from({})))
    assert not re.search(r"\bvar\(\s*'\w+'\s*,", "\n".join(texts))  # no var() default either


@pytest.mark.parametrize(
    "environ, expected",
    [
        (
            {"MLSTACK_DUCKDB_PATH": "~/wh/w.duckdb", "MLSTACK_DATASET": "demo"},
            {
                "type": "duckdb",
                "path": str(Path.home() / "wh" / "w.duckdb"),
                "schema": "demo_audit",
            },
        ),
        (
            {
                "MLSTACK_WAREHOUSE": "bigquery",
                "MLSTACK_BQ_PROJECT": "acme-analytics",
                "MLSTACK_BQ_LOCATION": "EU",
                "GOOGLE_APPLICATION_CREDENTIALS": "{key file}",
            },
            {
                "type": "bigquery",
                "database": "acme-analytics",
                "schema": "mlops_course_audit",
                "location": "EU",
                "keyfile": "{key file}",
            },
        ),
    ],
)
def test_dbt_connects_where_settings_point(
    environ: dict[str, str], expected: dict[str, str], tmp_path: Path
):
    """dbt's profile, rendered with the `--vars` every dbt command gets, is what Settings
    decided (`~` expanded, a relative path against the repo root, the BigQuery location)."""
    key_file = tmp_path / "sa.json"  # only its path matters here (settings check it exists)
    key_file.write_text("{}")
    environ = {k: v.replace("{key file}", str(key_file)) for k, v in environ.items()}
    expected = {k: v.replace("{key file}", str(key_file)) for k, v in expected.items()}
    from argparse import Namespace

    from dbt.config.runtime import load_profile
    from dbt.config.utils import parse_cli_vars
    from dbt.flags import set_from_args

    from mlstack_assets.settings import DBT_PROJECT_DIR
    from mlstack_assets.transform.project import dbt_vars_args

    settings = settings_from(environ)
    set_from_args(Namespace(profiles_dir=str(DBT_PROJECT_DIR)), None)
    dbt_vars = parse_cli_vars(dbt_vars_args(settings)[1])  # as every dbt command gets them
    profile = load_profile(str(DBT_PROJECT_DIR), dbt_vars, None, None)

    credentials = profile.credentials
    assert {key: str(getattr(credentials, key)) for key in expected} == expected


THIRD_SOURCE = """
import json, shutil, sys
from pathlib import Path
import mlstack_assets.sources as registry
registry.SOURCES = (*registry.SOURCES, registry.Source("authors", sys.argv[1]))
import mlstack_assets.quality.suites as suites
copies = Path(sys.argv[2])
shutil.copytree(suites.SUITES_DIR, copies)
(copies / "authors.json").write_text(json.dumps({"name": "authors", "expectations": [{
    "type": "expect_table_row_count_to_be_between", "kwargs": {"min_value": 1},
    "meta": {"check": "row_count_is_positive"}, "description": "Rows > 0."}]}))
suites.SUITES_DIR = copies
from mlstack_assets.automation.freshness import FRESHNESS_ASSETS
from mlstack_assets.definitions import build_definitions
from mlstack_assets.lake.versions import VERSIONED_TABLES
from mlstack_assets.publish import VOLUME_GUARDED
from mlstack_assets.settings import Settings
defs = build_definitions()
graph = defs.resolve_asset_graph()
sensor = defs.resolve_sensor_def("source_change_sensor")
from dagster import DagsterInstance, build_sensor_context
with DagsterInstance.ephemeral() as instance, build_sensor_context(
    instance=instance, repository_def=defs.get_repository_def()
) as context:
    [request] = sensor.evaluate_tick(context).run_requests  # the first tick: all changed
print(json.dumps({
    "assets": sorted(k.to_user_string() for k in graph.get_all_asset_keys()),
    "checks": sorted(f"{k.asset_key.to_user_string()}:{k.name}" for k in graph.asset_check_keys),
    "raw_step": sorted(k.to_user_string() for k in defs.resolve_assets_def("authors").keys),
    "sensor": sorted(k.to_user_string() for k in request.asset_selection),
    "versioned": list(VERSIONED_TABLES),
    "guarded": list(VOLUME_GUARDED),
    "fresh": [k.to_user_string() for k in FRESHNESS_ASSETS],
    "variables": sorted(f.alias for f in Settings.model_fields.values()),
}))
"""


def test_a_third_source_is_one_registry_entry_and_its_suite(tmp_path: Path):
    """Every list of sources derives from `sources.SOURCES`: registering one more (with its
    suite) gives it a URL setting, an observed file, a raw asset in the raw step, its checks,
    the sensor, versions, the volume guard and freshness."""
    from tests.support.fixture_data import write_csv, write_projects, write_tags

    authors = write_csv(tmp_path / "authors.csv", ["id", "name"], [(6, "Ada")])
    env = {
        **os.environ,
        "MLSTACK_PROJECTS_URL": str(write_projects(tmp_path / "projects.csv")),
        "MLSTACK_TAGS_URL": str(write_tags(tmp_path / "tags.csv")),
    }
    completed = subprocess.run(
        [sys.executable, "-c", THIRD_SOURCE, str(authors), str(tmp_path / "suites")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    found = json.loads(completed.stdout.strip().splitlines()[-1])

    assert {"authors", "authors_csv"} <= set(found["assets"])
    assert found["raw_step"] == ["authors", "projects", "tags"]
    assert {"authors:row_count_is_positive", "authors:row_drop_within_limit"} <= set(
        found["checks"]
    )
    assert "authors:dbt_source_freshness" in found["checks"]
    assert "authors" in found["sensor"]
    assert "authors" in found["versioned"] and "authors" in found["guarded"]
    assert "authors" in found["fresh"]
    assert {"MLSTACK_AUTHORS_URL", "MLSTACK_AIRBYTE_AUTHORS_CONNECTION_ID"} <= set(
        found["variables"]
    )
