"""The one place that reads the environment; every other module asks `load_settings()`.

Only non-secret choices are read here, at definition load time. Secrets (BigQuery and
Airbyte credentials) are never read into Python values at load time: resources receive
them as `dagster.EnvVar`, which resolves at run time and is not shown in the UI.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"

LESSON_COMMIT = "e8dfdbe98f55cba8befaf8409e16e48fac2d26d8"
LESSON_DATASETS_URL = (
    f"https://raw.githubusercontent.com/GokuMohandas/Made-With-ML/{LESSON_COMMIT}/datasets"
)

WAREHOUSES = ("duckdb", "bigquery")
AIRBYTE_MODES = ("embedded", "server", "cloud")
# measured at 1M rows (README, "Benchmark"): with it the run's process tree stays under
# 1 GB (991 MB against 1248 MB with DuckDB's default), with no measurable slowdown
DEFAULT_DUCKDB_MEMORY_LIMIT = "128MB"


class SettingsError(ValueError):
    """An environment variable holds a value mlstack cannot use."""


@dataclass(frozen=True)
class Settings:
    """Everything that differs between a laptop and production, decided once."""

    projects_url: str
    tags_url: str
    warehouse: str
    duckdb_path: Path
    dataset: str
    airbyte: str
    home: Path
    dagster_home: Path  # the Dagster instance `mlstack run` uses (Dagster's own DAGSTER_HOME)
    bigquery_project: str
    bigquery_location: str
    airbyte_api_url: str
    airbyte_config_api_url: str
    # not in the hash (a dict has none); settings with equal fields are still equal
    airbyte_connection_ids: dict[str, str] = field(hash=False)
    airbyte_poll_interval: float
    sensor_interval_seconds: int
    source_sensor_on: bool
    daily_cron: str
    lake: str = ""  # MLSTACK_LAKE, resolved: a local folder's absolute path, or gs://bucket/prefix
    lake_keep_checkpoints: int = 10
    source_timeout_seconds: float = 60.0
    source_deadline_seconds: float = 1800.0
    connector_timeout_seconds: float = 3600.0
    source_retries: int = 3
    lock_timeout_seconds: float = 900.0
    pool_timeout_seconds: float = 900.0
    freshness_max_age_hours: float = 24.0
    ui_url: str = "http://127.0.0.1:3000"
    slack_channel: str = ""
    slack_api_url: str = "https://slack.com/api/"
    alert_webhook: bool = False
    # the service account key file's path (not its content): None for application default
    # credentials. The key itself is read only by the Google clients.
    google_credentials_path: str | None = None
    # server mode on DuckDB: the file the Airbyte host's DuckDB destination writes
    airbyte_duckdb_destination: str = "/local/mlstack/warehouse.duckdb"
    # DuckDB's working memory per process, in the steps and in dbt's process (DuckDB's own
    # default is 80 % of the machine); past it, sorts, joins and aggregates spill to disk
    duckdb_memory_limit: str = DEFAULT_DUCKDB_MEMORY_LIMIT

    @property
    def staging_dataset(self) -> str:
        """Where syncs land before their audit: `<dataset>_staging`."""
        return f"{self.dataset}_staging"

    @property
    def audit_dataset(self) -> str:
        """Where dbt builds and tests its models before they are published: `<dataset>_audit`."""
        return f"{self.dataset}_audit"

    @property
    def source_urls(self) -> dict[str, str]:
        return {"projects": self.projects_url, "tags": self.tags_url}

    @property
    def dbt_database(self) -> str:
        """What dbt calls the database: the DuckDB file's stem, or the BigQuery project."""
        return self.duckdb_path.stem if self.warehouse == "duckdb" else self.bigquery_project

    @property
    def dbt_vars(self) -> dict[str, str]:
        """What dbt's profile and sources read (`var(...)` in dbt_project/), passed to every
        dbt command as `--vars` (`transform/project.py`): dbt has no defaults of its own."""
        return {
            "target": self.warehouse,
            "dataset": self.dataset,  # where the sources are read
            "audit_dataset": self.audit_dataset,  # where the models are built and tested
            "duckdb_path": str(self.duckdb_path),
            "duckdb_memory_limit": self.duckdb_memory_limit,
            "bq_project": self.bigquery_project,
            "bq_location": self.bigquery_location,
            # the key file's path (Google's clients read the key): "" for application
            # default credentials
            "bq_keyfile": self.google_credentials_path or "",
        }

    @property
    def steps_share_a_process(self) -> bool:
        """A run's steps execute in one process (Dagster's in-process executor): on DuckDB,
        whose file takes one writer at a time, a process per step would add a process start
        and a code-location load to every step for no parallel write."""
        return self.warehouse == "duckdb"

    @property
    def warehouse_pool(self) -> str | None:
        """Dagster concurrency pool of the steps that touch a DuckDB file (one writer at a time)."""
        return "duckdb_warehouse" if self.warehouse == "duckdb" else None

    @property
    def warehouse_location(self) -> str:
        """Where the warehouse is, for people: the DuckDB file or the BigQuery project."""
        return str(self.duckdb_path) if self.warehouse == "duckdb" else self.bigquery_project

    @property
    def slack_alerts(self) -> bool:
        """Alerts go to Slack when a channel is configured (the token comes through `EnvVar`)."""
        return bool(self.slack_channel)

    @property
    def connector_dir(self) -> Path:
        return self.home / "airbyte"

    @property
    def data_docs_dir(self) -> Path:
        return self.home / "gx" / "data_docs"


