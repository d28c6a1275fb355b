"""The one place that reads the environment (pydantic-settings; `docs/configuration.md`).

A bad value is reported in one line: the variable, its value (never a secret's), what is
expected. Secrets are only checked here; resources get them as `dagster.EnvVar`.
"""

import hashlib
import os
import re
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlparse

from pydantic import AfterValidator, BeforeValidator, Field, ValidationError, model_validator
from pydantic import create_model as _create_model
from pydantic_settings import BaseSettings, SettingsConfigDict

from mlstack_assets.sources import SOURCES

REPO_ROOT = Path(__file__).resolve().parents[1]
DBT_PROJECT_DIR = REPO_ROOT / "dbt_project"


class SettingsError(ValueError):
    """An environment variable holds a value mlstack cannot use."""


class DatasetNames:
    """The datasets named after `self.dataset`, for the settings and the warehouse alike."""

    @property
    def staging_dataset(self) -> str:
        """Where extracts land before their audit."""
        return f"{self.dataset}_staging"  # type: ignore[attr-defined]

    @property
    def audit_dataset(self) -> str:
        """Where dbt's models and the ML tables are built and checked before they are published."""
        return f"{self.dataset}_audit"  # type: ignore[attr-defined]


def _resolve(path: str | Path) -> Path:
    """A relative path is relative to the repo root, wherever the process was started."""
    return REPO_ROOT / Path(path).expanduser()


def _file(path: Path) -> Path:
    if path.is_dir():
        raise ValueError("is a directory; give a file's path")
    return path


def _folder(path: Path) -> Path:
    if path.is_file():
        raise ValueError("is a file; give a directory's path")
    return path


def _http_url(value: str) -> str:
    parsed = urlparse(value.strip())
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http:// or https:// URL")
    return value.strip().rstrip("/")


def _source_url(value: str) -> str:
    value = value.strip()
    if urlparse(value).scheme in ("http", "https"):
        return _http_url(value)
    if "://" in value and not value.startswith("file://"):
        raise ValueError("must be an https:// URL or a local path")
    return str(_resolve(value.removeprefix("file://")))


def _lake(value: str) -> str:
    value = value.strip().rstrip("/")
    if value.startswith("gs://") and not value.removeprefix("gs://"):
        raise ValueError("must name a bucket: gs://bucket/prefix")
    if "://" in value and not value.startswith("gs://"):
        raise ValueError("must be a local folder or gs://bucket/prefix")
    return value if value.startswith("gs://") else str(_folder(_resolve(value)))


def _connection_id(value: str) -> str:
    try:
        return str(uuid.UUID(value)) if value.strip() else ""
    except ValueError:
        raise ValueError("must be an Airbyte connection id (a UUID)") from None


def _key_file(value: str) -> str:
    if value.strip() and not Path(value.strip()).expanduser().is_file():
        raise ValueError("must be the path of a service account key file")
    return value.strip()


def _secret(check: Callable[[str], Any] = str, expected: str = "") -> BeforeValidator:
    """Whether a secret is set; one `check` refuses is reported without its value."""

    def is_set(value: Any) -> bool:
        value = value.strip() if isinstance(value, str) else value
        if isinstance(value, str) and value:
            try:
                check(value)
            except ValueError:
                raise ValueError(expected) from None
        return bool(value)

    return BeforeValidator(is_set)


Choice = BeforeValidator(lambda v: v.strip().lower() if isinstance(v, str) else v)
HttpUrl = Annotated[str, AfterValidator(_http_url)]
Secret = Annotated[bool, _secret()]
CRON_FIELD = r"[\d*?]+([-/,][\d*?]+)*|[A-Za-z]{3}(-[A-Za-z]{3})?"
CRON = rf"^(@(hourly|daily|weekly|monthly|yearly|annually)|({CRON_FIELD})(\s+({CRON_FIELD})){{4}})$"
# what a variable's value must be when it fails its field's `pattern` or bound
EXPECTED_OF = {
    "MLSTACK_DATASET": "must be letters, digits and underscores",
    "MLSTACK_DUCKDB_MEMORY_LIMIT": "must be a size such as 512MB or 2GB",
    "MLSTACK_AIRBYTE_DUCKDB_DESTINATION_PATH": "must be a path under /local/"
    " (Airbyte's DuckDB destination)",
    "MLSTACK_DAILY_CRON": "must be a cron schedule such as '0 6 * * *'",
    "MLSTACK_SLACK_CHANNEL": "must be a Slack channel such as #data-alerts",
    "MLSTACK_BQ_PROJECT": "must be a Google Cloud project id (6-30 lowercase letters, digits, -)",
    "MLSTACK_BQ_LOCATION": "must be a BigQuery location such as US or EU",
    "MLSTACK_FRESHNESS_MAX_AGE_HOURS": "must be a number of hours, at least 1/60",
}


