"""The whole graph on BigQuery's wire protocol (bqemulator), against the DuckDB run.

The graph runs exactly as in production with `MLSTACK_WAREHOUSE=bigquery`: each extract
is checkpointed in the lake on (emulated) Cloud Storage and loaded into
`mlops_course_staging` by a Parquet load job from its gs:// URI, the GX suites run as BigQuery
SQL (sqlalchemy-bigquery), publishing is a copy job, dbt builds on the `bigquery` target
and the ML assets go through the BigQuery IO manager. Only the endpoint and the (dummy)
credentials differ; see tests/support/bigquery_emulator.py for what the emulator needs.
"""

import datetime as dt
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from dagster import AssetKey, ExecuteInProcessResult, instance_for_test

from mlstack_assets.lake import Lake
from mlstack_assets.lake.checkpoints import checkpoints
from tests.conftest import REPO_ROOT, BigQueryStack, Stack
from tests.support.bad_inputs import BAD_INPUTS, materialize_bad_input
from tests.support.bigquery_emulator import PROJECT, BigQueryEmulator
from tests.support.fixture_data import PROJECT_TAGS, PROJECTS, write_projects, write_tags
from tests.support.lakes import warehouse_lake
from tests.support.processes import dagster_home, stop
from tests.support.results import failure_messages, materialized_keys

pytestmark = pytest.mark.slow  # starts the emulator

DATASET = "mlops_course"
LABELED_COLUMNS = "id, created_on, title, description, tag"
SPLITS_COLUMNS = "id, created_on, text, tag, split"
LOCATION = "EU"


def _plain(value):
    """One representation for both warehouses: UTC-naive timestamps, ints for whole numbers."""
    if isinstance(value, dt.datetime) and value.tzinfo is not None:
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)
    if isinstance(value, Decimal | float) and value == int(value):
        return int(value)
    return value


def rows(query) -> list[tuple]:
    return [tuple(_plain(v) for v in row) for row in query]


@pytest.fixture(scope="module")
def bigquery_run(
    bigquery_emulator: BigQueryEmulator, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[BigQueryStack, ExecuteInProcessResult]]:
    """The whole graph, once, on BigQuery, from the same fixture files as the DuckDB run."""
    root = tmp_path_factory.mktemp("bigquery_run")
    with pytest.MonkeyPatch.context() as monkeypatch, instance_for_test() as instance:
        monkeypatch.setenv("MLSTACK_WAREHOUSE", "bigquery")
        monkeypatch.setenv("MLSTACK_BQ_LOCATION", LOCATION)  # not the default (US)
        monkeypatch.delenv("MLSTACK_DATASET", raising=False)
        monkeypatch.delenv("MLSTACK_AIRBYTE", raising=False)
        for name, value in bigquery_emulator.environment.items():
            monkeypatch.setenv(name, value)
        monkeypatch.setenv(
            "MLSTACK_PROJECTS_URL", str(write_projects(root / "src" / "projects.csv"))
        )
        monkeypatch.setenv("MLSTACK_TAGS_URL", str(write_tags(root / "src" / "tags.csv")))
        stack = BigQueryStack(
            root=root, monkeypatch=monkeypatch, instance=instance, emulator=bigquery_emulator
        )
        yield stack, stack.materialize()


@pytest.fixture
def published_bigquery_stack(
    stack: Stack,
    bigquery_run: tuple[BigQueryStack, ExecuteInProcessResult],
    monkeypatch: pytest.MonkeyPatch,
) -> BigQueryStack:
    """A fresh Dagster instance and sources, on the BigQuery dataset the whole run published."""
    published, result = bigquery_run
    assert result.success, failure_messages(result)
    monkeypatch.setenv("MLSTACK_WAREHOUSE", "bigquery")
    for name, value in published.emulator.environment.items():
        monkeypatch.setenv(name, value)
    return BigQueryStack(
        root=stack.root,
        monkeypatch=monkeypatch,
        instance=stack.instance,
        emulator=published.emulator,
    )


def published_tables(stack: BigQueryStack) -> dict[str, list[tuple]]:
    """Every table and view in the published dataset, every row."""
    with stack.emulator.client() as client:
        names = sorted(table.table_id for table in client.list_tables(DATASET))
    return {name: stack.table_bytes(f"{DATASET}.{name}") for name in names}


