"""The dbt project behind the transform assets, one manifest per warehouse target."""

from __future__ import annotations

import json
import os
import sys
from functools import cache
from pathlib import Path

from dagster_dbt import DbtProject

from mlstack_assets.settings import DBT_PROJECT_DIR


def _put_venv_on_path() -> None:
    """dagster-dbt runs `dbt` from PATH: make that the dbt installed beside this Python,
    so an unactivated virtualenv (`.venv/bin/dagster ...`) works too."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir


def _parsed_for(manifest_path: Path) -> tuple[str | None, str | None]:
    """(adapter, database) the manifest was parsed for."""
    manifest = json.loads(manifest_path.read_text())
    nodes = manifest.get("nodes", {}).values()
    database = next((n.get("database") for n in nodes if n.get("resource_type") == "model"), None)
    return manifest.get("metadata", {}).get("adapter_type"), database


@cache
def dbt_project(target: str, database: str) -> DbtProject:
    """The dbt project for `target` (`duckdb` or `bigquery`), its manifest ready to load.

    `dagster dev` re-parses on every load (dagster-dbt's `prepare_if_dev`); other entry
    points (CLI, tests) parse when the manifest is missing or was parsed for another
    target or database (DuckDB names it after the file, BigQuery after the project), so a
    fresh clone, a new MLSTACK_DUCKDB_PATH or a switch to BigQuery needs no build step.
    The manifest stays in dbt's default `target/`, where dagster-dbt finds dbt's partial
    parse file and hands it to every `dbt build` (saving a full parse per run).
    """
    _put_venv_on_path()
    project = DbtProject(project_dir=DBT_PROJECT_DIR, target=target)
    project.prepare_if_dev()
    if not project.manifest_path.exists() or _parsed_for(project.manifest_path) != (
        target,
        database,
    ):
        project.preparer.prepare(project)
    return project


def main() -> None:
    """`python -m mlstack_assets.transform.project`: re-parse the manifest for this environment."""
    from mlstack_assets.settings import load_settings

    settings = load_settings()
    project = dbt_project(settings.warehouse, settings.dbt_database)
    project.preparer.prepare(project)
    print(project.manifest_path)


if __name__ == "__main__":
    main()