def _resolve(path: str) -> Path:
    """Relative paths are relative to the repo root, wherever the process was started."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate


def _resolve_source(url: str) -> str:
    if "://" in url and not url.startswith("file://"):
        return url
    return str(_resolve(url.removeprefix("file://")))


def _choice(environ: Mapping[str, str], name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = environ.get(name, "").strip().lower() or default
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} is not supported; use one of {', '.join(allowed)}")
    return value


def _positive(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    try:
        value = float(raw) if raw else default
    except ValueError:
        raise SettingsError(f"{name}={raw!r} must be a number of seconds") from None
    if value <= 0:
        raise SettingsError(f"{name}={raw!r} must be greater than zero")
    return value


def _count(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit():
        raise SettingsError(f"{name}={raw!r} must be a whole number (0 or more)")
    return int(raw)


def _memory_size(environ: Mapping[str, str], name: str) -> str:
    """A size DuckDB's `memory_limit` takes, such as 512MB or 2GB (checked here, so the value
    is safe to put in a SET statement)."""
    value = environ.get(name, "").strip() or DEFAULT_DUCKDB_MEMORY_LIMIT
    if not re.fullmatch(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", value, re.IGNORECASE):
        raise SettingsError(f"{name}={value!r} must be a size such as 512MB or 2GB")
    return value


def _lake(environ: Mapping[str, str]) -> str:
    """The lake's root: `gs://bucket/prefix`, or a local folder (relative to the repo root)."""
    raw = environ.get("MLSTACK_LAKE", "").strip() or ".mlstack/lake"
    if raw.startswith("gs://"):
        if not raw.removeprefix("gs://").strip("/"):
            raise SettingsError(f"MLSTACK_LAKE={raw!r} must name a bucket: gs://bucket/prefix")
        return raw.rstrip("/")
    if "://" in raw:
        raise SettingsError(
            f"MLSTACK_LAKE={raw!r} is not supported; use a local folder or gs://bucket/prefix"
        )
    return str(_resolve(raw))


def _freshness_max_age_hours(environ: Mapping[str, str]) -> float:
    raw = environ.get("MLSTACK_FRESHNESS_MAX_AGE_HOURS", "").strip() or "24"
    try:
        hours = float(raw)
    except ValueError:
        hours = 0.0
    if hours * 60 < 1:  # Dagster's own floor for a freshness window
        raise SettingsError(
            f"MLSTACK_FRESHNESS_MAX_AGE_HOURS={raw!r} must be a number of hours, at least 1/60"
        )
    return hours