def test_whole_graph_runs_on_bigquery_with_every_check_passing(
    bigquery_run: tuple[BigQueryStack, ExecuteInProcessResult],
):
    stack, result = bigquery_run

    assert result.success, failure_messages(result)
    assert materialized_keys(result) >= {
        "projects",
        "tags",
        "labeled_projects",
        "ml_dataset",
        "ml_splits",
        "tag_distribution",
    }
    evaluations = result.get_asset_check_evaluations()
    expected = {key for key in stack.definitions().resolve_asset_graph().asset_check_keys}
    assert {(e.asset_key, e.check_name) for e in evaluations} == {
        (key.asset_key, key.name) for key in expected
    }
    assert [e.check_name for e in evaluations if not e.passed] == []
    labeled = result.asset_materializations_for_node("dbt_models")
    [labeled] = [m for m in labeled if m.asset_key == AssetKey("labeled_projects")]
    assert labeled.metadata["dagster/row_count"].value == len(PROJECTS)


def test_every_dataset_is_in_the_configured_location(
    bigquery_run: tuple[BigQueryStack, ExecuteInProcessResult],
):
    stack, _ = bigquery_run
    with stack.emulator.client() as client:
        published = client.get_dataset(DATASET).location
        staging = client.get_dataset(f"{DATASET}_staging").location
    # a copy job cannot cross locations: staging must live where the published tables do
    assert published == LOCATION
    assert staging == LOCATION


def test_labeled_projects_and_ml_splits_equal_the_duckdb_run_row_for_row(
    bigquery_run: tuple[BigQueryStack, ExecuteInProcessResult], published_stack: Stack
):
    big, _ = bigquery_run
    tables = (("labeled_projects", LABELED_COLUMNS), ("ml_splits", SPLITS_COLUMNS))

    def read(stack: Stack) -> dict[str, list[tuple]]:
        return {
            table: rows(stack.query(f"select {columns} from {DATASET}.{table} order by id"))
            for table, columns in tables
        }

    duck_default, big_default = read(published_stack), read(big)
    # With the default fractions every tag of the small fixtures is all train; split again
    # with larger fractions on both warehouses, so that md5(seed:id) decides the split.
    config = {"ops": {"ml_splits": {"config": {"validation_fraction": 0.3, "test_fraction": 0.3}}}}
    assert published_stack.materialize("ml_splits", run_config=config).success
    big.monkeypatch.setenv("MLSTACK_WAREHOUSE", "bigquery")  # published_stack set duckdb
    for name, value in big.emulator.environment.items():  # and its own lake
        big.monkeypatch.setenv(name, value)
    resplit = big.materialize("ml_splits", run_config=config)
    assert resplit.success, failure_messages(resplit)
    duck_resplit, big_resplit = read(published_stack), read(big)

    assert len(big_default["labeled_projects"]) == len(PROJECTS)
    assert big_default == duck_default
    assert big_resplit == duck_resplit
    assert {split for *_, split in big_resplit["ml_splits"]} == {"train", "validation", "test"}


