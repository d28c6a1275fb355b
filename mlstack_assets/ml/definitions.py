"""ML: the assets ML users load directly (dataset, splits, tag distribution)."""

from dagster import Definitions, with_source_code_references

from mlstack_assets.ml.assets import build_ml_assets
from mlstack_assets.settings import Settings


def build_ml_definitions(settings: Settings) -> Definitions:
    return Definitions(assets=with_source_code_references(build_ml_assets(settings)))
