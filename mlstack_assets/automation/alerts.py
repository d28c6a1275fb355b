"""Failure alerts: one message per failed run, to Slack and/or a webhook, when configured.

A failed blocking check fails its step, so one run-failure sensor covers both. The secrets
reach the resources as `EnvVar`: never shown in the UI, a log or an error message.
"""

from dataclasses import asdict, dataclass

import dagster as dg
import requests
from dagster_slack import SlackResource
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from mlstack_assets.runs import RunSummary, summarize_run
from mlstack_assets.settings import Settings

ALERT_TIMEOUT_SECONDS = 10
MAX_MESSAGE_CHARS = 1500  # per failed step: enough for the audit report, short for a chat


class AlertError(RuntimeError):
    """An alert could not be delivered (the message says why, without the secret)."""


@dataclass(frozen=True)
class Alert:
    """What a failed run is reported as, in every channel."""

    run_id: str
    job_name: str
    run_url: str
    assets: list[str]
    failed_checks: list[str]
    failures: list[str]

    @classmethod
    def of_run(cls, summary: RunSummary, job_name: str, ui_url: str) -> "Alert":
        """The alert for a failed run: the assets of its failed steps and checks."""
        failed = summary.failed_checks
        assets = {asset for failure in summary.step_failures for asset in failure.assets}
        assets |= {check.split(": ", 1)[0] for check in failed}
        run_url = f"{ui_url}/runs/{summary.run_id}"
        return cls(summary.run_id, job_name, run_url, sorted(assets), failed, summary.failures)

    @property
    def text(self) -> str:
        lines = [f"mlstack run {self.run_id[:8]} ({self.job_name}) failed: {self.run_url}"]
        if self.assets:
            lines.append(f"assets: {', '.join(self.assets)}")
        if self.failed_checks:
            lines.append(f"failed checks: {', '.join(self.failed_checks)}")
        lines += [f"- {failure[:MAX_MESSAGE_CHARS]}" for failure in self.failures]
        return "\n".join(lines)

    def payload(self) -> dict:
        """The webhook body: the same text (Slack-compatible `text`), plus the fields."""
        return {"text": self.text, **asdict(self)}


class SlackAlerts(SlackResource):
    """dagster-slack's resource and a channel; the Web API address is configurable so that a
    proxy (or the tests' loopback stand-in) can answer instead of slack.com."""

    channel: str
    api_url: str = WebClient.BASE_URL

    def get_client(self) -> WebClient:
        return WebClient(token=self.token, base_url=self.api_url, timeout=ALERT_TIMEOUT_SECONDS)

    def send(self, alert: Alert) -> None:
        try:
            self.get_client().chat_postMessage(channel=self.channel, text=alert.text)
        except SlackApiError as error:
            raise AlertError(f"Slack refused the alert: {error.response.get('error')}") from None
        except OSError as error:  # the API unreachable: urllib's errors are OSErrors
            raise AlertError(f"Slack unreachable: {type(error).__name__}") from None


def post_webhook(url: str, alert: Alert) -> None:
    """POST the alert as JSON. The URL often embeds a secret: it never reaches a message."""
    try:
        response = requests.post(url, json=alert.payload(), timeout=ALERT_TIMEOUT_SECONDS)
    except requests.RequestException as error:
        # requests' messages contain the URL: report the kind of error only
        raise AlertError(f"webhook unreachable: {type(error).__name__}") from None
    if response.status_code >= 300:
        raise AlertError(f"webhook answered HTTP {response.status_code}")


class FailureAlerts(dg.ConfigurableResource):
    """The configured channels: Slack (dagster-slack) and/or a generic webhook."""

    slack: SlackAlerts | None = None
    webhook_url: str | None = None

    @property
    def channels(self) -> list[str]:
        return [name for name, on in (("slack", self.slack), ("webhook", self.webhook_url)) if on]

    def send(self, alert: Alert) -> list[str]:
        """Try every channel (one failing does not stop the other); raise if any failed."""
        sent, errors = [], []
        for name in self.channels:
            try:
                if name == "slack" and self.slack is not None:
                    self.slack.send(alert)
                elif self.webhook_url:
                    post_webhook(self.webhook_url, alert)
            except AlertError as error:
                errors.append(f"{name}: {error}")
            else:
                sent.append(name)
        if errors:
            raise AlertError("; ".join(errors))
        return sent


def build_alert_definitions(settings: Settings) -> dg.Definitions:
    """The `alert_on_failure` sensor and its channels, or nothing when none is configured."""
    slack = SlackAlerts(
        token=dg.EnvVar("MLSTACK_SLACK_TOKEN"),
        channel=settings.slack_channel,
        api_url=settings.slack_api_url + "/",  # slack_sdk joins method names onto it
    )
    alerts = FailureAlerts(
        slack=slack if settings.slack_channel else None,
        webhook_url=dg.EnvVar("MLSTACK_ALERT_WEBHOOK_URL") if settings.alert_webhook else None,
    )
    if not alerts.channels:
        return dg.Definitions()

    @dg.run_failure_sensor(
        name="alert_on_failure",
        description=(
            "Sends one message per failed run (a failed step or blocking check) to"
            f" {' and '.join(alerts.channels)}, naming assets and checks, with a link to the run."
        ),
        default_status=dg.DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=settings.sensor_interval_seconds,
        # runs launched from the CLI (`mlstack run`, `dg launch`) carry no code location:
        # watch every run of this instance, which is this project's
        monitor_all_code_locations=True,
    )
    def alert_on_failure(context: dg.RunFailureSensorContext, alerts: FailureAlerts) -> None:
        run = context.dagster_run
        summary = summarize_run(context.instance, run.run_id)
        sent = alerts.send(Alert.of_run(summary, run.job_name, settings.ui_url))
        context.log.info(f"alert for run {run.run_id[:8]} sent to {', '.join(sent)}")

    return dg.Definitions(sensors=[alert_on_failure], resources={"alerts": alerts})
