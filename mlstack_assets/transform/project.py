"""The dbt project behind the transform assets, one manifest per warehouse target."""

from __future__ import annotations

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


@cache
def dbt_project(target: str) -> DbtProject:
    """The dbt project for `target` (`duckdb` or `bigquery`), its manifest ready to load.

    `dagster dev` re-parses on every load (dagster-dbt's `prepare_if_dev`); other entry
    points (CLI, tests) parse once when the manifest is missing, so a fresh clone works
    without a separate build step.
    """
    _put_venv_on_path()
    project = DbtProject(
        project_dir=DBT_PROJECT_DIR,
        target=target,
        target_path=Path("target", target),
    )
    project.prepare_if_dev()
    if not project.manifest_path.exists():
        project.preparer.prepare(project)
    return project


def main() -> None:
    """`python -m mlstack_assets.transform.project`: re-parse the manifest for this environment."""
    from mlstack_assets.settings import load_settings

    project = dbt_project(load_settings().warehouse)
    project.preparer.prepare(project)
    print(project.manifest_path)


if __name__ == "__main__":
    main()
