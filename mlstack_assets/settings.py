"""The one place that reads the environment; every other module asks `load_settings()`.

Every setting is a field of `Settings` (pydantic-settings, variables `MLSTACK_<FIELD>`
unless the field names its variable): its default, its type and its checks are stated
once, here, and a bad value fails with the variable, its value and what is expected
(`SettingsError`), never a traceback. `docs/configuration.md` lists them all; a test
checks that it does.

Only non-secret choices are read into values here, at definition load time. Secrets
(Slack, webhook, Airbyte and BigQuery credentials) are never read into Python values:
resources receive them as `dagster.EnvVar`, which resolves at run time and is not shown
in the UI. Here a secret is only checked for being set (and its shape, without showing it).
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlparse

from pydantic import (
    AliasChoices,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"

LESSON_COMMIT = "e8dfdbe98f55cba8befaf8409e16e48fac2d26d8"
LESSON_DATASETS_URL = (
    f"https://raw.githubusercontent.com/GokuMohandas/Made-With-ML/{LESSON_COMMIT}/datasets"
)
SECRETS = ("MLSTACK_SLACK_TOKEN", "MLSTACK_ALERT_WEBHOOK_URL", "MLSTACK_AIRBYTE_WORKSPACE_ID")
SECRETS += ("MLSTACK_AIRBYTE_CLIENT_ID", "MLSTACK_AIRBYTE_CLIENT_SECRET")


# A setting that must match a pattern in full: the pattern and what a bad value is told.
# An optional setting's pattern also matches "". The memory limit is checked here so that
# it is safe to put in DuckDB's SET statement.
FORMATS: dict[str, tuple[str, str]] = {
    "dataset": (r"[A-Za-z_][A-Za-z0-9_]*", "must be letters, digits and underscores"),
    "duckdb_memory_limit": (
        r"(?i)\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)",
        "must be a size such as 512MB or 2GB",
    ),
    "slack_channel": (r"(#?[\w.-]+)?", "must be a Slack channel such as #data-alerts"),
    "bigquery_project": (
        r"([a-z][a-z0-9-]{4,28}[a-z0-9])?",
        "must be a Google Cloud project id (6-30 lowercase letters, digits, -)",
    ),
    "bigquery_location": (
        r"[A-Za-z][A-Za-z0-9-]*",
        "must be a BigQuery location such as US, EU or europe-west1",
    ),
}


class SettingsError(ValueError):
    """An environment variable holds a value mlstack cannot use."""


def _env(name: str) -> Any:
    """A field read from the variable `name` (instead of `MLSTACK_<FIELD>`)."""
    return AliasChoices(name)


def _resolve(path: str | Path) -> Path:
    """Relative paths are relative to the repo root, wherever the process was started."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else REPO_ROOT / candidate


def _http_url(value: str, what: str = "an http:// or https:// URL") -> str:
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError(f"must be {what}")
    return value


def _not_a_directory(path: Path) -> Path:
    if path.is_dir():
        raise ValueError("is a directory; give a file's path")
    return path


def _not_a_file(path: Path) -> Path:
    if path.is_file():
        raise ValueError("is a file; give a directory's path")
    return path


