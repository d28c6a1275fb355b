"""Every published table keeps its versions in the lake: listed, restored, read back, and
guarded against a valid-looking source that lost half its rows.

Real DuckDB, a real lake folder, the real graph; a Dagster instance in a home of its own
(the repo's dagster.yaml), shared by the in-process runs and the `mlstack` CLI.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, EventRecordsFilter

import mlstack_assets.ml.assets as ml_assets
from mlstack_assets.cli import run_config
from mlstack_assets.lake import Lake
from mlstack_assets.lake.restore import restore
from mlstack_assets.lake.versions import current_version_id, read_version, versions
from mlstack_assets.settings import load_settings
from mlstack_assets.warehouse.deployment import warehouse_deployment
from tests.conftest import REPO_ROOT, Stack
from tests.support.fixture_data import PROJECT_TAGS, PROJECTS, write_projects, write_tags
from tests.support.processes import dagster_home
from tests.support.results import (
    checks,
    failure_messages,
    materialization,
    materialized_keys,
    snapshot,
)

pytestmark = pytest.mark.slow  # the `mlstack` CLI in subprocesses
LABELED = "mlops_course.labeled_projects"
ML = ("ml_dataset", "ml_splits", "tag_distribution")
RETAGS = ({}, {6: "mlops"}, {6: "mlops", 7: "mlops"})  # three runs, three data sets


@pytest.fixture
def versioned(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """`stack` on a Dagster home of its own (CLI and in-process runs share it)."""
    home = dagster_home(stack.root / "home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    stack.instance = DagsterInstance.from_config(str(home))
    return stack


def run_with_tags(stack: Stack, retag: dict[int, str], name: str) -> None:
    stack.set_source("tags", write_tags(stack.root / f"{name}.csv", {**PROJECT_TAGS, **retag}))
    result = stack.materialize()
    assert result.success, failure_messages(result)


def mlstack(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(Path(sys.executable).parent / "mlstack"), *args],
        cwd=REPO_ROOT,
        env={**os.environ, "CI": "true"},
        capture_output=True,
        text=True,
        timeout=900,
    )


def lake_of(stack: Stack) -> Lake:
    return Lake(str(stack.root / "lake"))


def latest_materialization(instance: DagsterInstance, asset: str):
    [record] = instance.get_event_records(
        EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION, asset_key=AssetKey(asset)),
        limit=1,
    )
    return record.event_log_entry.asset_materialization, record


def test_three_runs_three_versions_and_a_rollback_restores_the_first_byte_for_byte(
    versioned: Stack,
):
    tables = []
    for position, retag in enumerate(RETAGS):
        run_with_tags(versioned, retag, f"run{position}")
        tables.append(versioned.table_bytes(LABELED))
    lake = lake_of(versioned)
    first, second, third = reversed([v.id for v in versions(lake, "labeled_projects")])

    listed = mlstack("versions", "labeled_projects", "--json")

    assert listed.returncode == 0, listed.stderr
    documents = json.loads(listed.stdout)
    assert [d["version"] for d in documents] == [third, second, first]  # newest first
    assert [d["current"] for d in documents] == [True, False, False]
    assert all(d["rows"] == len(PROJECTS) and d["checks_passed"] for d in documents)
    assert set(documents[0]["inputs"]) == {"projects", "tags"}
    table = mlstack("versions", "labeled_projects")
    assert table.returncode == 0 and f"* {third}" in table.stdout
    # every ML table names the labeled_projects and raw versions it came from
    splits = versions(lake, "ml_splits")[0]
    assert splits.inputs["labeled_projects"] == third
    assert splits.inputs["tags"] == versions(lake, "tags")[0].id
    [(version_metadata, _)] = [latest_materialization(versioned.instance, "ml_splits")]
    assert version_metadata.metadata["version"].value == splits.id

    restored = mlstack("rollback", "labeled_projects", "--to", first)

    assert restored.returncode == 0, restored.stderr
    assert f"labeled_projects: restored version {first}" in restored.stdout
    assert "stale now (rebuild with --with-downstream): ml_dataset, ml_splits" in restored.stdout
    assert versioned.table_bytes(LABELED) == tables[0]
    assert current_version_id(lake, "labeled_projects") == first
    rollback, _ = latest_materialization(versioned.instance, "labeled_projects")
    assert rollback.metadata["restored_from"].value == first
    assert rollback.tags["dagster/data_version"] == first
    # ml_dataset was built from the third version: it is stale now
    dataset, _ = latest_materialization(versioned.instance, "ml_dataset")
    assert dataset.tags["dagster/input_data_version/labeled_projects"] == third

    rebuilt = mlstack("rollback", "labeled_projects", "--to", first, "--with-downstream")

    assert rebuilt.returncode == 0, rebuilt.stdout + rebuilt.stderr
    for asset in ML:
        assert f"✓ {asset}" in rebuilt.stdout or f"ok {asset}" in rebuilt.stdout
        assert versions(lake, asset)[0].inputs["labeled_projects"] == first
    dataset, _ = latest_materialization(versioned.instance, "ml_dataset")
    assert dataset.tags["dagster/input_data_version/labeled_projects"] == first


def test_a_rollback_to_a_missing_or_altered_version_changes_nothing(versioned: Stack):
    for position, retag in enumerate(RETAGS[:2]):
        run_with_tags(versioned, retag, f"run{position}")
    before = snapshot(versioned)
    lake = lake_of(versioned)
    older = versions(lake, "labeled_projects")[-1]

    missing = mlstack("rollback", "labeled_projects", "--to", "19990101T000000")

    assert missing.returncode == 1
    assert "labeled_projects has no version '19990101T000000'" in missing.stderr
    assert snapshot(versioned) == before

    data = Path(older.data_uri)
    data.write_bytes(data.read_bytes() + b"\0")
    altered = mlstack("rollback", "labeled_projects", "--to", older.id)

    assert altered.returncode == 1
    assert "the file was changed after it was written; nothing was restored" in altered.stderr
    assert snapshot(versioned) == before


def test_a_rollback_killed_midway_leaves_the_table_before_or_after(versioned: Stack):
    for position, retag in enumerate(RETAGS[:2]):
        run_with_tags(versioned, retag, f"run{position}")
    after_first, after_second = None, versioned.table_bytes(LABELED)
    lake = lake_of(versioned)
    first = versions(lake, "labeled_projects")[-1]
    lock = Path(f"{versioned.warehouse_path}.lock")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlstack"), "rollback", "labeled_projects", "--to",
         first.id],
        cwd=REPO_ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while process.poll() is None and time.monotonic() < deadline:
        try:
            if "restore labeled_projects" in lock.read_text():
                break
        except OSError:
            pass
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)

    after_first = read_version("labeled_projects", first.id, lake=lake.root)
    table = versioned.table_bytes(LABELED)
    restored = sorted(tuple(row) for row in after_first.itertuples(index=False))
    assert table == after_second or sorted(table) == restored


def test_half_the_rows_fail_the_volume_guard_and_the_override_publishes_them(versioned: Stack):
    run_with_tags(versioned, {}, "run0")
    before = snapshot(versioned)
    kept = PROJECTS[:4]
    ids = {project[0] for project in kept}
    versioned.set_source("projects", write_projects(versioned.root / "half-p.csv", kept))
    half_tags = {i: t for i, t in PROJECT_TAGS.items() if i in ids}
    versioned.set_source("tags", write_tags(versioned.root / "half-t.csv", half_tags))

    result = versioned.materialize()

    assert not result.success
    message = failure_messages(result)
    assert "row_drop_within_limit" in message
    assert f"4 rows, {len(PROJECTS)} in the published version" in message
    assert "50.0% fewer, more than MLSTACK_MAX_ROW_DROP_PERCENT=20" in message
    assert not checks(result, "projects")["row_drop_within_limit"].passed
    assert "labeled_projects" not in materialized_keys(result)
    assert snapshot(versioned) == before

    shrunk = versioned.materialize(run_config=run_config(allow_row_drop=True))

    assert shrunk.success, failure_messages(shrunk)
    assert versioned.query(f"select count(*) from {LABELED}") == [(4,)]
    for asset in ("projects", "tags", "labeled_projects"):
        assert materialization(shrunk, asset).metadata["allow_row_drop"].value is True
        assert checks(shrunk, asset)["row_drop_within_limit"].passed


def test_a_version_reads_back_the_same_rows_later_and_after_a_rollback(versioned: Stack):
    run_with_tags(versioned, {}, "run0")
    lake = lake_of(versioned)
    first = versions(lake, "ml_splits")[0].id
    rows = read_version("ml_splits", first, lake=lake.root)
    assert len(rows) == len(PROJECTS) and set(rows["split"]) <= {"train", "validation", "test"}

    run_with_tags(versioned, {6: "mlops"}, "run1")
    later = read_version("ml_splits", first, lake=lake.root)
    assert later.equals(rows)
    assert not read_version("ml_splits", lake=lake.root).equals(rows)  # current: the new one

    assert mlstack("rollback", "ml_splits", "--to", first).returncode == 0
    assert read_version("ml_splits", first, lake=lake.root).equals(rows)
    assert read_version("ml_splits", lake=lake.root).equals(rows)  # restored: current again


def test_an_ml_table_names_the_version_it_was_built_from_when_a_rollback_races_it(
    versioned: Stack, monkeypatch: pytest.MonkeyPatch
):
    # labeled_projects has two versions; ml_dataset is built from the current one while
    # another thread rolls labeled_projects back to the first. The version ml_dataset
    # records must be the one its rows came from, wherever the rollback lands.
    run_with_tags(versioned, {}, "run0")
    run_with_tags(versioned, {6: "mlops"}, "run1")
    lake = lake_of(versioned)
    built_from = current_version_id(lake, "labeled_projects")
    [first] = [v.id for v in versions(lake, "labeled_projects") if v.id != built_from]
    warehouse = warehouse_deployment(load_settings()).warehouse
    rollback = threading.Thread(
        target=restore, args=("labeled_projects", first, str(lake.root), warehouse)
    )
    read_upstream_versions = ml_assets.upstream_versions

    def rolled_back_meanwhile(lake_root: str, tables: list[str]) -> dict[str, str]:
        """The step reads which versions it builds from: a rollback starts now, and gets in
        at once unless the step holds the warehouse."""
        if "labeled_projects" in tables and rollback.ident is None:
            rollback.start()
            rollback.join(timeout=10)
        return read_upstream_versions(lake_root, tables)

    monkeypatch.setattr(ml_assets, "upstream_versions", rolled_back_meanwhile)
    result = versioned.materialize("ml_dataset")
    rollback.join(timeout=120)

    assert result.success, failure_messages(result)
    assert rollback.ident is not None and not rollback.is_alive()
    assert current_version_id(lake, "labeled_projects") == first  # the rollback happened
    # ml_dataset has project 6 as retagged in the second version: it was built from it...
    assert versioned.query("select tag from mlops_course.ml_dataset where id = 6") == [("mlops",)]
    # ...and says so, in its materialization and in its version in the lake
    materialization, _ = latest_materialization(versioned.instance, "ml_dataset")
    assert materialization.metadata["inputs"].value["labeled_projects"] == built_from
    assert versions(lake, "ml_dataset")[0].inputs["labeled_projects"] == built_from
