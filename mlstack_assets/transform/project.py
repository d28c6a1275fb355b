"""The dbt project behind the transform assets, one manifest per warehouse target."""

import json
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

from dagster_dbt import DbtProject

from mlstack_assets.quality.suites import known_tags
from mlstack_assets.settings import DBT_PROJECT_DIR, Settings, load_settings


def dbt_vars(settings: Settings) -> dict[str, Any]:
    """What dbt's profile, sources and tests read (`var(...)`): the settings' values, the known
    tags (the same list the GX suites use) and the freshness window of the Dagster policy."""
    return {
        **settings.dbt_vars,
        "known_tags": known_tags(),
        "freshness_max_age_minutes": round(settings.freshness_max_age_hours * 60),
    }


def dbt_vars_args(settings: Settings, **overrides: Any) -> list[str]:
    """`--vars` for every dbt command, the same text each time so dbt's partial parse is reused."""
    return ["--vars", json.dumps({**dbt_vars(settings), **overrides}, sort_keys=True)]


def _unprepared_project(settings: Settings) -> DbtProject:
    """The project for the `duckdb` or `bigquery` target, parsed with the same `--vars`.
    dagster-dbt runs `dbt` from PATH: put this Python's bin first, for an unactivated venv."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir
    return DbtProject(
        project_dir=DBT_PROJECT_DIR,
        target=settings.warehouse,
        prepare_project_cli_args=["parse", "--quiet", *dbt_vars_args(settings)],
    )


@cache
def dbt_project(settings: Settings) -> DbtProject:
    """The dbt project for these settings, its manifest ready to load: `dagster dev` re-parses on
    every load; the rest parse when the manifest is missing or was parsed for another target,
    database (DuckDB's is the file's name) or dataset. It stays in `target/`, beside the partial
    parse file dagster-dbt hands to every `dbt build`."""
    project = _unprepared_project(settings)
    project.prepare_if_dev()
    parsed = None
    if project.manifest_path.exists():
        manifest = json.loads(project.manifest_path.read_text())
        nodes = manifest.get("nodes", {}).values()
        model = next((n for n in nodes if n.get("resource_type") == "model"), {})
        adapter = manifest.get("metadata", {}).get("adapter_type")
        parsed = (adapter, model.get("database"), model.get("schema"))
    if parsed != (settings.warehouse, settings.dbt_database, settings.audit_dataset):
        project.preparer.prepare(project)
    return project


def main() -> None:
    """`python -m mlstack_assets.transform.project`: parse the manifest (`make setup`, the
    container's start-up); with `--vars`, print the `--vars` value for running dbt by hand."""
    settings = load_settings()
    if sys.argv[1:] == ["--vars"]:
        print(dbt_vars_args(settings)[1])
        return
    project = _unprepared_project(settings)
    project.preparer.prepare(project)
    print(project.manifest_path)


if __name__ == "__main__":
    main()
