"""Freshness: the raw tables and labeled_projects pass while recent, fail once too old.

The state is computed by Dagster's own freshness daemon (one iteration, in process) and
read back through the webserver's GraphQL API, which is what the UI shows.
"""

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from dagster import AssetKey, AssetMaterialization
from dagster._core.definitions.freshness import FreshnessState
from dagster._core.remote_origin import InProcessCodeLocationOrigin
from dagster._core.test_utils import create_test_daemon_workspace_context, freeze_time
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from dagster._core.workspace.load_target import InProcessWorkspaceLoadTarget
from dagster._daemon.freshness import FreshnessDaemon
from dagster_graphql.test.utils import execute_dagster_graphql

from mlstack_assets.automation.freshness import FRESHNESS_ASSETS
from mlstack_assets.settings import SettingsError
from tests.conftest import Stack
from tests.support.settings import settings_from

FRESHNESS_QUERY = """
{ assetNodes { assetKey { path } freshnessStatusInfo { freshnessStatus } } }
"""


def test_raw_tables_and_labeled_projects_carry_the_configured_freshness_policy(stack: Stack):
    stack.monkeypatch.setenv("MLSTACK_FRESHNESS_MAX_AGE_HOURS", "6")

    graph = stack.definitions().resolve_asset_graph()

    with_policy = {
        key.to_user_string(): graph.get(key).freshness_policy.fail_window.to_timedelta()
        for key in graph.get_all_asset_keys()
        if graph.get(key).freshness_policy is not None
    }
    assert with_policy == {
        "projects": timedelta(hours=6),
        "tags": timedelta(hours=6),
        "labeled_projects": timedelta(hours=6),
    }


def test_freshness_defaults_to_one_day_and_refuses_a_window_dagster_cannot_evaluate():
    assert settings_from({}).freshness_max_age_hours == 24
    for bad in ("0", "0.01", "a day"):
        with pytest.raises(SettingsError, match="MLSTACK_FRESHNESS_MAX_AGE_HOURS"):
            settings_from({"MLSTACK_FRESHNESS_MAX_AGE_HOURS": bad})


@contextmanager
def workspace(stack: Stack) -> Iterator:
    """The code location, loaded in process from a file that builds it with this env."""
    target = stack.root / "load_defs.py"
    target.write_text(
        "from mlstack_assets.definitions import build_definitions\ndefs = build_definitions()\n"
    )
    origin = InProcessCodeLocationOrigin(
        LoadableTargetOrigin(
            python_file=str(target), attribute="defs", working_directory=str(Path.cwd())
        ),
        location_name="mlstack",
    )
    with create_test_daemon_workspace_context(
        InProcessWorkspaceLoadTarget(origin), stack.instance
    ) as context:
        yield context


def evaluate(context, now: float) -> dict[str, str | None]:
    """One freshness daemon iteration at `now`, then what the UI's API shows per asset."""
    with freeze_time(now):
        list(FreshnessDaemon().run_iteration(context))
        result = execute_dagster_graphql(context.create_request_context(), FRESHNESS_QUERY)
    assert result.errors is None, result.errors
    return {
        "/".join(node["assetKey"]["path"]): (node["freshnessStatusInfo"] or {}).get(
            "freshnessStatus"
        )
        for node in result.data["assetNodes"]
    }


def test_a_stale_asset_shows_a_failing_freshness_state(stack: Stack):
    stack.monkeypatch.setenv("MLSTACK_FRESHNESS_MAX_AGE_HOURS", "2")
    for key in FRESHNESS_ASSETS:
        stack.instance.report_runless_asset_event(AssetMaterialization(key))
    now = time.time()

    with workspace(stack) as context:
        fresh = evaluate(context, now + 60)
        stale = evaluate(context, now + 3 * 3600)

    for key in ("projects", "tags", "labeled_projects"):
        assert fresh[key] == "HEALTHY", fresh
        assert stale[key] == "DEGRADED", stale  # the UI's "Failing"
    assert fresh["ml_dataset"] is None  # no policy: nothing shown
    records = stack.instance.get_freshness_state_records(list(FRESHNESS_ASSETS))
    assert {record.freshness_state for record in records.values()} == {FreshnessState.FAIL}
    [untracked] = stack.instance.get_freshness_state_records([AssetKey("ml_dataset")]).values()
    assert untracked.freshness_state == FreshnessState.NOT_APPLICABLE


def test_dbt_source_freshness_warns_on_a_raw_table_extracted_too_long_ago(published_stack):
    from dagster import AssetCheckKey, AssetKey

    published_stack.query_write(
        "update mlops_course.projects set _airbyte_extracted_at = now()::timestamp - interval 3 day"
    )
    keys = {AssetCheckKey(AssetKey(name), "dbt_source_freshness") for name in ("projects", "tags")}
    job = published_stack.definitions().resolve_implicit_global_asset_job_def()

    result = job.get_subset(asset_selection=set(), asset_check_selection=keys).execute_in_process(
        instance=published_stack.instance, raise_on_error=False
    )

    evaluations = {e.asset_key.path[-1]: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {"projects", "tags"}
    stale = evaluations["projects"]
    assert not stale.passed and stale.severity.value == "WARN"
    assert stale.metadata["status"].value == "warn"
    assert stale.metadata["age_hours"].value > 71
    assert evaluations["tags"].passed
