"""Transform: the dbt project (staging views, labeled_projects) and its tests as checks."""

from __future__ import annotations

from functools import cached_property
from importlib.metadata import version

from dagster import Definitions
from dagster_dbt import DbtCliResource
from packaging.version import Version

from mlstack_assets.settings import Settings
from mlstack_assets.transform.assets import build_dbt_assets
from mlstack_assets.transform.dbt_child import dbt_child_executable
from mlstack_assets.transform.project import dbt_project


class InstalledDbtCliResource(DbtCliResource):
    """`DbtCliResource` that knows its dbt version without asking.

    dagster-dbt runs `dbt --version` in a subprocess for every dbt step (2 to 5 s per run
    on a small machine, measured by `make bench`); the dbt it runs is the dbt-core package
    installed beside this Python, whose version is in the package metadata.
    """

    @cached_property
    def _cli_version(self) -> Version:
        return Version(version("dbt-core"))


def build_transform_definitions(settings: Settings) -> Definitions:
    project = dbt_project(settings.warehouse, settings.dbt_database)
    return Definitions(
        assets=[build_dbt_assets(project, settings)],
        resources={
            "dbt": InstalledDbtCliResource(
                project_dir=project, dbt_executable=dbt_child_executable()
            )
        },
    )
