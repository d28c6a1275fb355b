"""The raw layer: the real connector's output read by DuckDB, checked against DuckDB's own
reading of the file, kept as an immutable Parquet checkpoint in the lake.

Real connector, real DuckDB, a real lake folder; every fixture file is written here.
"""

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from mlstack_assets.lake import Lake, LakeError, file_sha256
from mlstack_assets.lake.checkpoints import (
    checkpoints,
    prune,
    record_audit,
    staging_key,
    write_checkpoint,
)
from tests.conftest import REPO_ROOT, Stack
from tests.support.fixture_data import PROJECT_TAGS, PROJECTS, write_csv, write_projects, write_tags
from tests.support.lakes import warehouse_lake
from tests.support.results import (
    checks,
    failure_messages,
    materialization,
    materialized_keys,
    snapshot,
)


def lake(stack: Stack) -> Lake:
    """The stack's warehouse's part of the lake (the stack's environment configures it)."""
    return warehouse_lake()


def raw_rows(stack: Stack, table: str, columns: str) -> list[tuple]:
    return stack.query(f"select {columns} from {table} order by cast(id as bigint)")


def test_a_utf8_file_with_a_byte_order_mark_passes(stack: Stack):
    # what Excel's "CSV UTF-8" writes: EF BB BF before the header
    path = write_projects(stack.root / "bom" / "projects.csv")
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    stack.set_source("projects", path)

    result = stack.materialize("projects")

    assert result.success, failure_messages(result)
    assert all(check.passed for check in checks(result, "projects").values())
    assert raw_rows(stack, "mlops_course.projects", "id, title") == [
        (str(p[0]), p[2]) for p in sorted(PROJECTS)
    ]


def test_a_200_kb_first_field_and_crlf_line_ends_pass_intact(stack: Stack):
    long_description = 'A very long description, with commas and "quotes". ' * 4000
    assert len(long_description) > 200_000
    rows = [(PROJECTS[0][0], PROJECTS[0][1], PROJECTS[0][2], long_description), *PROJECTS[1:]]
    path = write_projects(stack.root / "long" / "projects.csv", rows)  # csv writes CRLF
    assert b"\r\n" in path.read_bytes()
    stack.set_source("projects", path)

    result = stack.materialize("projects")

    assert result.success, failure_messages(result)
    [(description,)] = stack.query(
        f"select description from mlops_course.projects where id = '{PROJECTS[0][0]}'"
    )
    assert description == long_description
    # a quoted line break arrives as the connector's reader gives it: LF
    [(multiline,)] = stack.query("select description from mlops_course.projects where id = '26'")
    assert multiline == PROJECTS[6][3]


def test_a_created_on_that_is_no_date_fails_its_check_with_sample_values(
    published_stack: Stack,
):
    before = snapshot(published_stack)
    rows = [(p[0], "next tuesday" if p[0] == 15 else p[1], p[2], p[3]) for p in PROJECTS]
    published_stack.set_source("projects", write_projects(published_stack.root / "p.csv", rows))

    result = published_stack.materialize("projects*")

    assert not result.success
    check = checks(result, "projects")["created_on_is_timestamp"]
    assert not check.passed
    samples = check.metadata["sample_unexpected_values"].value
    assert samples and samples[0][:2] == ["15", "next tuesday"]  # the id, the value
    assert all(isinstance(value, str | int | float | type(None)) for value in samples[0])
    assert "DagsterInvalidMetadata" not in failure_messages(result)
    assert "created_on_is_timestamp" in failure_messages(result)
    assert snapshot(published_stack) == before


def test_duplicate_column_names_in_the_header_fail_naming_them(published_stack: Stack):
    before = snapshot(published_stack)
    path = write_csv(published_stack.root / "t.csv", ["id", "tag", "tag"], [(6, "mlops", "x")])
    published_stack.set_source("tags", path)

    result = published_stack.materialize("tags")

    assert not result.success
    assert "the header names a column more than once: tag" in failure_messages(result)
    assert snapshot(published_stack) == before


def test_a_connector_that_fails_with_a_trace_error_fails_the_sync_with_its_cause(
    published_stack: Stack,
):
    # a line with a field too many, after CRLF lines: DuckDB reads the mixed line ends with
    # its strict mode off, so only the connector stops here, with a TRACE error and exit 1
    before = snapshot(published_stack)
    path = write_tags(published_stack.root / "t.csv")
    with path.open("ab") as handle:
        handle.write(b"40,mlops,one-field-too-many\n")
    published_stack.set_source("tags", path)

    result = published_stack.materialize("tags*")

    assert not result.success
    message = failure_messages(result)
    assert f"source 'tags' ({path}): the Airbyte File source connector failed:" in message
    assert "Expected 2 fields in line 10, saw 3 (ParserError)" in message
    assert "labeled_projects" not in materialized_keys(result)
    assert snapshot(published_stack) == before


