"""The dbt project behind the transform assets, one manifest per warehouse target."""

from __future__ import annotations

import json
import os
import sys
from functools import cache
from pathlib import Path
from typing import Any

from dagster_dbt import DbtProject

from mlstack_assets.quality.suites import known_tags
from mlstack_assets.settings import DBT_PROJECT_DIR, Settings, load_settings


def _put_venv_on_path() -> None:
    """dagster-dbt runs `dbt` from PATH: make that the dbt installed beside this Python,
    so an unactivated virtualenv (`.venv/bin/dagster ...`) works too."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        os.environ["PATH"] = os.pathsep.join([bin_dir, path]) if path else bin_dir


def dbt_vars(settings: Settings) -> dict[str, Any]:
    """What dbt's profile, sources and tests read (`var(...)` in dbt_project/): the
    settings' values (`Settings.dbt_vars`), the known tags (accepted_values on `tag`, the
    same list the GX suites use) and the freshness window."""
    return {
        **settings.dbt_vars,
        "known_tags": known_tags(),
        # dbt source freshness warns past the age the Dagster freshness policy allows
        "freshness_max_age_minutes": round(settings.freshness_max_age_hours * 60),
    }


def dbt_vars_args(settings: Settings, **overrides: Any) -> list[str]:
    """`--vars` for every dbt command (`dbt_vars`, with `overrides`). The same text each
    time, so dbt's partial parse is reused."""
    return ["--vars", json.dumps({**dbt_vars(settings), **overrides}, sort_keys=True)]


def _parsed_for(manifest_path: Path) -> tuple[str | None, str | None, str | None]:
    """(adapter, database, schema) the manifest's models were parsed for."""
    manifest = json.loads(manifest_path.read_text())
    model = next(
        (n for n in manifest.get("nodes", {}).values() if n.get("resource_type") == "model"), {}
    )
    adapter = manifest.get("metadata", {}).get("adapter_type")
    return adapter, model.get("database"), model.get("schema")


def _unprepared_project(settings: Settings) -> DbtProject:
    """The dbt project for these settings (`duckdb` or `bigquery` target), whose manifest
    is parsed with the same `--vars` as every other dbt command."""
    _put_venv_on_path()
    return DbtProject(
        project_dir=DBT_PROJECT_DIR,
        target=settings.warehouse,
        prepare_project_cli_args=["parse", "--quiet", *dbt_vars_args(settings)],
    )


@cache
def dbt_project(settings: Settings) -> DbtProject:
    """The dbt project for these settings, its manifest ready to load.

    `dagster dev` re-parses on every load (dagster-dbt's `prepare_if_dev`); other entry
    points (CLI, tests) parse when the manifest is missing or was parsed for another
    target, database (DuckDB names it after the file, BigQuery after the project) or
    dataset, so a fresh clone, a new MLSTACK_DUCKDB_PATH or a switch to BigQuery needs no
    build step. The manifest stays in dbt's default `target/`, where dagster-dbt finds
    dbt's partial parse file and hands it to every `dbt build` (saving a full parse per run).
    """
    project = _unprepared_project(settings)
    project.prepare_if_dev()
    expected = (settings.warehouse, settings.dbt_database, settings.audit_dataset)
    if not project.manifest_path.exists() or _parsed_for(project.manifest_path) != expected:
        project.preparer.prepare(project)
    return project


def main() -> None:
    """`python -m mlstack_assets.transform.project`: parse the manifest for this environment
    (once: `make setup`, the container's start-up); with `--vars`, print the `--vars` value
    for running dbt by hand instead."""
    settings = load_settings()
    if sys.argv[1:] == ["--vars"]:
        print(dbt_vars_args(settings)[1])
        return
    project = _unprepared_project(settings)
    project.preparer.prepare(project)
    print(project.manifest_path)


if __name__ == "__main__":
    main()
