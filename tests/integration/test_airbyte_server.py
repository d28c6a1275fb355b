"""MLSTACK_AIRBYTE=server: dagster-airbyte drives an Airbyte API (a strict loopback stand-in).

No real Airbyte can run here; `tests/support/airbyte_api.py` answers the endpoints and holds
every REST request and answer to the models of Airbyte's own client, `airbyte-api`
(`tests/support/airbyte_contract.py`): a call dagster-airbyte or `airbyte-setup` makes that
the models refuse fails the test, and so does an answer of the stand-in they cannot parse.
The sync's data is staged by the stand-in (as Airbyte's destination would); the same audit
and publish then run as in the embedded mode.
"""

import json
import secrets
import socket
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
import requests
from airbyte_api import api as operations
from airbyte_api import models
from dagster import AssetKey
from dagster._serdes import serialize_value

from mlstack_assets.ingestion.airbyte_setup import AirbyteSetup
from mlstack_assets.settings import load_settings
from tests.conftest import Stack
from tests.support.airbyte_api import CONFIG, REST, FakeAirbyte, start_fake_airbyte
from tests.support.airbyte_contract import body_problems, query_problems
from tests.support.fixture_data import PROJECTS
from tests.support.results import failure_messages, materialization, materialized_keys


def stage_like_an_airbyte_destination(warehouse: Path, sources: Path):
    """Write `<staging>.<stream>` from the source CSV, with Airbyte's destination columns."""

    def on_sync(connection: dict, stream: str) -> None:
        staging = connection["namespaceFormat"]
        with duckdb.connect(str(warehouse)) as conn:
            conn.execute(f"create schema if not exists {staging}")
            conn.execute(
                f"create or replace table {staging}.{stream} as select *,"
                " uuid()::varchar as _airbyte_raw_id, now() as _airbyte_extracted_at,"
                " '{}'::json as _airbyte_meta, 1::bigint as _airbyte_generation_id"
                " from read_csv(?, header = true)",
                [str(sources / f"{stream}.csv")],
            )

    return on_sync


@pytest.fixture
def empty_airbyte(stack: Stack) -> Iterator[FakeAirbyte]:
    """An empty Airbyte workspace, and mlstack pointed at it."""
    api = FakeAirbyte(
        workspace_id="0b1c7c1e-5d2f-4a6e-9a0e-2f4c5d6e7f80",
        client_id="mlstack-ci",
        client_secret=f"secret-{secrets.token_hex(12)}",
    )
    httpd = start_fake_airbyte(api)
    env = {
        "MLSTACK_AIRBYTE": "server",
        "MLSTACK_AIRBYTE_API_URL": api.rest_url,
        "MLSTACK_AIRBYTE_CONFIG_API_URL": api.config_url,
        "MLSTACK_AIRBYTE_WORKSPACE_ID": api.workspace_id,
        "MLSTACK_AIRBYTE_CLIENT_ID": api.client_id,
        "MLSTACK_AIRBYTE_CLIENT_SECRET": api.client_secret,
        "MLSTACK_AIRBYTE_POLL_SECONDS": "0.05",
    }
    for name, value in env.items():
        stack.monkeypatch.setenv(name, value)
    yield api
    httpd.shutdown()
    httpd.server_close()
    assert api.violations == [], "a call the Airbyte API rejects, or an answer it would not give"


@pytest.fixture
def airbyte(stack: Stack, empty_airbyte: FakeAirbyte) -> FakeAirbyte:
    """An Airbyte workspace set up by `mlstack airbyte-setup`, and mlstack pointed at it."""
    connection_ids = AirbyteSetup(load_settings()).run()
    for source, connection_id in connection_ids.items():
        stack.monkeypatch.setenv(f"MLSTACK_AIRBYTE_{source.upper()}_CONNECTION_ID", connection_id)
    empty_airbyte.on_sync = stage_like_an_airbyte_destination(
        stack.warehouse_path, stack.root / "src"
    )
    return empty_airbyte


def connection_id(api: FakeAirbyte, source: str) -> str:
    return next(i for i, c in api.connections.items() if c["name"] == f"mlstack {source}")