def _alert_settings(environ: Mapping[str, str]) -> dict:
    """Where failure alerts go. Only whether a secret is set is read here, never its value."""
    channel = environ.get("MLSTACK_SLACK_CHANNEL", "").strip()
    if channel and not environ.get("MLSTACK_SLACK_TOKEN", "").strip():
        raise SettingsError("MLSTACK_SLACK_CHANNEL is set but MLSTACK_SLACK_TOKEN is not")
    return {
        "ui_url": (environ.get("MLSTACK_UI_URL", "").strip() or "http://127.0.0.1:3000").rstrip(
            "/"
        ),
        "slack_channel": channel,
        "slack_api_url": (
            environ.get("MLSTACK_SLACK_API_URL", "").strip() or "https://slack.com/api"
        ).rstrip("/")
        + "/",  # slack_sdk joins method names onto it
        "alert_webhook": bool(environ.get("MLSTACK_ALERT_WEBHOOK_URL", "").strip()),
    }


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the `MLSTACK_*` variables (README, "Configuration"), with the documented defaults."""
    env = os.environ if environ is None else environ
    dataset = env.get("MLSTACK_DATASET", "").strip() or "mlops_course"
    if not dataset.replace("_", "").isalnum():
        raise SettingsError(f"MLSTACK_DATASET={dataset!r} must be letters, digits and underscores")
    home = _resolve(env.get("MLSTACK_HOME", "").strip() or ".mlstack")
    return Settings(
        projects_url=_resolve_source(
            env.get("MLSTACK_PROJECTS_URL", "").strip() or f"{LESSON_DATASETS_URL}/projects.csv"
        ),
        tags_url=_resolve_source(
            env.get("MLSTACK_TAGS_URL", "").strip() or f"{LESSON_DATASETS_URL}/tags.csv"
        ),
        warehouse=_choice(env, "MLSTACK_WAREHOUSE", "duckdb", WAREHOUSES),
        duckdb_path=_resolve(
            env.get("MLSTACK_DUCKDB_PATH", "").strip() or ".mlstack/warehouse.duckdb"
        ),
        dataset=dataset,
        airbyte=_choice(env, "MLSTACK_AIRBYTE", "embedded", AIRBYTE_MODES),
        home=home,
        # Dagster resolves a relative DAGSTER_HOME against the working directory
        dagster_home=Path(env.get("DAGSTER_HOME", "").strip() or home / "dagster_home").resolve(),
        bigquery_project=env.get("MLSTACK_BQ_PROJECT", "").strip(),
        bigquery_location=env.get("MLSTACK_BQ_LOCATION", "").strip() or "US",
        airbyte_api_url=env.get("MLSTACK_AIRBYTE_API_URL", "").strip()
        or "http://localhost:8000/api/public/v1",
        airbyte_config_api_url=env.get("MLSTACK_AIRBYTE_CONFIG_API_URL", "").strip()
        or "http://localhost:8000/api/v1",
        airbyte_connection_ids={
            source: env.get(f"MLSTACK_AIRBYTE_{source.upper()}_CONNECTION_ID", "").strip()
            for source in ("projects", "tags")
        },
        airbyte_poll_interval=float(env.get("MLSTACK_AIRBYTE_POLL_SECONDS", "").strip() or 10),
        sensor_interval_seconds=int(env.get("MLSTACK_SENSOR_INTERVAL_SECONDS", "").strip() or 60),
        source_sensor_on=_choice(env, "MLSTACK_SOURCE_SENSOR", "on", ("on", "off")) == "on",
        daily_cron=env.get("MLSTACK_DAILY_CRON", "").strip() or "0 6 * * *",
        # a source that sends nothing for this long has stalled (per read, not per file)
        source_timeout_seconds=_positive(env, "MLSTACK_SOURCE_TIMEOUT_SECONDS", 60.0),
        # the longest a download may take in all, retries included (1 GB at ~5 MB/s)
        source_deadline_seconds=_positive(env, "MLSTACK_SOURCE_DEADLINE_SECONDS", 1800.0),
        # the longest the connector may take to read a local copy
        connector_timeout_seconds=_positive(env, "MLSTACK_CONNECTOR_TIMEOUT_SECONDS", 3600.0),
        lake=_lake(env),
        lake_keep_checkpoints=max(_count(env, "MLSTACK_LAKE_KEEP_CHECKPOINTS", 10), 1),
        # retries of transient network errors on HTTPS sources (resets, refusals, 5xx)
        source_retries=_count(env, "MLSTACK_SOURCE_RETRIES", 3),
        # the longest a step waits for another process's warehouse lock before failing
        lock_timeout_seconds=_positive(env, "MLSTACK_LOCK_TIMEOUT_SECONDS", 900.0),
        # the longest a step waits for a slot of the warehouse pool held by another run
        pool_timeout_seconds=_positive(env, "MLSTACK_POOL_TIMEOUT_SECONDS", 900.0),
        freshness_max_age_hours=_freshness_max_age_hours(env),
        google_credentials_path=env.get("GOOGLE_APPLICATION_CREDENTIALS", "").strip() or None,
        airbyte_duckdb_destination=env.get("MLSTACK_AIRBYTE_DUCKDB_DESTINATION_PATH", "").strip()
        or "/local/mlstack/warehouse.duckdb",
        duckdb_memory_limit=_memory_size(env, "MLSTACK_DUCKDB_MEMORY_LIMIT"),
        **_alert_settings(env),
    )


def credential(name: str, environ: Mapping[str, str] | None = None) -> str:
    """A credential's value ("" when unset), for `mlstack airbyte-setup` only: that command
    calls Airbyte's API itself, outside Dagster. Definitions never read one (`EnvVar`)."""
    return (os.environ if environ is None else environ).get(name, "").strip()