class _Settings(DatasetNames, BaseSettings):
    """Everything that differs between a laptop and production, decided once."""

    model_config = SettingsConfigDict(
        alias_generator=lambda field: f"MLSTACK_{field.upper()}",
        env_ignore_empty=True,  # VAR= means "the default"
        frozen=True,
        extra="ignore",
        validate_default=True,
    )

    # warehouse and lake
    warehouse: Annotated[Literal["duckdb", "bigquery"], Choice] = "duckdb"
    duckdb_path: Annotated[Path, AfterValidator(lambda p: _file(_resolve(p)))] = Path(
        ".mlstack/warehouse.duckdb"
    )
    dataset: str = Field("mlops_course", pattern=r"^[A-Za-z_]\w*$")
    lake: Annotated[str, AfterValidator(_lake)] = ".mlstack/lake"
    lake_keep_checkpoints: int = Field(10, ge=1)
    lake_keep_versions: int = Field(10, ge=1)
    max_row_drop_percent: float = Field(20.0, ge=0, le=100)
    # at 1M rows the run's process tree stays under 1 GB with it (docs/benchmark.md)
    duckdb_memory_limit: str = Field(
        "128MB", pattern=r"(?i)^\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)$"
    )
    # Airbyte
    airbyte: Annotated[Literal["embedded", "server", "cloud"], Choice] = "embedded"
    airbyte_api_url: HttpUrl = "http://localhost:8000/api/public/v1"
    airbyte_config_api_url: HttpUrl = "http://localhost:8000/api/v1"
    airbyte_poll_interval: float = Field(10.0, gt=0, alias="MLSTACK_AIRBYTE_POLL_SECONDS")
    airbyte_duckdb_destination: str = Field(
        "/local/mlstack/warehouse.duckdb",
        pattern="^/local/.*$",
        alias="MLSTACK_AIRBYTE_DUCKDB_DESTINATION_PATH",
    )
    # reading sources: every network read, lock and wait is bounded
    source_timeout_seconds: float = Field(60.0, gt=0)
    source_deadline_seconds: float = Field(1800.0, gt=0)
    # curl's --speed-limit / --speed-time: slower than this for that long fails; 0 bytes/s: off
    source_low_speed_bytes_per_second: int = Field(1000, ge=0)
    source_low_speed_seconds: float = Field(60.0, gt=0)
    source_retries: int = Field(3, ge=0)
    connector_timeout_seconds: float = Field(3600.0, gt=0)
    lock_timeout_seconds: float = Field(900.0, gt=0)
    # automation and alerts
    home: Annotated[Path, AfterValidator(lambda p: _folder(_resolve(p)))] = Path(".mlstack")
    # Dagster resolves a relative DAGSTER_HOME against the working directory
    dagster_home_setting: Annotated[
        Path | None, AfterValidator(lambda p: p and _folder(p.expanduser().resolve()))
    ] = Field(None, alias="DAGSTER_HOME")
    sensor_interval_seconds: int = Field(60, ge=1)
    source_sensor: Annotated[Literal["on", "off"], Choice] = "on"
    daily_cron: str = Field("0 6 * * *", pattern=CRON)
    freshness_max_age_hours: float = Field(24.0, ge=1 / 60)  # Dagster's floor: a minute
    ui_url: HttpUrl = "http://127.0.0.1:3000"
    slack_channel: str = Field("", pattern=r"^(#?[\w.-]+)?$")
    slack_api_url: HttpUrl = "https://slack.com/api/"
    # BigQuery; the key file's path, "" for application default credentials
    bigquery_project: str = Field(
        "", pattern=r"^([a-z][a-z0-9-]{4,28}[a-z0-9])?$", alias="MLSTACK_BQ_PROJECT"
    )
    bigquery_location: str = Field("US", pattern=r"^[A-Za-z][\w-]*$", alias="MLSTACK_BQ_LOCATION")
    google_credentials_path: Annotated[str, AfterValidator(_key_file)] = Field(
        "", alias="GOOGLE_APPLICATION_CREDENTIALS"
    )
    # the secrets: only whether each is set (their values stay in the environment)
    slack_token_set: Secret = Field(False, alias="MLSTACK_SLACK_TOKEN")
    alert_webhook: Annotated[
        bool, _secret(_http_url, "must be an http:// or https:// URL (a secret: not shown)")
    ] = Field(False, alias="MLSTACK_ALERT_WEBHOOK_URL")
    airbyte_workspace_id_set: Annotated[
        bool, _secret(uuid.UUID, "must be an Airbyte workspace id (a UUID; not shown)")
    ] = Field(False, alias="MLSTACK_AIRBYTE_WORKSPACE_ID")
    airbyte_client_id_set: Secret = Field(False, alias="MLSTACK_AIRBYTE_CLIENT_ID")
    airbyte_client_secret_set: Secret = Field(False, alias="MLSTACK_AIRBYTE_CLIENT_SECRET")

    @model_validator(mode="after")
    def _together(self) -> "_Settings":
        """What one setting needs of others."""
        if self.slack_channel and not self.slack_token_set:
            raise ValueError("MLSTACK_SLACK_CHANNEL is set but MLSTACK_SLACK_TOKEN is not")
        missing = [
            f"MLSTACK_AIRBYTE_{name}"
            for name in ("WORKSPACE_ID", "CLIENT_ID", "CLIENT_SECRET")
            if not getattr(self, f"airbyte_{name.lower()}_set")
        ]
        if self.airbyte != "embedded" and missing:
            raise ValueError(
                f"MLSTACK_AIRBYTE={self.airbyte} needs {', '.join(missing)}"
                " (read at run time through dagster.EnvVar, never shown)"
            )
        return self

    def source_url(self, source: str) -> str:
        return getattr(self, f"{source}_url")

    def airbyte_connection_id(self, source: str) -> str:
        return getattr(self, f"airbyte_{source}_connection_id")

    @property
    def dagster_home(self) -> Path:
        """The Dagster instance: DAGSTER_HOME, or `<home>/dagster_home`."""
        return self.dagster_home_setting or (self.home / "dagster_home").resolve()

    @property
    def connector_dir(self) -> Path:
        return self.home / "airbyte"

    @property
    def data_docs_dir(self) -> Path:
        return self.home / "gx" / "data_docs"

    @property
    def warehouse_location(self) -> str:
        """Where the warehouse is, for people: the DuckDB file or the BigQuery project."""
        return str(self.duckdb_path) if self.warehouse == "duckdb" else self.bigquery_project

    @property
    def warehouse_id(self) -> str:
        """Which warehouse this is, as its part of the lake is named: the DuckDB file (by its
        resolved path) or the BigQuery project, then the dataset. Each keeps its own versions."""
        if self.warehouse == "bigquery":
            return f"bigquery-{self.bigquery_project}/{self.dataset}"
        digest = hashlib.sha256(str(self.duckdb_path.resolve()).encode()).hexdigest()[:12]
        return f"duckdb-{self.duckdb_path.stem}-{digest}/{self.dataset}"

    @property
    def warehouse_lake(self) -> str:
        """This warehouse's part of the lake: its checkpoints, versions and current pointers."""
        return f"{self.lake}/warehouses/{self.warehouse_id}"

    @property
    def dbt_database(self) -> str:
        """What dbt calls the database: the DuckDB file's stem, or the BigQuery project."""
        return self.duckdb_path.stem if self.warehouse == "duckdb" else self.bigquery_project

    @property
    def dbt_vars(self) -> dict[str, str]:
        """What dbt's profile and sources read (`var(...)`): dbt has no defaults of its own."""
        return {
            "target": self.warehouse,
            "dataset": self.dataset,  # where the sources are read
            "audit_dataset": self.audit_dataset,  # where the models are built and tested
            "duckdb_path": str(self.duckdb_path),
            "duckdb_memory_limit": self.duckdb_memory_limit,
            "bq_project": self.bigquery_project,
            "bq_location": self.bigquery_location,
            "bq_keyfile": self.google_credentials_path,
        }