def test_airbyte_setup_creates_the_lessons_objects_and_updates_them_on_rerun(
    stack: Stack, airbyte: FakeAirbyte
):
    first = {k: dict(v) for k, v in airbyte.connections.items()}

    again = AirbyteSetup(load_settings()).run()

    assert set(again.values()) == set(first)  # same connections, not new ones
    assert len(airbyte.sources) == 2 and len(airbyte.destinations) == 1
    assert airbyte.calls("PATCH", "/api/public/v1/connections") == 2
    for source in ("projects", "tags"):
        connection = airbyte.connections[connection_id(airbyte, source)]
        assert connection["namespaceFormat"] == "mlops_course_staging"
        assert connection["configurations"]["streams"] == [
            {"name": source, "syncMode": "full_refresh_overwrite"}
        ]
        source_config = airbyte.sources[connection["sourceId"]]["configuration"]
        assert source_config["dataset_name"] == source and source_config["format"] == "csv"
        assert source_config["url"] == str(stack.root / "src" / f"{source}.csv")
    [destination] = airbyte.destinations.values()
    assert destination["configuration"]["destinationType"] == "duckdb"


def test_airbyte_setup_for_bigquery_sends_a_destination_airbytes_models_accept(
    stack: Stack, empty_airbyte: FakeAirbyte
):
    key = stack.root / "key.json"
    key.write_text('{"type": "service_account", "project_id": "mlstack-demo"}')
    stack.monkeypatch.setenv("MLSTACK_WAREHOUSE", "bigquery")
    stack.monkeypatch.setenv("MLSTACK_BQ_PROJECT", "mlstack-demo")
    stack.monkeypatch.setenv("MLSTACK_BQ_LOCATION", "EU")
    stack.monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))

    AirbyteSetup(load_settings()).run()

    [destination] = empty_airbyte.destinations.values()
    assert destination["destinationType"] == "bigquery"
    assert destination["configuration"]["dataset_location"] == "EU"
    assert destination["configuration"]["credentials_json"] == key.read_text()
    assert len(empty_airbyte.connections) == 2


def test_the_contract_refuses_what_airbytes_models_refuse():
    job = {"jobId": 7, "status": "running", "jobType": "sync", "connectionId": "c"}
    assert body_problems({**job, "startTime": "2026-01-01T00:00:00Z"}, models.JobResponse) == []

    assert body_problems({**job, "jobId": "7", "status": "done"}, models.JobResponse) == [
        "body.jobId: '7' is not int",
        "body.startTime: required by JobResponse, missing",
        "body.status: 'done' is not one of"
        " ['pending', 'running', 'incomplete', 'failed', 'succeeded', 'cancelled']",
    ]
    connection = {"sourceId": "s", "destinationId": "d", "namespace_format": "staging"}
    connection["configurations"] = {"streams": [{"name": "tags", "syncMode": "overwrite"}]}
    problems = body_problems(connection, models.ConnectionCreateRequest)
    assert "body.namespace_format: not a field of ConnectionCreateRequest" in problems
    assert any(
        p.startswith("body.configurations.streams[0].syncMode: 'overwrite'") for p in problems
    )
    file_source = {"sourceType": "file", "url": "/x.csv", "dataset_name": "tags"}
    source = {"name": "tags", "workspaceId": "w", "configuration": file_source}
    assert body_problems(source, models.SourceCreateRequest) == [
        "body.configuration.provider: required by SourceFile, missing"
    ]
    assert query_problems({"workspaceId": ["w"]}, operations.ListJobsRequest) == [
        "query workspaceId: not a parameter of ListJobsRequest (['connectionId',"
        " 'createdAtEnd', 'createdAtStart', 'jobType', 'limit', 'offset', 'orderBy', 'status',"
        " 'updatedAtEnd', 'updatedAtStart', 'workspaceIds'])"
    ]


def test_the_stand_in_answers_a_refused_request_400_and_its_own_bad_answer_500(
    airbyte: FakeAirbyte,
):
    headers = {"Authorization": f"Bearer {airbyte.token}"}
    job = {"connectionId": connection_id(airbyte, "tags"), "jobType": "synch"}

    refused = requests.post(f"{airbyte.rest_url}/jobs", json=job, headers=headers, timeout=10)
    running = airbyte.add_running_job(job["connectionId"], ["running"])
    del airbyte.jobs[running]["startTime"]  # an answer Airbyte's client cannot parse
    broken = requests.get(f"{airbyte.rest_url}/jobs/{running}", headers=headers, timeout=10)

    assert refused.status_code == 400 and "body.jobType: 'synch' is not one of" in refused.text
    assert broken.status_code == 500
    assert "body.startTime: required by JobResponse, missing" in broken.text
    assert len(airbyte.violations) == 2 and not airbyte.jobs.keys() - {running}
    airbyte.violations.clear()  # both were meant


def test_server_sync_materializes_projects_and_tags_and_everything_downstream(
    stack: Stack, airbyte: FakeAirbyte
):
    result = stack.materialize()

    assert result.success, failure_messages(result)
    assert airbyte.calls("POST", "/api/public/v1/jobs") == 2
    assert {"projects", "tags", "labeled_projects", "ml_splits"} <= materialized_keys(result)
    metadata = materialization(result, "tags").metadata
    assert metadata["airbyte_connection_id"].value == connection_id(airbyte, "tags")
    assert metadata["airbyte_job_status"].value == "succeeded"
    assert stack.query("select count(*) from mlops_course.labeled_projects") == [(len(PROJECTS),)]
    assert all(e.passed for e in result.get_asset_check_evaluations())


