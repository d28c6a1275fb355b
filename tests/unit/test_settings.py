"""Every setting is validated in one place, with the variable, its value and what is
expected; the documented table and the settings model list the same variables."""

import re
from pathlib import Path

import pytest

from mlstack_assets.settings import SECRETS, Settings, SettingsError
from tests.conftest import REPO_ROOT
from tests.support.settings import settings_from

CONFIGURATION = REPO_ROOT / "docs" / "configuration.md"
SERVER = {
    "MLSTACK_AIRBYTE": "server",
    "MLSTACK_AIRBYTE_WORKSPACE_ID": "0b1c7c1e-5d2f-4a6e-9a0e-2f4c5d6e7f80",
    "MLSTACK_AIRBYTE_CLIENT_ID": "client",
    "MLSTACK_AIRBYTE_CLIENT_SECRET": "secret",
}


def documented() -> list[str]:
    rows = re.findall(r"^\| `([A-Z_]+)` \|", CONFIGURATION.read_text(), re.MULTILINE)
    assert rows, "no variables found in docs/configuration.md"
    return rows


def bad_values(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """Per variable: a bad value for it, and what its message says is expected."""
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    return {
        "MLSTACK_PROJECTS_URL": ("ftp://host/p.csv", "https:// URL or a local path"),
        "MLSTACK_TAGS_URL": ("https://", "http:// or https:// URL"),
        "MLSTACK_WAREHOUSE": ("snowflake", "use one of duckdb, bigquery"),
        "MLSTACK_DUCKDB_PATH": (str(tmp_path), "is a directory"),
        "MLSTACK_DATASET": ("a-b", "letters, digits and underscores"),
        "MLSTACK_LAKE": ("s3://bucket", "local folder or gs://bucket/prefix"),
        "MLSTACK_LAKE_KEEP_CHECKPOINTS": ("0", "at least 1"),
        "MLSTACK_LAKE_KEEP_VERSIONS": ("many", "a whole number"),
        "MLSTACK_MAX_ROW_DROP_PERCENT": ("150", "at most 100"),
        "MLSTACK_DUCKDB_MEMORY_LIMIT": ("lots", "512MB or 2GB"),
        "MLSTACK_HOME": (str(a_file), "is a file"),
        "DAGSTER_HOME": (str(a_file), "is a file"),
        "MLSTACK_SOURCE_TIMEOUT_SECONDS": ("0", "greater than 0"),
        "MLSTACK_SOURCE_DEADLINE_SECONDS": ("soon", "a number"),
        "MLSTACK_SOURCE_RETRIES": ("-1", "at least 0"),
        "MLSTACK_SOURCE_LOW_SPEED_BYTES_PER_SECOND": ("-1", "at least 0"),
        "MLSTACK_SOURCE_LOW_SPEED_SECONDS": ("0", "greater than 0"),
        "MLSTACK_CONNECTOR_TIMEOUT_SECONDS": ("-5", "greater than 0"),
        "MLSTACK_LOCK_TIMEOUT_SECONDS": ("forever", "a number"),
        "MLSTACK_SENSOR_INTERVAL_SECONDS": ("abc", "a whole number"),
        "MLSTACK_SOURCE_SENSOR": ("maybe", "use one of on, off"),
        "MLSTACK_DAILY_CRON": ("every-morning", "a cron schedule"),
        "MLSTACK_FRESHNESS_MAX_AGE_HOURS": ("0", "at least 1/60"),
        "MLSTACK_UI_URL": ("localhost:3000", "http:// or https:// URL"),
        "MLSTACK_SLACK_CHANNEL": ("#a b", "a Slack channel"),
        "MLSTACK_SLACK_TOKEN": (" ", "MLSTACK_SLACK_TOKEN is not"),
        "MLSTACK_SLACK_API_URL": ("slack", "http:// or https:// URL"),
        "MLSTACK_ALERT_WEBHOOK_URL": ("hooks-secret-123", "not shown"),
        "MLSTACK_BQ_PROJECT": ("My Project", "project id"),
        "MLSTACK_BQ_LOCATION": ("eu west", "a BigQuery location"),
        "GOOGLE_APPLICATION_CREDENTIALS": (str(tmp_path / "no.json"), "key file"),
        "MLSTACK_AIRBYTE": ("docker", "use one of embedded, server, cloud"),
        "MLSTACK_AIRBYTE_API_URL": ("localhost", "http:// or https:// URL"),
        "MLSTACK_AIRBYTE_CONFIG_API_URL": ("ftp://x", "http:// or https://"),
        "MLSTACK_AIRBYTE_WORKSPACE_ID": ("secret-ws", "a UUID; not shown"),
        "MLSTACK_AIRBYTE_CLIENT_ID": ("", "needs MLSTACK_AIRBYTE_CLIENT_ID"),
        "MLSTACK_AIRBYTE_CLIENT_SECRET": (" ", "needs MLSTACK_AIRBYTE_CLIENT_SECRET"),
        "MLSTACK_AIRBYTE_PROJECTS_CONNECTION_ID": ("conn-1", "a UUID"),
        "MLSTACK_AIRBYTE_TAGS_CONNECTION_ID": ("42", "a UUID"),
        "MLSTACK_AIRBYTE_POLL_SECONDS": ("often", "a number"),
        "MLSTACK_AIRBYTE_DUCKDB_DESTINATION_PATH": ("/tmp/w.duckdb", "under /local/"),
    }


# what else a variable's check needs set (a token is checked with a channel, ...)
CONTEXT = {
    "MLSTACK_SLACK_TOKEN": {"MLSTACK_SLACK_CHANNEL": "#c"},
    **dict.fromkeys(
        [
            "MLSTACK_AIRBYTE_WORKSPACE_ID",
            "MLSTACK_AIRBYTE_CLIENT_ID",
            "MLSTACK_AIRBYTE_CLIENT_SECRET",
        ],
        SERVER,
    ),
}


def test_the_documented_variables_are_the_settings():
    read = {field.alias for field in Settings.model_fields.values()}

    assert set(documented()) == read
    assert len(documented()) == len(set(documented()))  # each documented once


def test_every_documented_variable_with_a_bad_value_fails_in_one_line_naming_it(tmp_path: Path):
    cases = bad_values(tmp_path)
    assert set(cases) == set(documented())

    for variable, (value, expected) in cases.items():
        with pytest.raises(SettingsError) as raised:
            settings_from({**CONTEXT.get(variable, {}), variable: value})
        message = str(raised.value)
        assert "\n" not in message, message
        assert variable in message and expected in message, (variable, message)
        if variable in SECRETS and value.strip():  # a secret is named, its value never shown
            assert value not in message, message


def test_every_default_loads_and_empty_means_the_default():
    defaults = settings_from({})

    assert settings_from({"MLSTACK_SENSOR_INTERVAL_SECONDS": ""}) == defaults
    default = Settings.model_fields["sensor_interval_seconds"].default
    assert defaults.sensor_interval_seconds == default
    assert settings_from({"MLSTACK_WAREHOUSE": "DuckDB"}).warehouse == "duckdb"
    assert settings_from(SERVER).airbyte == "server"
