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


def _manifest_database(manifest_path: Path) -> str | None:
    nodes = json.loads(manifest_path.read_text()).get("nodes", {}).values()
    return next(
        (node.get("database") for node in nodes if node.get("resource_type") == "model"), None
    )


@cache
def dbt_project(target: str, database: str) -> DbtProject:
    """The dbt project for `target` (`duckdb` or `bigquery`), its manifest ready to load.

    `dagster dev` re-parses on every load (dagster-dbt's `prepare_if_dev`); other entry
    points (CLI, tests) parse when the manifest is missing or was parsed for another
    database (DuckDB names it after the file, BigQuery after the project), so a fresh
    clone or a new MLSTACK_DUCKDB_PATH works without a separate build step.
    """
    _put_venv_on_path()
    project = DbtProject(
        project_dir=DBT_PROJECT_DIR,
        target=target,
        target_path=Path("target", target),
    )
    project.prepare_if_dev()
    if not project.manifest_path.exists() or _manifest_database(project.manifest_path) != database:
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