def test_each_step_used_its_bigquery_path(
    bigquery_run: tuple[BigQueryStack, ExecuteInProcessResult],
):
    stack, result = bigquery_run
    with stack.emulator.client() as client:
        # a Parquet load job from the checkpoint in the lake staged each sync, with the
        # manifest's schema (Airbyte's columns included)
        staged = client.get_table(f"{DATASET}_staging.projects")
        assert [(f.name, f.field_type) for f in staged.schema][-3:] == [
            ("_airbyte_raw_id", "STRING"),
            ("_airbyte_extracted_at", "TIMESTAMP"),
            ("_airbyte_meta", "JSON"),
        ]
        # publish: a table copy job per published table, replacing the destination
        copies = {
            job.destination.table_id: job.write_disposition
            for job in client.list_jobs(all_users=True, page_size=10_000)  # bqemulator: one page
            if job.job_type == "copy" and job.destination.dataset_id == DATASET
        }
        # (labeled_projects and the ML tables too: built in the audit dataset, audited there)
        assert copies == dict.fromkeys(
            ["projects", "tags", "labeled_projects", "ml_dataset", "ml_splits", "tag_distribution"],
            "WRITE_TRUNCATE",
        )
        # dbt built and tested its models in the audit dataset first
        audited = {t.table_id for t in client.list_tables(f"{DATASET}_audit")}
        assert {"labeled_projects", "ml_splits"} <= audited
        # dbt-bigquery: views for staging, a table for the mart
        kinds = {t.table_id: t.table_type for t in client.list_tables(DATASET)}
        assert kinds["stg_mlops_course__projects"] == "VIEW"
        assert kinds["labeled_projects"] == "TABLE"
    # GX validated the BigQuery tables
    gx = [
        e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == AssetKey("projects") and "expectation" in e.metadata
    ]
    assert len(gx) == 12  # the projects suite
    assert {e.metadata["table"].value for e in gx} == {f"{DATASET}_staging.projects"}
    # the BigQuery IO manager: every ML asset is SQL, built and published in the warehouse
    splits = result.asset_materializations_for_node("ml_splits")[0].metadata
    assert splits["dagster/row_count"].value == len(
        stack.query(f"select id from {DATASET}.ml_splits")
    )
    # every ML table is built by SQL in the audit dataset and published by the IO manager
    distribution = stack.query(f"select * from {DATASET}.tag_distribution")
    assert len(distribution) == len(set(PROJECT_TAGS.values()))  # one row per tag
    # the load jobs as the client sent them (before the gateway's link, see its docstring)
    loads = [load for load in stack.emulator.gateway.loads if load[0] == f"{DATASET}_staging"]
    assert {table for _, table, _, _ in loads} >= {"projects", "tags"}
    assert {source_format for _, _, source_format, _ in loads} == {"PARQUET"}
    lake = warehouse_lake()  # the project and dataset's part of the lake's bucket
    assert lake.root.startswith(f"{stack.emulator.lake}/warehouses/bigquery-")
    for _, table, _, uris in loads:
        assert uris[0].startswith(f"{lake.root}/staging/raw_{table}/extracted_at=")
    # the checkpoints are objects in the lake's bucket; staging holds exactly their rows
    for source in ("projects", "tags"):
        [checkpoint] = checkpoints(lake, source)
        checkpoint.verify()  # read back through the Cloud Storage API
        assert checkpoint.manifest["audit"]["published"]
        on_disk = stack.emulator.storage_root / checkpoint.data_uri.removeprefix("gs://")
        with duckdb.connect() as conn:
            expected = conn.execute(
                f"select id from read_parquet('{on_disk}', hive_partitioning = false) order by 1"
            ).fetchall()
        assert sorted(stack.query(f"select id from {DATASET}_staging.{source}")) == expected
    assert stack.emulator.gateway.load_uris_linked >= 2
    # dbt created labeled_projects with its enforced contract's column list
    assert stack.emulator.gateway.contract_tables_created >= 1
    # labeled_projects and the ML tables were exported to the lake as versions
    assert stack.emulator.gateway.extracts_uploaded >= 4


WAP_CASES = ("tags without an id column", "duplicate ids", "a project without a tag")


@pytest.mark.parametrize(
    "source, make_bad_file, expected",
    [pytest.param(s, m, e, id=name) for s, name, m, e in BAD_INPUTS if name in WAP_CASES],
)
def test_bad_input_on_bigquery_leaves_every_published_table_unchanged(
    published_bigquery_stack: BigQueryStack, source: str, make_bad_file, expected: list[str]
):
    stack = published_bigquery_stack
    before = published_tables(stack)

    materialize_bad_input(stack, source, make_bad_file, expected)

    assert {"projects", "tags", "labeled_projects", "ml_splits"} <= set(before)
    assert published_tables(stack) == before


