"""Freshness: how old the raw tables and labeled_projects may get before the UI says so.

Dagster's own freshness policies (`FreshnessPolicy.time_window`): the daemon evaluates
them (every 30 s) and the UI shows each asset as passing or failing, with the time of its
last materialization. The maximum age is `MLSTACK_FRESHNESS_MAX_AGE_HOURS` (default 24).

The policy is applied here, over the assembled definitions, rather than in each area's
asset factory: the areas stay unaware of it and the choice of which assets it covers is
in one place.
"""

from datetime import timedelta

from dagster import AssetKey, AssetSpec, Definitions, FreshnessPolicy

from mlstack_assets.settings import Settings
from mlstack_assets.sources import source_names

# The tables people read: the published raw tables and the dbt mart they feed.
FRESHNESS_ASSETS = tuple(AssetKey(name) for name in (*source_names(), "labeled_projects"))


def freshness_policy(settings: Settings) -> FreshnessPolicy:
    return FreshnessPolicy.time_window(
        fail_window=timedelta(hours=settings.freshness_max_age_hours)
    )


def with_freshness_policies(defs: Definitions, settings: Settings) -> Definitions:
    """`defs`, with the freshness policy on every asset of `FRESHNESS_ASSETS`."""
    policy = freshness_policy(settings)

    def apply(spec: AssetSpec) -> AssetSpec:
        if spec.key not in FRESHNESS_ASSETS:
            return spec
        return spec.replace_attributes(freshness_policy=policy)

    # `map_asset_specs` with a condition, not `map_resolved_asset_specs(selection=...)`, which
    # would resolve the whole code location one more time on every load.
    return defs.map_asset_specs(func=apply)
