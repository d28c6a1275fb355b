"""Automation: the source-change sensor, the downstream automation, a daily safety net.

- `source_change_sensor` (on by default): reruns what depends on a changed source.
- `downstream_automation` (on by default): dbt models and ML assets carry
  `AutomationCondition.eager()`, so a raw asset materialized by hand (UI or CLI) also
  brings its dependents up to date; assets a sensor run already refreshed are not
  requested again (eager skips assets in progress or already newer than their deps).
- `daily_full_refresh` (off by default): the whole graph once a day, `MLSTACK_DAILY_CRON`.
- `alert_on_failure` (only when a Slack channel or webhook is configured): one message per
  failed run (`alerts.py`).
Freshness policies are applied over the whole graph in `freshness.py`.
"""

from dagster import (
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    Definitions,
    ScheduleDefinition,
    define_asset_job,
)

from mlstack_assets.automation.sensors import build_source_change_sensor
from mlstack_assets.ingestion.sources import source_specs
from mlstack_assets.settings import Settings

FULL_REFRESH_JOB = define_asset_job(
    name="full_refresh",
    selection=AssetSelection.all(),
    description="Every asset: sync, audit and publish both sources, dbt, checks, ML assets.",
)


def build_automation_definitions(settings: Settings) -> Definitions:
    defs = _schedules_and_sensors(settings)
    if not (settings.slack_channel or settings.alert_webhook):
        return defs  # alerts off: not even Slack's client is imported
    from mlstack_assets.automation.alerts import build_alert_definitions

    return Definitions.merge(build_alert_definitions(settings), defs)


def _schedules_and_sensors(settings: Settings) -> Definitions:
    return Definitions(
        jobs=[FULL_REFRESH_JOB],
        sensors=[
            build_source_change_sensor(settings, source_specs(settings)),
            AutomationConditionSensorDefinition(
                "downstream_automation",
                target=AssetSelection.all(),
                default_status=DefaultSensorStatus.RUNNING,
                minimum_interval_seconds=settings.sensor_interval_seconds,
                description="Evaluates the eager automation conditions of dbt and ML assets.",
            ),
        ],
        schedules=[
            ScheduleDefinition(
                name="daily_full_refresh",
                job=FULL_REFRESH_JOB,
                cron_schedule=settings.daily_cron,
                default_status=DefaultScheduleStatus.STOPPED,
                description="Safety net: the whole graph once a day (off by default).",
            )
        ],
    )