def test_make_run_against_a_running_emulator_as_the_readme_shows(stack: Stack, tmp_path: Path):
    # terminal 1: `make bigquery-emulator-serve` (here on a free port and a temporary directory)
    serve = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.support.bigquery_emulator",
            "--port",
            "0",
            "--workdir",
            str(tmp_path / "emulator"),
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        env_file = tmp_path / "emulator" / "env"
        deadline = time.monotonic() + 180
        while not env_file.exists():
            assert serve.poll() is None and time.monotonic() < deadline, (
                "the emulator did not start"
            )
            time.sleep(0.5)
        # terminal 2: `. .mlstack/bqemulator/env && make run`
        completed = subprocess.run(
            ["bash", "-c", f". {env_file} && make --no-print-directory run"],
            cwd=REPO_ROOT,
            env={
                **os.environ,
                "DAGSTER_HOME": str(dagster_home(tmp_path / "home")),
                "MLSTACK_DATASET": "demo",
            },
            capture_output=True,
            text=True,
            timeout=900,
        )

        assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
        assert "SUCCESS" in completed.stdout
        assert "warehouse: bigquery mlstack-emulator, dataset demo" in completed.stdout
        exported = dict(
            line.removeprefix("export ").split("=", 1) for line in env_file.read_text().splitlines()
        )
        emulator = BigQueryEmulator(
            exported["BIGQUERY_EMULATOR_HOST"],
            PROJECT,
            Path(exported["GOOGLE_APPLICATION_CREDENTIALS"]),
            None,
            None,
        )
        with emulator.client() as client:
            [(count, tagged)] = [
                tuple(row.values())
                for row in client.query(
                    "select count(*), count(tag) from demo.labeled_projects"
                ).result()
            ]
        assert (count, tagged) == (len(PROJECTS), len(PROJECTS))
    finally:
        stop(serve)


@pytest.fixture
def bigquery_warehouse(bigquery_emulator: BigQueryEmulator, monkeypatch: pytest.MonkeyPatch):
    """mlstack's BigQuery warehouse on the emulator, built from settings as in production."""
    from mlstack_assets.settings import load_settings
    from mlstack_assets.warehouse.bigquery import build_bigquery_resources

    monkeypatch.setenv("MLSTACK_WAREHOUSE", "bigquery")
    monkeypatch.setenv("MLSTACK_BQ_LOCATION", LOCATION)
    for name, value in bigquery_emulator.environment.items():
        monkeypatch.setenv(name, value)
    bigquery_emulator.gateway.faults.clear()
    yield build_bigquery_resources(load_settings())["warehouse"]
    bigquery_emulator.gateway.faults.clear()


def _calls_since(emulator: BigQueryEmulator, first: int, method: str, path: str) -> int:
    return sum(1 for call in emulator.gateway.calls[first:] if call[:2] == (method, path))


def _retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if "BigQuery " in r.getMessage()]


def test_transient_bigquery_errors_are_retried_with_backoff_and_logged(
    bigquery_warehouse, bigquery_emulator: BigQueryEmulator, caplog: pytest.LogCaptureFixture
):
    project = bigquery_emulator.project
    datasets = f"/bigquery/v2/projects/{project}/datasets"
    bigquery_emulator.gateway.faults[("POST", datasets)] = [503, 502]
    calls_before = len(bigquery_emulator.gateway.calls)
    with caplog.at_level("WARNING", logger="dagster"):
        bigquery_warehouse.ensure_dataset("retry_probe")

    lines = _retry_lines(caplog)
    assert len(lines) == 2, lines
    assert "ServiceUnavailable" in lines[0] and "retry 1" in lines[0]
    assert "BadGateway" in lines[1] and "retry 2" in lines[1]
    with bigquery_emulator.client() as client:
        assert client.get_dataset(f"{project}.retry_probe").dataset_id == "retry_probe"
    # two failures, then the create
    assert _calls_since(bigquery_emulator, calls_before, "POST", datasets) == 3


def test_a_bad_bigquery_request_is_not_retried(
    bigquery_warehouse, bigquery_emulator: BigQueryEmulator, caplog: pytest.LogCaptureFixture
):
    from google.api_core.exceptions import BadRequest

    project = bigquery_emulator.project
    datasets = f"/bigquery/v2/projects/{project}/datasets"
    bigquery_emulator.gateway.faults[("POST", datasets)] = [400]
    calls_before = len(bigquery_emulator.gateway.calls)

    with caplog.at_level("WARNING", logger="dagster"), pytest.raises(BadRequest):
        bigquery_warehouse.ensure_dataset("never_created")

    assert _retry_lines(caplog) == []
    assert _calls_since(bigquery_emulator, calls_before, "POST", datasets) == 1


