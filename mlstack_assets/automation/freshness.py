"""Freshness: how old the raw tables and labeled_projects may get before the UI says so.

Applied over the assembled definitions, so the areas stay unaware of it and which assets it
covers is decided here.
"""

from datetime import timedelta

from dagster import AssetKey, AssetSpec, Definitions, FreshnessPolicy

from mlstack_assets.settings import Settings
from mlstack_assets.sources import source_names

# The tables people read: the published raw tables and the dbt mart they feed.
FRESHNESS_ASSETS = tuple(AssetKey(name) for name in (*source_names(), "labeled_projects"))


def with_freshness_policies(defs: Definitions, settings: Settings) -> Definitions:
    """`defs`, with the freshness policy on every asset of `FRESHNESS_ASSETS`."""
    policy = FreshnessPolicy.time_window(
        fail_window=timedelta(hours=settings.freshness_max_age_hours)
    )

    def apply(spec: AssetSpec) -> AssetSpec:
        if spec.key not in FRESHNESS_ASSETS:
            return spec
        return spec.replace_attributes(freshness_policy=policy)

    # a condition in `map_asset_specs`, not `map_resolved_asset_specs(selection=...)`, which
    # would resolve the whole code location once more on every load
    return defs.map_asset_specs(func=apply)
