"""Transform: the dbt project (staging views, labeled_projects) and its tests as checks."""

from __future__ import annotations

from dagster import Definitions

from mlstack_assets.compat import InstalledDbtCliResource
from mlstack_assets.settings import Settings
from mlstack_assets.transform.assets import build_dbt_assets
from mlstack_assets.transform.dbt_child import dbt_child_executable
from mlstack_assets.transform.project import dbt_project
from mlstack_assets.transform.source_freshness import build_source_freshness_check
from mlstack_assets.warehouse.deployment import WarehouseDeployment


def build_transform_definitions(settings: Settings, deployment: WarehouseDeployment) -> Definitions:
    project = dbt_project(settings)
    return Definitions(
        assets=[build_dbt_assets(project, settings, deployment.pool)],
        asset_checks=[build_source_freshness_check(settings, deployment.pool)],
        resources={
            "dbt": InstalledDbtCliResource(
                project_dir=project, dbt_executable=dbt_child_executable()
            )
        },
    )