def test_raw_steps_staging_together_on_a_fresh_dataset_all_succeed(
    bigquery_emulator: BigQueryEmulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    """On BigQuery the raw steps run in parallel processes: on a fresh staging dataset each
    creates it (exists_ok) and loads its checkpoint; none fails on the others' creation."""
    import threading
    from datetime import datetime, timezone

    from mlstack_assets.lake.checkpoints import write_checkpoint
    from mlstack_assets.settings import load_settings
    from mlstack_assets.warehouse.bigquery import build_bigquery_resources

    for name, value in bigquery_emulator.environment.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("MLSTACK_WAREHOUSE", "bigquery")
    monkeypatch.setenv("MLSTACK_DATASET", "fresh_race")
    warehouse = build_bigquery_resources(load_settings())["warehouse"]
    streams = ["projects", "tags", "third", "fourth"]  # more starters, a wider race
    lake = warehouse_lake()
    made = {}
    for position, stream in enumerate(streams):
        parquet = tmp_path / f"{stream}.parquet"
        with duckdb.connect() as conn:
            conn.execute(f"copy (select '{position}' as id) to '{parquet}' (format parquet)")
        made[stream] = write_checkpoint(
            lake, stream, parquet, datetime.now(timezone.utc),
            {"rows": 1, "columns": [["id", "VARCHAR"]]},
        )  # fmt: skip
    together = threading.Barrier(len(streams))
    outcomes: dict[str, str] = {}

    def stage(stream: str) -> None:
        together.wait(timeout=60)
        try:
            warehouse.stage_checkpoint(stream, made[stream])
            outcomes[stream] = "staged"
        except Exception as error:  # what a raw step would fail with
            outcomes[stream] = repr(error)[:300]

    threads = [threading.Thread(target=stage, args=(s,)) for s in streams]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    assert outcomes == dict.fromkeys(streams, "staged")
    for position, stream in enumerate(streams):
        assert warehouse.query(f"select id from `{PROJECT}.fresh_race_staging.{stream}`") == [
            (str(position),)
        ]


def test_a_published_version_on_bigquery_is_in_the_lake_and_restores(
    published_bigquery_stack: BigQueryStack,
):
    """BigQuery's versions: the publish exported labeled_projects to the `gs://` lake (an
    extract job), `read_version` reads it back without BigQuery, and a restore (a load job
    with WRITE_TRUNCATE) brings a damaged published table back to exactly that version."""
    from mlstack_assets.lake.restore import restore
    from mlstack_assets.lake.versions import current_version, read_version
    from mlstack_assets.settings import load_settings
    from mlstack_assets.warehouse.bigquery import build_bigquery_resources

    stack = published_bigquery_stack
    lake = warehouse_lake().root
    version = current_version(Lake(lake), "labeled_projects")
    assert version is not None and version.data_uri.startswith(f"{lake}/production/")
    published = rows(stack.query(f"select {LABELED_COLUMNS} from {DATASET}.labeled_projects"))
    kept = read_version("labeled_projects", version.id, lake=lake)
    assert sorted(rows(kept[LABELED_COLUMNS.split(", ")].itertuples(index=False))) == sorted(
        published
    )

    stack.query(f"delete from {DATASET}.labeled_projects where id > 2")  # an accident
    assert len(stack.query(f"select id from {DATASET}.labeled_projects")) < len(published)
    warehouse = build_bigquery_resources(load_settings())["warehouse"]
    restored = restore("labeled_projects", version.id[:15], lake, warehouse)
    assert restored.version.id == version.id
    assert sorted(
        rows(stack.query(f"select {LABELED_COLUMNS} from {DATASET}.labeled_projects"))
    ) == sorted(published)


def test_restore_brings_a_lost_bigquery_dataset_back_from_the_lake(
    published_bigquery_stack: BigQueryStack,
):
    """`mlstack restore` on BigQuery: the published dataset deleted, every table and view comes
    back from the `gs://` lake (load jobs, views as their last publish recorded them), and no
    source is read."""
    stack = published_bigquery_stack
    before = published_tables(stack)
    assert {"labeled_projects", "tags", "ml_splits"} <= set(before)
    with stack.emulator.client() as client:
        client.delete_dataset(DATASET, delete_contents=True)  # the warehouse is lost
    for source in ("projects", "tags"):
        stack.set_source(source, stack.root / "gone" / f"{source}.csv")

    restored = subprocess.run(
        [str(Path(sys.executable).parent / "mlstack"), "restore"],
        cwd=REPO_ROOT,
        env={**os.environ, "CI": "true"},
        capture_output=True,
        text=True,
        timeout=900,
    )

    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert published_tables(stack) == before
    assert f"{DATASET}.labeled_projects: version" in restored.stdout
