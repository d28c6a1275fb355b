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
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterEventType, DagsterInstance, EventRecordsFilter

import mlstack_assets.ml.assets as ml_assets
from mlstack_assets.cli import run_config
from mlstack_assets.lake import Lake
from mlstack_assets.lake.checkpoints import checkpoints
from mlstack_assets.lake.restore import restore
from mlstack_assets.lake.versions import current_version_id, read_version, versions
from mlstack_assets.settings import load_settings
from mlstack_assets.warehouse.deployment import warehouse_deployment
from tests.conftest import REPO_ROOT, Stack
from tests.support.fixture_data import (
    PROJECT_TAGS,
    PROJECTS,
    write_csv,
    write_projects,
    write_tags,
)
from tests.support.lakes import warehouse_lake
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
TAGS = "mlops_course.tags"
MAKE_CURRENT = "mlstack_assets.lake.versions:make_current"  # a table's version made current
ML = ("ml_dataset", "ml_splits", "tag_distribution")
RETAGS = ({}, {6: "mlops"}, {6: "mlops", 7: "mlops"})  # three runs, three data sets


@pytest.fixture
def versioned(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> Stack:
    """`stack` on a Dagster home of its own (CLI and in-process runs share it)."""
    home = dagster_home(stack.root / "home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    stack.instance = DagsterInstance.from_config(str(home))
    return stack


def run_with_tags(stack: Stack, retag: dict[int, str], name: str, selection: str = "*") -> None:
    stack.set_source("tags", write_tags(stack.root / f"{name}.csv", {**PROJECT_TAGS, **retag}))
    result = stack.materialize(selection)
    assert result.success, failure_messages(result)


def mlstack(*args: str) -> subprocess.CompletedProcess:
    return _cli([str(Path(sys.executable).parent / "mlstack"), *args])


def mlstack_killed_at(target: str, *args: str) -> subprocess.CompletedProcess:
    """`mlstack <args>`, SIGKILLed by itself where it calls `target` (tests/support/killed_at)."""
    return _cli([sys.executable, "-m", "tests.support.killed_at", target, *args])


def _cli(command: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        command,
        cwd=REPO_ROOT,
        env={**os.environ, "CI": "true"},
        capture_output=True,
        text=True,
        timeout=900,
    )


def lake_of(stack: Stack) -> Lake:
    """The stack's warehouse's part of the lake (the stack's environment configures it)."""
    return warehouse_lake()


def rows_of(frame: pd.DataFrame) -> list[tuple]:
    """A version's rows (`read_version`), sorted: compare with `sorted(stack.table_bytes(...))`."""
    return sorted(tuple(row) for row in frame.itertuples(index=False))


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


def test_a_rollback_with_downstream_of_a_table_nothing_depends_on_rebuilds_nothing(
    versioned: Stack,
):
    run_with_tags(versioned, {}, "run0")
    [version] = versions(lake_of(versioned), "tag_distribution")
    runs_before = len(versioned.instance.get_runs())
    raw_versions = [v.id for v in versions(lake_of(versioned), "tags")]

    restored = mlstack("rollback", "tag_distribution", "--to", version.id, "--with-downstream")

    assert restored.returncode == 0, restored.stdout + restored.stderr
    assert f"tag_distribution: restored version {version.id}" in restored.stdout
    assert "nothing depends on tag_distribution: nothing to rebuild" in restored.stdout
    # not a run of the whole graph (an empty selection is not `*`)
    assert len(versioned.instance.get_runs()) == runs_before
    assert [v.id for v in versions(lake_of(versioned), "tags")] == raw_versions


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
    before = sorted(versioned.table_bytes(LABELED))
    lake = lake_of(versioned)
    first = versions(lake, "labeled_projects")[-1]
    restored = rows_of(read_version("labeled_projects", first.id, lake=lake.root))
    assert restored != before

    # killed by itself once the restore wrote the table, as the version is made current (in the
    # table's transaction: the kill undoes both)
    killed = mlstack_killed_at(MAKE_CURRENT, "rollback", "labeled_projects", "--to", first.id)

    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert sorted(versioned.table_bytes(LABELED)) == before  # before, whole
    assert rows_of(read_version("labeled_projects", lake=lake.root)) == before  # and agreeing
    again = mlstack("rollback", "labeled_projects", "--to", first.id)
    assert again.returncode == 0, again.stderr
    assert current_version_id(lake, "labeled_projects") == first.id
    assert rows_of(read_version("labeled_projects", lake=lake.root)) == restored


def test_a_publish_killed_before_its_version_is_current_leaves_table_and_version_agreeing(
    versioned: Stack,
):
    run_with_tags(versioned, {}, "run0", "tags")
    lake = lake_of(versioned)
    retagged = write_tags(versioned.root / "retag.csv", {**PROJECT_TAGS, 6: "mlops"})
    versioned.set_source("tags", retagged)

    # killed by itself once the publish replaced the table, as its version is made current
    # (the pointer is written inside the table's transaction, so the kill undoes both)
    killed = mlstack_killed_at(MAKE_CURRENT, "run", "--select", "tags")

    assert killed.returncode == -signal.SIGKILL, killed.stdout[-3000:]
    # what `read_version("tags")` and `mlstack versions tags` say is what the table holds
    assert sorted(versioned.table_bytes(TAGS)) == rows_of(read_version("tags", lake=lake.root))
    rerun = mlstack("run", "--select", "tags")

    assert rerun.returncode == 0, rerun.stdout[-3000:]
    assert versioned.query(f"select tag from {TAGS} where id = 6") == [("mlops",)]
    assert sorted(versioned.table_bytes(TAGS)) == rows_of(read_version("tags", lake=lake.root))


def test_pruning_after_a_rollback_and_failed_audits_keeps_every_checkpoint_a_version_needs(
    versioned: Stack,
):
    keep = 2
    versioned.monkeypatch.setenv("MLSTACK_LAKE_KEEP_VERSIONS", str(keep))
    versioned.monkeypatch.setenv("MLSTACK_LAKE_KEEP_CHECKPOINTS", str(keep))
    run_with_tags(versioned, RETAGS[0], "run0")  # every table: the ML tables are built from it
    for position, retag in enumerate(RETAGS[1:], start=1):
        run_with_tags(versioned, retag, f"run{position}", "tags")
    lake = lake_of(versioned)
    third, second, first = [v.id for v in versions(lake, "tags")]
    assert mlstack("rollback", "tags", "--to", second).returncode == 0
    relabeled = versioned.materialize("labeled_projects")  # built from the restored version
    assert relabeled.success, failure_messages(relabeled)
    duplicated = [*sorted(PROJECT_TAGS.items()), (7, "mlops")]
    for attempt in range(keep + 1):  # more failed audits in a row than checkpoints kept
        bad = write_csv(versioned.root / f"dup{attempt}.csv", ["id", "tag"], duplicated)
        versioned.set_source("tags", bad)
        assert not versioned.materialize("tags").success
    newest_failed = checkpoints(lake, "tags")[0].id

    run_with_tags(versioned, {9: "mlops"}, "good", "tags")  # published: pruning runs

    good = current_version_id(lake, "tags")
    assert versions(lake, "labeled_projects")[0].inputs["tags"] == second
    # the newest two, the one labeled_projects was built from, the one the ML tables were
    kept = [good, third, second, first]
    assert [v.id for v in versions(lake, "tags")] == kept
    for version in versions(lake, "tags"):
        assert len(read_version("tags", version.id, lake=lake.root)) == version.rows
    # the newest two checkpoints, the newest published one, every one a version points at
    assert {c.id for c in checkpoints(lake, "tags")} == {good, newest_failed} | {good} | set(kept)
    restored = mlstack("rollback", "tags", "--to", second)
    assert restored.returncode == 0, restored.stderr
    assert current_version_id(lake, "tags") == second
    assert sorted(versioned.table_bytes(TAGS)) == rows_of(read_version("tags", lake=lake.root))


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


def test_mlstack_run_allow_row_drop_publishes_a_shrink_and_the_limit_is_a_setting(
    versioned: Stack,
):
    run_with_tags(versioned, {}, "run0", "tags")
    lake = lake_of(versioned)
    ids = sorted(PROJECT_TAGS)
    half = {i: PROJECT_TAGS[i] for i in ids[: len(ids) // 2]}
    versioned.set_source("tags", write_tags(versioned.root / "half.csv", half))
    before = versioned.table_bytes(TAGS)

    refused = mlstack("run", "--select", "tags")

    assert refused.returncode == 1, refused.stdout[-3000:]
    assert "1 FAILED (row_drop_within_limit)" in refused.stdout
    assert "50.0% fewer, more than MLSTACK_MAX_ROW_DROP_PERCENT=20" in refused.stdout
    assert versioned.table_bytes(TAGS) == before

    allowed = mlstack("run", "--select", "tags", "--allow-row-drop")

    assert allowed.returncode == 0, allowed.stdout[-3000:]
    assert versioned.query(f"select count(*) from {TAGS}") == [(len(half),)]
    shrunk, _ = latest_materialization(versioned.instance, "tags")
    assert shrunk.metadata["allow_row_drop"].value is True

    versioned.monkeypatch.setenv("MLSTACK_MAX_ROW_DROP_PERCENT", "60")
    quarter = {i: PROJECT_TAGS[i] for i in ids[: len(ids) // 4]}  # 50% fewer again
    versioned.set_source("tags", write_tags(versioned.root / "quarter.csv", quarter))

    within = mlstack("run", "--select", "tags")

    assert within.returncode == 0, within.stdout[-3000:]
    assert versioned.query(f"select count(*) from {TAGS}") == [(len(quarter),)]
    published, _ = latest_materialization(versioned.instance, "tags")
    assert "allow_row_drop" not in published.metadata
    assert "row_drop_within_limit" in versions(lake, "tags")[0].manifest["checks_passed"]


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


def test_two_warehouses_on_one_lake_never_see_each_others_versions(versioned: Stack):
    run_with_tags(versioned, {}, "first", "key:projects or key:tags")  # the first warehouse
    first_lake = lake_of(versioned)
    [first_tags] = versions(first_lake, "tags")
    other = versioned.root / "other.duckdb"  # a fresh warehouse file, the same lake
    versioned.monkeypatch.setenv("MLSTACK_DUCKDB_PATH", str(other))
    few = {k: v for k, v in list(PROJECT_TAGS.items())[:2]}  # far fewer rows than the first's
    kept = [row for row in PROJECTS if row[0] in few]
    versioned.set_source("projects", write_projects(versioned.root / "few.csv", kept))
    versioned.set_source("tags", write_tags(versioned.root / "few_tags.csv", few))

    result = versioned.materialize("key:projects or key:tags")

    assert result.success, failure_messages(result)  # no volume guard against the other's
    other_lake = lake_of(versioned)
    assert other_lake.root != first_lake.root
    [other_tags] = versions(other_lake, "tags")
    assert other_tags.rows == len(few) and first_tags.rows == len(PROJECT_TAGS)
    listed = mlstack("versions", "tags", "--json")
    assert [d["version"] for d in json.loads(listed.stdout)] == [other_tags.id]
    refused = mlstack("rollback", "tags", "--to", first_tags.id)
    assert refused.returncode == 1 and f"tags has no version {first_tags.id!r}" in refused.stderr
    assert current_version_id(first_lake, "tags") == first_tags.id  # the first is untouched


def test_a_lake_from_before_warehouses_had_their_own_part_is_named_once(versioned: Stack):
    old = versioned.root / "lake" / "production" / "tags" / "version=20261201T000000.000000Z"
    old.mkdir(parents=True)

    listed = mlstack("versions", "tags")

    assert listed.returncode == 0, listed.stderr
    assert listed.stderr.count("are from before each warehouse kept its own versions") == 1
    assert f"{versioned.root / 'lake' / 'production'}/" in listed.stderr
    assert f"reads {lake_of(versioned).root}/" in listed.stderr
    assert "no versions" in listed.stdout  # the old layout's entries are not this warehouse's


def test_a_table_without_versions_is_refused_with_the_same_status_by_each_command(
    versioned: Stack,
):
    """`versions`, `rollback` and `diff` of a name that is not a versioned table: each says
    which tables are, on stderr, and exits 1 (a refused request, not a usage error)."""
    for command in (["versions"], ["rollback", "--to", "20261201T000000"], ["diff"]):
        refused = mlstack(command[0], "nope", *command[1:])

        assert refused.returncode == 1, (command, refused.returncode, refused.stderr)
        assert refused.stdout == ""
        assert "'nope'" in refused.stderr and "projects" in refused.stderr, refused.stderr


def test_restore_brings_a_lost_warehouse_back_from_the_lake_without_reading_a_source(
    versioned: Stack,
):
    run_with_tags(versioned, {6: "mlops"}, "run0")
    before = snapshot(versioned)
    views = versioned.query(
        "select table_name from information_schema.tables"
        " where table_schema = 'mlops_course' and table_type = 'VIEW' order by 1"
    )
    assert views  # dbt's staging models
    versioned.warehouse_path.unlink()  # the warehouse is lost
    for source in ("projects", "tags"):  # and no source can be read
        versioned.set_source(source, versioned.root / "gone" / f"{source}.csv")

    restored = mlstack("restore")

    assert restored.returncode == 0, restored.stderr
    assert snapshot(versioned) == before
    for (view,) in views:
        assert view in restored.stdout
        assert versioned.query(f"select count(*) from mlops_course.{view}")[0][0] > 0
    lake = lake_of(versioned)
    for table in ("projects", "tags", "labeled_projects", *ML):
        assert f"mlops_course.{table}: version {current_version_id(lake, table)}" in restored.stdout


def test_restore_refuses_a_damaged_version_and_changes_nothing(versioned: Stack):
    run_with_tags(versioned, {}, "run0")
    versioned.query_write("delete from mlops_course.ml_splits")  # damaged in the warehouse
    before = snapshot(versioned)
    version = versions(lake_of(versioned), "ml_dataset")[0]
    data = Path(version.data_uri)
    data.write_bytes(data.read_bytes() + b"\0")  # and in the lake

    refused = mlstack("restore")

    assert refused.returncode == 1
    assert "the file was changed after it was written; nothing was restored" in refused.stderr
    assert snapshot(versioned) == before