def _connector_pids() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(part.endswith(b"/bin/source-file") for part in command) and b"read" in command:
            found.append(int(entry.name))
    return found


def test_a_connector_killed_mid_stream_fails_the_sync_and_changes_nothing(
    published_stack: Stack,
):
    before = snapshot(published_stack)
    many = {**PROJECT_TAGS, **{1000 + i: "mlops" for i in range(200_000)}}
    published_stack.set_source("tags", write_tags(published_stack.root / "big.csv", many))
    results = []
    run = threading.Thread(target=lambda: results.append(published_stack.materialize("tags*")))
    run.start()
    killed = []
    deadline = time.monotonic() + 240
    while not killed and run.is_alive() and time.monotonic() < deadline:
        for pid in _connector_pids():
            records = Path(f"/proc/{pid}/cwd") / "records.jsonl"
            if records.exists() and records.stat().st_size > 200_000:  # mid-stream
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
        time.sleep(0.05)
    run.join(timeout=300)

    assert killed, "the connector was never seen mid-stream"
    [result] = results
    assert not result.success
    message = failure_messages(result)
    assert "the Airbyte File source connector was killed by SIGKILL before it finished" in message
    assert "last stream status: RUNNING" in message
    assert snapshot(published_stack) == before
    assert checkpoints(lake(published_stack), "tags") == []  # nothing half-read was kept


def test_each_extract_is_a_new_checkpoint_its_manifest_matches_and_staging_equals_it(
    stack: Stack,
):
    first = stack.materialize("tags")
    assert first.success, failure_messages(first)
    [only] = checkpoints(lake(stack), "tags")
    first_bytes = Path(only.data_uri).read_bytes()
    stack.set_source("tags", write_tags(stack.root / "t2.csv", {**PROJECT_TAGS, 6: "mlops"}))

    second = stack.materialize("tags")

    assert second.success, failure_messages(second)
    newest, oldest = checkpoints(lake(stack), "tags")
    assert oldest.key == only.key and Path(oldest.data_uri).read_bytes() == first_bytes
    manifest = newest.manifest
    assert manifest["sha256"] == file_sha256(Path(newest.data_uri))
    assert manifest["rows"] == len(PROJECT_TAGS)
    assert [name for name, _ in manifest["columns"]] == [
        "id",
        "tag",
        "_airbyte_raw_id",
        "_airbyte_extracted_at",
        "_airbyte_meta",
    ]
    assert manifest["source_url"] == str(stack.root / "t2.csv")
    assert manifest["source_sha256"] == file_sha256(stack.root / "t2.csv")
    assert manifest["connector"] == "airbyte/source-file" and manifest["connector_version"]
    assert manifest["run_id"] == second.run_id
    assert manifest["audit"]["passed"] and manifest["audit"]["published"]
    with duckdb.connect() as conn:
        in_lake = conn.execute(
            f"select * from read_parquet('{newest.data_uri}', hive_partitioning = false)"
            " order by all"
        ).fetchall()
    assert stack.query("select * from mlops_course_staging.tags order by all") == in_lake
    metadata = materialization(second, "tags").metadata
    assert metadata["checkpoint_id"].value == newest.id
    assert metadata["checkpoint_sha256"].value == manifest["sha256"]


def test_a_failed_audit_keeps_its_checkpoint_with_the_outcome(published_stack: Stack):
    path = write_csv(
        published_stack.root / "t.csv", ["id", "tag"], [*sorted(PROJECT_TAGS.items()), (7, "x")]
    )
    published_stack.set_source("tags", path)

    result = published_stack.materialize("tags")

    assert not result.success
    [kept] = checkpoints(lake(published_stack), "tags")
    assert kept.manifest["audit"] == {
        **kept.manifest["audit"],
        "passed": False,
        "published": False,
        "failed_checks": ["id_is_unique"],
    }
    assert kept.uri in failure_messages(result)


def _parquet(path: Path, value: int) -> Path:
    with duckdb.connect() as conn:
        conn.execute(f"copy (select {value} as id) to '{path}' (format parquet)")
    return path


