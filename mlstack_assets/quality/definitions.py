"""Quality: the checks that are not part of an asset's own step (labeled_projects' suite)."""

from dagster import Definitions

from mlstack_assets.quality.checks import build_labeled_projects_checks
from mlstack_assets.settings import Settings


def build_quality_definitions(settings: Settings) -> Definitions:
    return Definitions(asset_checks=[build_labeled_projects_checks(settings)])
