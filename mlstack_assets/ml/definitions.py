"""ML: the assets ML users load directly (dataset, splits, tag distribution)."""

from dagster import Definitions, with_source_code_references

from mlstack_assets.ml.assets import build_ml_assets
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse.deployment import WarehouseDeployment


def build_ml_definitions(settings: Settings, deployment: WarehouseDeployment) -> Definitions:
    return Definitions(assets=with_source_code_references(build_ml_assets(settings, deployment)))