class Settings(BaseSettings):
    """Everything that differs between a laptop and production, decided once."""

    model_config = SettingsConfigDict(
        env_prefix="MLSTACK_",
        env_ignore_empty=True,  # VAR= means "the default", as it always has here
        frozen=True,
        extra="ignore",
        validate_default=True,
    )

    @classmethod
    def settings_customise_sources(cls, settings_cls: Any, init_settings: Any, **_: Any) -> Any:
        """Only what `load_settings` passes: it reads the variables (the process's, or a
        mapping a test or script gives), so both take one path."""
        return (init_settings,)

    # sources
    projects_url: str = Field(
        f"{LESSON_DATASETS_URL}/projects.csv",
        description="projects source: an https:// URL or a local path (relative to the repo)",
    )
    tags_url: str = Field(f"{LESSON_DATASETS_URL}/tags.csv", description="tags source")
    # warehouse and lake
    warehouse: Literal["duckdb", "bigquery"] = Field("duckdb", description="the warehouse")
    duckdb_path: Path = Field(
        Path(".mlstack/warehouse.duckdb"), description="the DuckDB file (relative to the repo)"
    )
    dataset: str = Field(
        "mlops_course",
        description="schema / dataset of the published tables (`_staging`, `_audit` beside it)",
    )
    lake: str = Field(
        ".mlstack/lake", description="the lake: a local folder, or gs://bucket/prefix"
    )
    lake_keep_checkpoints: int = Field(
        10, ge=1, description="raw checkpoints kept per source (never the published one)"
    )
    lake_keep_versions: int = Field(
        10, ge=1, description="versions kept per published table (never a current one)"
    )
    max_row_drop_percent: float = Field(
        20.0,
        ge=0,
        le=100,
        description="a raw table or labeled_projects losing more rows than this fails",
    )
    duckdb_memory_limit: str = Field(
        # measured at 1M rows: the run's process tree stays under 1 GB with it (docs/benchmark.md)
        "128MB",
        description="DuckDB's working memory in every DuckDB the pipeline opens",
    )
    # Airbyte
    airbyte: Literal["embedded", "server", "cloud"] = Field(
        "embedded", description="embedded (the connector run by mlstack), server, cloud"
    )
    airbyte_api_url: str = Field(
        "http://localhost:8000/api/public/v1", description="Airbyte server: REST API"
    )
    airbyte_config_api_url: str = Field(
        "http://localhost:8000/api/v1", description="Airbyte server: configuration API"
    )
    airbyte_projects_connection_id: str = Field(
        "", description="the Airbyte connection of projects (a UUID; `make airbyte-setup`)"
    )
    airbyte_tags_connection_id: str = Field("", description="the Airbyte connection of tags")
    airbyte_poll_interval: float = Field(
        10.0,
        gt=0,
        validation_alias=_env("MLSTACK_AIRBYTE_POLL_SECONDS"),
        description="seconds between polls of a running Airbyte sync",
    )
    airbyte_duckdb_destination: str = Field(
        "/local/mlstack/warehouse.duckdb",
        validation_alias=_env("MLSTACK_AIRBYTE_DUCKDB_DESTINATION_PATH"),
        description="Airbyte server on DuckDB: the file on the Airbyte host (under /local/)",
    )
    # reading sources: every network read, lock and wait is bounded
    source_timeout_seconds: float = Field(
        60.0, gt=0, description="an HTTPS source that sends nothing this long has stalled"
    )
    source_deadline_seconds: float = Field(
        1800.0, gt=0, description="the longest a download may take in all, retries included"
    )
    source_retries: int = Field(
        3, ge=0, description="retries of transient network errors (resets, refusals, 5xx)"
    )
    connector_timeout_seconds: float = Field(
        3600.0, gt=0, description="the longest the connector may take to read a local copy"
    )
    lock_timeout_seconds: float = Field(
        900.0, gt=0, description="the longest a step waits for the DuckDB warehouse lock"
    )
    pool_timeout_seconds: float = Field(
        900.0, gt=0, description="the longest a step waits for a slot of the warehouse pool"
    )
    # automation
    home: Path = Field(Path(".mlstack"), description="the connector, logs, Data Docs, plots")
    dagster_home_setting: Path | None = Field(
        None,
        validation_alias=_env("DAGSTER_HOME"),
        description="the Dagster instance `mlstack run` uses (default: `<home>/dagster_home`)",
    )
    sensor_interval_seconds: int = Field(
        60, ge=1, description="how often the source sensor and the automation are evaluated"
    )
    source_sensor: Literal["on", "off"] = Field(
        "on", description="`off`: the source-change sensor is stopped by default"
    )
    daily_cron: str = Field("0 6 * * *", description="when the (off by default) daily run runs")
    freshness_max_age_hours: float = Field(
        24.0, description="how old the raw tables and labeled_projects may get (hours)"
    )
    # alerts
    ui_url: str = Field("http://127.0.0.1:3000", description="the UI's address, for alerts")
    slack_channel: str = Field("", description="Slack channel for failure alerts")
    slack_api_url: str = Field("https://slack.com/api/", description="Slack Web API address")
    # BigQuery
    bigquery_project: str = Field(
        "",
        validation_alias=_env("MLSTACK_BQ_PROJECT"),
        description="BigQuery project id",
    )
    bigquery_location: str = Field(
        "US",
        validation_alias=_env("MLSTACK_BQ_LOCATION"),
        description="BigQuery location",
    )
    # the service account key file's path (never its content): "" for application default
    # credentials. The key itself is read only by the Google clients.
    google_credentials_path: str = Field(
        "",
        validation_alias=_env("GOOGLE_APPLICATION_CREDENTIALS"),
        description="BigQuery service account key file",
    )
    # whether secrets are set (their values are never read here)
    slack_token_set: bool = Field(False, validation_alias=_env("MLSTACK_SLACK_TOKEN"))
    alert_webhook: bool = Field(False, validation_alias=_env("MLSTACK_ALERT_WEBHOOK_URL"))
    airbyte_workspace_id_set: bool = Field(
        False, validation_alias=_env("MLSTACK_AIRBYTE_WORKSPACE_ID")
    )
    airbyte_client_id_set: bool = Field(False, validation_alias=_env("MLSTACK_AIRBYTE_CLIENT_ID"))
    airbyte_client_secret_set: bool = Field(
        False, validation_alias=_env("MLSTACK_AIRBYTE_CLIENT_SECRET")
    )

    @field_validator("airbyte_workspace_id_set", mode="before")
    @classmethod
    def _workspace(cls, value: Any) -> bool:
        if isinstance(value, bool) or value is None or not str(value).strip():
            return bool(value) if isinstance(value, bool) else False
        try:
            uuid.UUID(str(value).strip())
        except ValueError:
            raise ValueError("must be an Airbyte workspace id (a UUID; not shown)") from None
        return True

    @field_validator(
        "slack_token_set", "airbyte_client_id_set", "airbyte_client_secret_set", mode="before"
    )
    @classmethod
    def _is_set(cls, value: Any) -> bool:
        if isinstance(value, bool) or value is None:
            return bool(value)
        return bool(str(value).strip())

    @field_validator("alert_webhook", mode="before")
    @classmethod
    def _webhook(cls, value: Any) -> bool:
        if value is None or isinstance(value, bool) or not str(value).strip():
            return bool(value)
        parsed = urlparse(str(value).strip())
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ValueError(
                "must be an http:// or https:// URL (its value is a secret: not shown)"
            )
        return True

    @field_validator("projects_url", "tags_url")
    @classmethod
    def _source(cls, value: str) -> str:
        value = value.strip()
        scheme = urlparse(value).scheme
        if scheme in ("http", "https"):
            return _http_url(value)
        if "://" in value and scheme != "file":
            raise ValueError("must be an https:// URL or a local path")
        return str(_resolve(value.removeprefix("file://")))

    @field_validator("duckdb_path")
    @classmethod
    def _duckdb_file(cls, value: Path) -> Path:
        return _not_a_directory(_resolve(value))

    @field_validator("home")
    @classmethod
    def _home(cls, value: Path) -> Path:
        return _not_a_file(_resolve(value))

    @field_validator("dagster_home_setting")
    @classmethod
    def _dagster_home(cls, value: Path | None) -> Path | None:
        # Dagster resolves a relative DAGSTER_HOME against the working directory
        return None if value is None else _not_a_file(value.expanduser().resolve())

    @field_validator("warehouse", "airbyte", "source_sensor", mode="before")
    @classmethod
    def _choice(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("freshness_max_age_hours")
    @classmethod
    def _freshness(cls, value: float) -> float:
        if value * 60 < 1:  # Dagster's own floor for a freshness window
            raise ValueError("must be a number of hours, at least 1/60")
        return value

    @field_validator(*FORMATS)
    @classmethod
    def _matches_format(cls, value: str, info: ValidationInfo) -> str:
        pattern, expected = FORMATS[info.field_name]
        if not re.fullmatch(pattern, value):
            raise ValueError(expected)
        return value

    @field_validator("lake")
    @classmethod
    def _lake(cls, value: str) -> str:
        value = value.strip()
        if value.startswith("gs://"):
            if not value.removeprefix("gs://").strip("/"):
                raise ValueError("must name a bucket: gs://bucket/prefix")
            return value.rstrip("/")
        if "://" in value:
            raise ValueError("must be a local folder or gs://bucket/prefix")
        return str(_not_a_file(_resolve(value)))

    @field_validator("airbyte_api_url", "airbyte_config_api_url", "ui_url", "slack_api_url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value.strip())

    @field_validator("airbyte_projects_connection_id", "airbyte_tags_connection_id")
    @classmethod
    def _connection_id(cls, value: str) -> str:
        value = value.strip()
        if value:
            try:
                uuid.UUID(value)
            except ValueError:
                raise ValueError("must be an Airbyte connection id (a UUID)") from None
        return value

    @field_validator("airbyte_duckdb_destination")
    @classmethod
    def _destination(cls, value: str) -> str:
        if not value.startswith("/local/"):
            raise ValueError("must be a path under /local/ (Airbyte's DuckDB destination)")
        return value

    @field_validator("google_credentials_path")
    @classmethod
    def _key_file(cls, value: str) -> str:
        value = value.strip()
        if value and not Path(value).expanduser().is_file():
            raise ValueError("must be the path of a service account key file")
        return value

    @field_validator("daily_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        from dagster import ScheduleDefinition, job

        @job(name="cron_check")
        def nothing() -> None: ...

        try:  # Dagster's own check of a schedule's cron string
            ScheduleDefinition(name="cron_check", job=nothing, cron_schedule=value)
        except Exception:
            raise ValueError("must be a cron schedule such as '0 6 * * *'") from None
        return value

    @field_validator("ui_url", "slack_api_url", mode="after")
    @classmethod
    def _no_trailing_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @model_validator(mode="after")
    def _together(self) -> Settings:
        """What one setting needs of others."""
        if self.slack_channel and not self.slack_token_set:
            raise ValueError("MLSTACK_SLACK_CHANNEL is set but MLSTACK_SLACK_TOKEN is not")
        if self.airbyte != "embedded":
            needed = {
                "MLSTACK_AIRBYTE_WORKSPACE_ID": self.airbyte_workspace_id_set,
                "MLSTACK_AIRBYTE_CLIENT_ID": self.airbyte_client_id_set,
                "MLSTACK_AIRBYTE_CLIENT_SECRET": self.airbyte_client_secret_set,
            }
            missing = [name for name, present in needed.items() if not present]
            if missing:
                raise ValueError(
                    f"MLSTACK_AIRBYTE={self.airbyte} needs {', '.join(missing)}"
                    " (read at run time through dagster.EnvVar, never shown)"
                )
        return self

    # ----------------------------------------------------------------- derived values

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance: DAGSTER_HOME, or `<home>/dagster_home`."""
        return self.dagster_home_setting or (self.home / "dagster_home").resolve()

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
    def airbyte_connection_ids(self) -> dict[str, str]:
        return {
            "projects": self.airbyte_projects_connection_id,
            "tags": self.airbyte_tags_connection_id,
        }

    @property
    def source_sensor_on(self) -> bool:
        return self.source_sensor == "on"

    @property
    def slack_api_base(self) -> str:
        """The Slack Web API address as slack_sdk joins method names onto it."""
        return self.slack_api_url + "/"

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
            "bq_keyfile": self.google_credentials_path,
        }

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

    @classmethod
    def variable(cls, field: str) -> str:
        """The environment variable a field is read from."""
        alias = cls.model_fields[field].validation_alias
        return alias.choices[0] if isinstance(alias, AliasChoices) else f"MLSTACK_{field.upper()}"

    @classmethod
    def default(cls, field: str) -> Any:
        return cls.model_fields[field].default


def _problem(error: dict[str, Any], environ: Mapping[str, str]) -> str:
    """One line about one invalid value: the variable, its value (never a secret's), and
    what is expected."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a check across settings: its message names the variables
        return message
    where = str(error["loc"][0])  # a field's name, or the variable it is read from
    name = Settings.variable(where) if where in Settings.model_fields else where
    if name in SECRETS:
        return f"{name} {message}"
    value = environ.get(name, error.get("input"))
    ctx = error.get("ctx", {})
    expected = {
        "int_parsing": "must be a whole number",
        "float_parsing": "must be a number",
        "greater_than": f"must be greater than {ctx.get('gt')}",
        "greater_than_equal": f"must be at least {ctx.get('ge')}",
        "less_than_equal": f"must be at most {ctx.get('le')}",
        "literal_error": "is not supported; use one of "
        + ", ".join(re.findall(r"'([^']*)'", str(ctx.get("expected", "")))),
    }.get(error["type"], message)
    return f"{name}={value!r} {expected}" if value is not None else f"{name}: {expected}"


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read the settings from `environ` (default: the process's environment)."""
    env = os.environ if environ is None else environ
    given = {}
    for name, field in Settings.model_fields.items():
        variable = Settings.variable(name)
        value = env.get(variable, "")
        if value.strip():  # unset or empty: the default
            given[variable if field.validation_alias else name] = value
    try:
        return Settings(**given)
    except ValidationError as error:
        raise SettingsError(
            "\n".join(_problem(e, env) for e in error.errors(include_url=False))
        ) from None


def credential(name: str, environ: Mapping[str, str] | None = None) -> str:
    """A credential's value ("" when unset), for `mlstack airbyte-setup` only: that command
    calls Airbyte's API itself, outside Dagster. Definitions never read one (`EnvVar`)."""
    return (os.environ if environ is None else environ).get(name, "").strip()
