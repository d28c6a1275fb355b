"""The private APIs fenced in `mlstack_assets/compat/` still do what mlstack relies on.

Each test exercises what mlstack needs of the dependency, so that an upgrade that changes
it fails here, naming the entry to revisit."""

import subprocess

from mlstack_assets.compat import InstalledDbtCliResource
from mlstack_assets.transform.project import dbt_project, dbt_vars_args
from tests.support.settings import settings_from


def test_dbt_runs_without_asking_its_version_or_opening_an_adapter_here(monkeypatch):
    """`InstalledDbtCliResource.cli` starts dbt with no `dbt --version` subprocess and no
    in-process adapter: if dagster-dbt stops reading `_cli_version` or building the adapter
    through `_initialize_dbt_core_adapter`, the patched subprocess call is reached, or an
    adapter appears."""
    project = dbt_project(settings_from({}))
    resource = InstalledDbtCliResource(project_dir=project)

    def no_version_subprocess(*args, **kwargs):
        raise AssertionError(f"dagster-dbt ran {args[0]!r} to learn dbt's version")

    monkeypatch.setattr(subprocess, "check_output", no_version_subprocess)
    import dagster_dbt.core.resource as dagster_dbt_resource

    monkeypatch.setattr(dagster_dbt_resource, "check_output", no_version_subprocess, raising=False)
    invocation = resource.cli(["parse", "--quiet", *dbt_vars_args(settings_from({}))])
    invocation.wait()

    assert invocation.is_successful()
    assert invocation.adapter is None
    assert str(resource._cli_version).startswith("1.")


def test_airbyte_api_calls_go_through_the_retrying_request():
    """mlstack's client overrides `AirbyteClient._single_request`: a call of the client's
    public methods must still go through it (the 503 is retried by mlstack's policy and
    logged; dagster-airbyte's own retry would not log it)."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from dagster_airbyte.resources import AirbyteClient

    from mlstack_assets.compat import retrying_airbyte_client

    answers = [503, 200]

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # token requests and API calls alike
            status = answers.pop(0) if "connections" in self.path else 200
            body = json.dumps({"access_token": "t", "connectionId": "c", "name": "x"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    client = AirbyteClient(
        rest_api_base_url=f"{base}/api/public/v1",
        configuration_api_base_url=f"{base}/api/v1",
        workspace_id="w",
        client_id="c",
        client_secret="s",
        request_max_retries=0,
        request_retry_delay=0,
        request_timeout=5,
    )
    logged = []
    try:
        transient, no_delay = (lambda status: status == 503), (lambda _: 0)
        retrying = retrying_airbyte_client(client, 2, logged.append, transient, no_delay)
        details = retrying.get_connection_details("c")
    finally:
        server.shutdown()

    assert details["connectionId"] == "c"
    assert answers == []
    assert len(logged) == 1 and "HTTP 503" in logged[0] and "retry 1 of 2" in logged[0]


def test_a_sqlite_instance_is_told_from_one_that_is_not():
    """Orphaned runs are failed only on an instance whose runs are kept here."""
    from dagster import DagsterInstance, instance_for_test

    from mlstack_assets.compat import runs_stored_in_sqlite

    with instance_for_test() as instance:  # SQLite files in a temporary DAGSTER_HOME
        assert runs_stored_in_sqlite(instance)
    with DagsterInstance.ephemeral() as instance:  # in memory
        assert not runs_stored_in_sqlite(instance)


def test_gx_duckdb_datasource_returns_metrics_from_a_duckdb_file(tmp_path):
    """The reason for `compat/gx_duckdb.py`: GX's generic SQL engine read metric rows after
    closing its connection, and DuckDB had dropped them. If GX ever keeps its connection
    open on its own, or registers a DuckDB type of its own, this test says so."""
    import duckdb
    import great_expectations as gx
    import great_expectations.expectations as gxe

    from mlstack_assets.compat import gx_duckdb  # noqa: F401  registers add_mlstack_duckdb

    database = tmp_path / "w.duckdb"
    with duckdb.connect(str(database)) as conn:
        conn.execute("create schema s; create table s.t as select range as id from range(7)")
    context = gx.get_context(mode="ephemeral")
    assert not hasattr(context.data_sources, "add_duckdb"), "GX now has a DuckDB datasource"
    datasource = context.data_sources.add_mlstack_duckdb(
        name="w", connection_string=f"duckdb:///{database}"
    )
    asset = datasource.add_table_asset(name="t", table_name="t", schema_name="s")
    batch = asset.add_batch_definition_whole_table("all").get_batch()
    try:
        result = batch.validate(gxe.ExpectTableRowCountToEqual(value=7))
    finally:  # as `validate_table` closes it
        datasource.get_execution_engine().close()
        datasource.get_engine().dispose()
    assert result.success, result
    assert result.result["observed_value"] == 7
    with duckdb.connect(str(database)) as conn:  # closed: the file is free for a writer
        conn.execute("insert into s.t values (8)")