def test_pruning_keeps_the_newest_and_the_published_one(tmp_path: Path):
    from datetime import datetime, timedelta, timezone

    store = Lake(str(tmp_path / "lake"))
    start = datetime(2026, 12, 1, tzinfo=timezone.utc)
    made = []
    for i in range(5):
        made.append(
            write_checkpoint(
                store,
                "tags",
                _parquet(tmp_path / f"{i}.parquet", i),
                start + timedelta(minutes=i),
                {"rows": 1, "columns": [["id", "INTEGER"]]},
            )
        )
    # the second-oldest is what the published table came from; the newer ones failed
    record_audit(made[1], passed=True, failed_checks=[], published=True, run_id="r1")
    abandoned = f"{staging_key('tags')}/extracted_at=20261130T000000.000000Z"
    store.make_new_directory(abandoned)  # a writer killed before its manifest
    messages: list[str] = []

    removed = prune(store, "tags", keep=2, log=messages.append, now=time.time() + 7200)

    kept = [c.id for c in checkpoints(store, "tags")]
    assert kept == [made[4].id, made[3].id, made[1].id]
    assert sorted(removed) == sorted([made[0].id, made[2].id])
    assert not store.exists(abandoned)
    assert "removed 2 old checkpoints of tags and 1 left incomplete" in messages[0]


def test_a_checkpoint_is_never_overwritten_and_a_changed_file_is_noticed(tmp_path: Path):
    from datetime import datetime, timezone

    store = Lake(str(tmp_path / "lake"))
    moment = datetime(2026, 12, 1, tzinfo=timezone.utc)
    written = write_checkpoint(store, "tags", _parquet(tmp_path / "a.parquet", 1), moment, {})
    original = Path(written.data_uri).read_bytes()

    with pytest.raises(LakeError, match="never overwrites"):
        write_checkpoint(store, "tags", _parquet(tmp_path / "b.parquet", 2), moment, {})

    assert Path(written.data_uri).read_bytes() == original
    written.verify()
    Path(written.data_uri).write_bytes(original + b"\0")
    with pytest.raises(LakeError, match="was changed after it was written"):
        written.verify()


def test_the_embedded_path_runs_without_pyairbyte(stack: Stack, tmp_path: Path):
    """PyAirbyte is only the benchmark baseline's: a raw step must not import it."""
    script = """
import sys
sys.modules["airbyte"] = None  # importing it now raises ImportError
from dagster import instance_for_test
from mlstack_assets.definitions import build_definitions
with instance_for_test() as instance:
    job = build_definitions().resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, raise_on_error=False,
                                    asset_selection=[__import__("dagster").AssetKey("tags")])
print("RESULT", result.success)
print("LOADED", sorted(m for m in sys.modules if m == "airbyte" or m.startswith("airbyte.")))
"""
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ},
    )

    assert "RESULT True" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    assert "LOADED ['airbyte']" in done.stdout  # only the blocking placeholder
    assert done.returncode == 0


def test_a_connector_install_held_by_another_process_is_waited_for_a_bounded_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """A process killed mid-install releases the lock (the kernel drops it), but one that
    hangs holding it must not make every later step wait forever: the wait is bounded and
    the error says what it waited for."""
    from mlstack_assets.ingestion import connector

    monkeypatch.setattr(connector, "INSTALL_WAIT_SECONDS", 2)
    lock = tmp_path / ".install.lock"
    holder = subprocess.Popen(
        [
            sys.executable, "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'a');"
            " fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)",
            str(lock),
        ],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        started = time.monotonic()
        with pytest.raises(connector.ConnectorInstallError) as raised:
            connector.ensure_connector(tmp_path)
        assert time.monotonic() - started < 30
    finally:
        holder.kill()
        holder.wait()
    message = str(raised.value)
    assert "waiting for another process installing airbyte-source-file==0.5.39" in message
    assert str(lock) in message


def test_both_connectors_start_before_great_expectations_is_imported(stack: Stack):
    """The raw step starts every source's connector first, then imports Great Expectations
    (seconds) while they read: the imports are not on the sync's critical path."""
    script = """
import subprocess, sys, time
import mlstack_assets.ingestion.assets as raw
started, imported = [], []
Popen = subprocess.Popen
class Recorded(Popen):
    def __init__(self, args, *rest, **kwargs):
        if any(str(part).endswith("/bin/source-file") for part in args):
            started.append(time.monotonic())
        super().__init__(args, *rest, **kwargs)
subprocess.Popen = Recorded
gx_import = raw.import_great_expectations
def recorded_import():
    gx_import()
    imported.append(time.monotonic())
raw.import_great_expectations = recorded_import
from dagster import AssetKey, instance_for_test
from mlstack_assets.definitions import build_definitions
with instance_for_test() as instance:
    job = build_definitions().resolve_implicit_global_asset_job_def()
    result = job.execute_in_process(instance=instance, raise_on_error=False,
                                    asset_selection=[AssetKey("projects"), AssetKey("tags")])
print("RESULT", result.success)
print("STARTED_BEFORE_IMPORTED", len(started), all(t < imported[0] for t in started))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=600
    )

    assert "RESULT True" in done.stdout, done.stdout[-2000:] + done.stderr[-3000:]
    assert "STARTED_BEFORE_IMPORTED 2 True" in done.stdout, done.stdout[-2000:]