# one URL and one Airbyte connection per registered source (`sources.py`)
SourceUrl = Annotated[str, AfterValidator(_source_url)]
ConnectionId = Annotated[str, AfterValidator(_connection_id)]
Settings = _create_model(
    "Settings",
    __base__=_Settings,
    **{f"{s.name}_url": (SourceUrl, Field(s.default_url, alias=s.url_variable)) for s in SOURCES},
    **{
        f"airbyte_{s.name}_connection_id": (ConnectionId, Field("", alias=s.connection_variable))
        for s in SOURCES
    },
)
# the secrets are the fields that only record whether they are set
SECRETS = tuple(f.alias for f in Settings.model_fields.values() if f.annotation is bool)
EXPECTED = {
    "int_parsing": "must be a whole number",
    "float_parsing": "must be a number",
    "greater_than": "must be greater than {gt}",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
}


def _problem(error: dict[str, Any]) -> str:
    """One line: the variable, its value (not a secret's), and what is expected."""
    message = str(error["msg"]).removeprefix("Value error, ")
    if not error["loc"]:  # a check across settings: its message names the variables
        return message
    variable = str(error["loc"][0])
    if error["type"] == "literal_error":
        choices = re.findall(r"'([^']*)'", str(error["ctx"]["expected"]))
        message = f"is not supported; use one of {', '.join(choices)}"
    elif variable in EXPECTED_OF and not error["type"].endswith("_parsing"):
        message = EXPECTED_OF[variable]
    elif error["type"] in EXPECTED:
        ctx = {key: f"{value:g}" for key, value in error.get("ctx", {}).items()}
        message = EXPECTED[error["type"]].format(**ctx)
    if variable in SECRETS:
        return f"{variable} {message}"
    return f"{variable}={os.environ.get(variable, error['input'])!r} {message}"


def load_settings() -> Settings:
    """The settings of this process's environment; `SettingsError` names what is wrong."""
    try:
        return Settings()
    except ValidationError as error:
        raise SettingsError("; ".join(map(_problem, error.errors(include_url=False)))) from None


def credential(name: str) -> str:
    """A credential's value, for `mlstack airbyte-setup` only: definitions use `EnvVar`."""
    return os.environ.get(name, "").strip()