@pytest.mark.parametrize("status", ["failed", "cancelled"])
def test_failed_or_cancelled_airbyte_job_fails_the_asset_with_job_id_and_status(
    stack: Stack, airbyte: FakeAirbyte, status: str
):
    assert stack.materialize().success
    before = stack.table_bytes("mlops_course.tags")
    airbyte.job_script = ["running", status]

    result = stack.materialize("tags*")

    assert not result.success
    job_id = max(airbyte.jobs)
    assert airbyte.jobs[job_id]["status"] == status
    message = failure_messages(result)
    assert "source 'tags'" in message
    assert (
        f"Airbyte job {job_id} on connection {connection_id(airbyte, 'tags')}"
        f" ended with status {status.upper()}"
    ) in message
    assert "labeled_projects" not in materialized_keys(result)
    assert stack.table_bytes("mlops_course.tags") == before


def test_a_sync_already_running_is_waited_for_not_duplicated(stack: Stack, airbyte: FakeAirbyte):
    running = airbyte.add_running_job(
        connection_id(airbyte, "tags"), ["running", "running", "succeeded"]
    )

    result = stack.materialize("tags")

    assert result.success, failure_messages(result)
    assert airbyte.calls("POST", "/api/public/v1/jobs") == 0
    assert airbyte.jobs[running]["status"] == "succeeded"
    metadata = materialization(result, "tags").metadata
    assert metadata["airbyte_job_id"].value == running


def test_definitions_load_without_calling_the_airbyte_api(stack: Stack, airbyte: FakeAirbyte):
    before = len(airbyte.requests)

    graph = stack.definitions().resolve_asset_graph()

    assert len(airbyte.requests) == before
    assert {AssetKey("projects"), AssetKey("tags")} <= set(graph.get_all_asset_keys())


def test_definitions_load_when_the_airbyte_api_is_down(stack: Stack, airbyte: FakeAirbyte):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    stack.monkeypatch.setenv("MLSTACK_AIRBYTE_API_URL", f"{dead}/api/public/v1")

    graph = stack.definitions().resolve_asset_graph()
    result = stack.materialize("tags")

    assert AssetKey("tags") in graph.get_all_asset_keys()
    assert not result.success
    assert "source 'tags'" in failure_messages(result)
    assert "Max retries" in failure_messages(result)


def test_airbyte_api_resets_and_5xx_are_retried_with_backoff_and_logged(
    stack: Stack, airbyte: FakeAirbyte
):
    airbyte.faults[f"{REST}/jobs"] = ["reset", 502]  # the first two job requests fail

    result = stack.materialize("tags")

    assert result.success, failure_messages(result)
    retries = [
        e.user_message for e in stack.instance.all_logs(result.run_id) if "retry " in e.user_message
    ]
    assert len(retries) == 2, retries
    assert "retry 1 of 3 in 1 s" in retries[0] and "ConnectionError" in retries[0]
    assert "HTTP 502" in retries[1] and "retry 2 of 3 in 2 s" in retries[1]
    jobs = [request for request in airbyte.requests if request[1].startswith(f"{REST}/jobs")]
    assert jobs[0] == jobs[1] == jobs[2]  # the same request: failed twice, then answered


def test_airbyte_api_404_is_not_retried(stack: Stack, airbyte: FakeAirbyte):
    airbyte.faults[f"{CONFIG}/connections/get"] = [404]

    result = stack.materialize("tags")

    assert not result.success
    message = failure_messages(result)
    assert "source 'tags'" in message and "HTTP 404" in message and "not retried" in message
    assert airbyte.calls("POST", f"{CONFIG}/connections/get") == 1
    assert not [e for e in stack.instance.all_logs(result.run_id) if "retry " in e.user_message]


def test_credentials_never_appear_in_logs_or_event_metadata(
    stack: Stack, airbyte: FakeAirbyte, capfd: pytest.CaptureFixture
):
    result = stack.materialize()

    assert result.success, failure_messages(result)
    captured = capfd.readouterr()
    events = [serialize_value(record) for record in stack.instance.all_logs(result.run_id)]
    for secret in (airbyte.client_secret, airbyte.token):
        assert secret not in captured.out and secret not in captured.err
        assert not any(secret in event for event in events)
    assert json.dumps(events)  # the event log was really read
    assert len(events) > 50
