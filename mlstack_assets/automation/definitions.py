"""Automation: the source-change sensor, the downstream automation, a daily safety net.

dbt models and ML assets carry `AutomationCondition.eager()`: `downstream_automation` brings
the dependents of a raw asset materialized by hand up to date too, and skips what a sensor
run already refreshed. Alerts (`alerts.py`) exist only when a channel is configured.
"""

import dagster as dg

from mlstack_assets.automation.sensors import build_source_change_sensor
from mlstack_assets.ingestion.sources import source_specs
from mlstack_assets.settings import Settings

FULL_REFRESH_JOB = dg.define_asset_job(
    name="full_refresh",
    selection=dg.AssetSelection.all(),
    description="Every asset: sync, audit and publish both sources, dbt, checks, ML assets.",
)


def build_automation_definitions(settings: Settings) -> dg.Definitions:
    """The sensors, the full-refresh job and schedule, and the alerts when configured."""
    defs = dg.Definitions(
        jobs=[FULL_REFRESH_JOB],
        sensors=[
            build_source_change_sensor(settings, source_specs(settings)),
            dg.AutomationConditionSensorDefinition(
                "downstream_automation",
                target=dg.AssetSelection.all(),
                default_status=dg.DefaultSensorStatus.RUNNING,
                minimum_interval_seconds=settings.sensor_interval_seconds,
                description="Evaluates the eager automation conditions of dbt and ML assets.",
            ),
        ],
        schedules=[
            dg.ScheduleDefinition(
                name="daily_full_refresh",
                job=FULL_REFRESH_JOB,
                cron_schedule=settings.daily_cron,
                default_status=dg.DefaultScheduleStatus.STOPPED,
                description="Safety net: the whole graph once a day (off by default).",
            )
        ],
    )
    if not (settings.slack_channel or settings.alert_webhook):
        return defs  # alerts off: not even Slack's client is imported
    from mlstack_assets.automation.alerts import build_alert_definitions

    return dg.Definitions.merge(build_alert_definitions(settings), defs)
