"""Failure alerts: exactly one message per failed run, naming the check, to Slack and a webhook.

Real runs fail in a real instance; the `alert_on_failure` sensor is evaluated tick by tick
as the daemon would (its cursor carried over), and sends to a loopback stand-in of the
Slack Web API and of a webhook that check what they receive.
"""

from collections.abc import Iterator

import pytest
from dagster import build_sensor_context

from mlstack_assets.automation.alerts import Alert, AlertError, FailureAlerts, SlackAlerts
from mlstack_assets.settings import SettingsError
from tests.conftest import Stack
from tests.support.alert_api import AlertApi, alert_api
from tests.support.fixture_data import PROJECT_TAGS, write_csv
from tests.support.settings import settings_from

UI_URL = "http://dagster.internal:3000"


@pytest.fixture
def alerting(stack: Stack) -> Iterator[AlertApi]:
    with alert_api() as api:
        stack.monkeypatch.setenv("MLSTACK_SLACK_CHANNEL", "#data-alerts")
        stack.monkeypatch.setenv("MLSTACK_SLACK_TOKEN", api.token)
        stack.monkeypatch.setenv("MLSTACK_SLACK_API_URL", api.slack_api_url)
        stack.monkeypatch.setenv("MLSTACK_ALERT_WEBHOOK_URL", api.webhook_url)
        stack.monkeypatch.setenv("MLSTACK_UI_URL", UI_URL + "/")
        yield api


def tick(stack: Stack, defs, cursor: str | None) -> str | None:
    """One evaluation of the sensor, as a daemon tick; returns the cursor it leaves."""
    sensor = defs.resolve_sensor_def("alert_on_failure")
    with build_sensor_context(
        instance=stack.instance,
        cursor=cursor,
        sensor_name=sensor.name,
        resources={"alerts": defs.resources["alerts"]},
    ) as context:
        return sensor.evaluate_tick(context).cursor


def test_one_alert_per_failed_run_names_the_asset_the_check_and_links_the_run(
    stack: Stack, alerting: AlertApi
):
    duplicated = [*sorted(PROJECT_TAGS.items()), (6, "computer-vision")]
    stack.set_source("tags", write_csv(stack.root / "dup" / "tags.csv", ["id", "tag"], duplicated))
    defs = stack.definitions()
    cursor = tick(stack, defs, None)  # the first tick starts from "now", as a new sensor does

    audit_failed = stack.materialize("tags")
    cursor = tick(stack, defs, cursor)
    cursor = tick(stack, defs, cursor)  # nothing new: nothing sent again

    assert not audit_failed.success
    assert [len(alerting.slack_messages), len(alerting.webhook_messages)] == [1, 1]
    [slack], [webhook] = alerting.slack_messages, alerting.webhook_messages
    assert slack["channel"] == "#data-alerts"
    assert "id_is_unique" in slack["text"] and "tags" in slack["text"]
    run_url = f"{UI_URL}/runs/{audit_failed.run_id}"
    assert run_url in slack["text"]
    assert webhook["run_url"] == run_url
    assert webhook["failed_checks"] == ["tags: id_is_unique"]
    assert webhook["assets"] == ["tags"]
    assert webhook["text"] == slack["text"]

    stack.set_source("tags", stack.root / "missing.csv")
    step_failed = stack.materialize("tags")
    tick(stack, defs, cursor)

    assert not step_failed.success
    assert [len(alerting.slack_messages), len(alerting.webhook_messages)] == [2, 2]
    second = alerting.webhook_messages[1]
    assert second["run_id"] == step_failed.run_id
    assert second["failed_checks"] == [] and second["assets"] == ["tags"]
    assert any("source 'tags'" in failure for failure in second["failures"])
    assert alerting.violations == []
    for message in [*alerting.slack_messages, *alerting.webhook_messages]:
        assert alerting.token not in str(message) and alerting.webhook_path not in str(message)


def test_alerts_are_off_unless_a_channel_is_configured(stack: Stack):
    defs = stack.definitions()

    assert "alert_on_failure" not in {sensor.name for sensor in defs.sensors or []}
    assert "alerts" not in (defs.resources or {})
    with pytest.raises(SettingsError, match="MLSTACK_SLACK_TOKEN"):
        settings_from({"MLSTACK_SLACK_CHANNEL": "#data-alerts"})


def test_a_failed_delivery_names_the_channel_but_never_the_secret_url_or_token():
    with alert_api() as api:
        alert = Alert("0123456789", "__ASSET_JOB", f"{UI_URL}/runs/0123456789", [], [], ["x"])
        refused = FailureAlerts(
            slack=SlackAlerts(token="xoxb-wrong", channel="#c", api_url=api.slack_api_url),
            webhook_url=api.base_url + "/hooks/not-the-secret-path",
        )
        with pytest.raises(AlertError) as raised:
            refused.send(alert)
    message = str(raised.value)
    assert "invalid_auth" in message and "HTTP 400" not in message
    assert "slack" in message and "webhook" in message
    assert "not-the-secret-path" not in message and "xoxb-wrong" not in message
