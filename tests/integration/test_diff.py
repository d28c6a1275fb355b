"""`mlstack diff` and every publish's change counts: what changed between two versions of a
published table, by its key, read by DuckDB from the versions' Parquet files in the lake.

Real runs of the graph and the `mlstack` CLI; hand-made versions in a lake folder for the
comparison's corner cases.
"""

import json
from pathlib import Path

import duckdb
import pytest

from mlstack_assets.lake import DATA, Lake, LakeError, file_sha256
from mlstack_assets.lake.diff import changes_against, diff_versions, versions_to_compare
from mlstack_assets.lake.versions import (
    Version,
    VersionError,
    claim_version,
    make_current,
    record_version,
    versions,
)
from tests.conftest import Stack
from tests.integration import test_versions
from tests.integration.test_versions import (
    RETAGS,
    lake_of,
    latest_materialization,
    mlstack,
    run_with_tags,
)
from tests.support.fixture_data import PROJECTS, write_projects
from tests.support.results import failure_messages

versioned = test_versions.versioned  # the fixture: a Dagster home the CLI shares


@pytest.mark.slow
def test_a_retag_is_one_changed_row_in_the_diff_and_in_the_runs_metadata(versioned: Stack):
    run_with_tags(versioned, RETAGS[0], "run0")
    alone = mlstack("diff", "tags")
    assert alone.returncode == 1
    assert "tags has only its version" in alone.stderr
    run_with_tags(versioned, RETAGS[1], "run1")  # project 6: computer-vision -> mlops
    second, first = [v.id for v in versions(lake_of(versioned), "tags")]

    listed = mlstack("diff", "tags", "--json")

    assert listed.returncode == 0, listed.stderr
    found = json.loads(listed.stdout)
    assert (found["table"], found["from"], found["to"]) == ("tags", first, second)
    assert (found["added"], found["removed"], found["changed"]) == (0, 0, 1)
    assert found["columns_changed"] == {"tag": 1}  # the raw load columns are not compared
    assert found["examples"]["changed"] == [
        {"key": "6", "columns": {"tag": ["computer-vision", "mlops"]}}
    ]
    shown = mlstack("diff", "labeled_projects")
    assert shown.returncode == 0, shown.stderr
    assert "added 0, removed 0, changed 1\n  changed columns: tag 1\n" in shown.stdout
    assert "  id 6: tag 'computer-vision' -> 'mlops'" in shown.stdout
    per_tag = json.loads(mlstack("diff", "tag_distribution", "--json").stdout)
    assert per_tag["key"] == "tag" and per_tag["changed"] == 2
    assert [row["key"] for row in per_tag["examples"]["changed"]] == ["computer-vision", "mlops"]
    assert per_tag["columns_changed"]["total"] == 2
    # what the second run's materializations say it changed
    for table in ("tags", "labeled_projects"):
        event, _ = latest_materialization(versioned.instance, table)
        metadata = {k: v.value for k, v in event.metadata.items()}
        assert (metadata["rows_added"], metadata["rows_removed"], metadata["rows_changed"]) == (
            0,
            0,
            1,
        )
        assert metadata["changed_against"] == versions(lake_of(versioned), table)[1].id
        assert metadata["columns_changed"] == {"tag": 1}


@pytest.mark.slow
def test_a_row_added_between_two_runs_and_explicit_or_unknown_versions(stack: Stack):
    assert stack.materialize("projects").success
    extra = (40, "2020-03-09 10:00:00", "A new project", "Added by the second run.")
    stack.set_source("projects", write_projects(stack.root / "more.csv", [*PROJECTS, extra]))
    result = stack.materialize("projects")
    assert result.success, failure_messages(result)
    second, first = [v.id for v in versions(lake_of(stack), "projects")]

    added = json.loads(mlstack("diff", "projects", "--json").stdout)
    backwards = mlstack("diff", "projects", "--from", second, "--to", first[:15], "--json")

    assert (added["from"], added["to"], added["rows"]) == (first, second, {"from": 8, "to": 9})
    assert (added["added"], added["removed"], added["changed"]) == (1, 0, 0)
    assert added["examples"]["added"] == ["40"]
    assert backwards.returncode == 0, backwards.stderr
    found = json.loads(backwards.stdout)
    assert (found["from"], found["to"], found["added"], found["removed"]) == (second, first, 0, 1)
    assert found["examples"]["removed"] == ["40"]
    bogus = mlstack("diff", "projects", "--from", "19990101T000000")
    assert bogus.returncode == 1 and bogus.stdout == ""
    assert "mlstack diff: projects has no version '19990101T000000'" in bogus.stderr
    unknown = mlstack("diff", "nope")
    assert unknown.returncode == 1
    assert "'nope' has no versions; the versioned tables are projects, tags" in unknown.stderr
    Path(versions(lake_of(stack), "projects")[1].data_uri).write_bytes(b"PAR1 not any more")
    changed = mlstack("diff", "projects")
    assert changed.returncode == 1
    assert "the file was changed after it was written" in changed.stderr


# ------------------------------------------------------------- hand-made versions, no run


def make_version(lake: Lake, version_id: str, select: str) -> Version:
    """A version of `labeled_projects` whose data is what `select` gives."""
    key = claim_version(lake, "labeled_projects", version_id)
    path = Path(lake.uri(f"{key}/{DATA}"))
    duckdb.sql(f"copy ({select}) to '{path}' (format parquet)")
    count = duckdb.sql(f"select count(*) from read_parquet('{path}')").fetchone()[0]
    manifest = {"rows": count, "columns": [], "inputs": {}}
    return record_version(lake, key, "labeled_projects", file_sha256(path), manifest)


OLD = """select * from (values (1, 'a', 10, 'x', 'gone'), (2, 'b', 20, null, 'gone'),
    (3, 'c', 30, 'z', 'gone'), (null, 'd', 40, 'w', 'gone'))
    t(id, tag, score, note, dropped)"""
NEW = """select * from (values (1, 'a', '10', 'x', 'r1', 'new'), (2, 'b', '21', 'y', 'r2', 'new'),
    (4, 'e', '40', 'w', 'r3', 'new'), (null, 'd', '40', 'w', 'r4', 'new'))
    t(id, tag, score, note, _airbyte_raw_id, added)"""


def test_diff_versions_matches_by_key_and_compares_the_shared_columns_exactly(tmp_path: Path):
    lake = Lake(str(tmp_path / "lake"))
    old = make_version(lake, "20260101T000000.000000Z", OLD)
    new = make_version(lake, "20260102T000000.000000Z", NEW)
    make_current(lake, "labeled_projects", new.id)

    found = diff_versions(lake, "labeled_projects", *versions_to_compare(lake, "labeled_projects"))

    assert (found["from"], found["to"], found["key"]) == (old.id, new.id, "id")
    # id 3 removed, 4 added; the rows without a key match nothing: one removed, one added
    assert (found["added"], found["removed"], found["changed"]) == (2, 2, 1)
    # score went from integer to text: compared as text, so only id 2's 20 -> '21' differs;
    # a null that became a value is a change
    assert found["columns_changed"] == {"score": 1, "note": 1}
    assert found["columns_added"] == ["added"] and found["columns_removed"] == ["dropped"]
    assert found["examples"] == {
        "added": [4, None],
        "removed": [3, None],
        "changed": [{"key": 2, "columns": {"score": ["20", "21"], "note": [None, "y"]}}],
    }
    assert changes_against(lake, old.id, new) == {
        "rows_added": 2,
        "rows_removed": 2,
        "rows_changed": 1,
        "changed_against": old.id,
        "columns_changed": {"score": 1, "note": 1},
    }
    assert changes_against(lake, None, new) == {}  # a table's first version
    make_current(lake, "labeled_projects", old.id)
    with pytest.raises(LakeError, match=f"labeled_projects has only its version {old.id}"):
        versions_to_compare(lake, "labeled_projects")
    Path(old.data_uri).write_bytes(b"changed")
    with pytest.raises(VersionError, match="the file was changed after it was written"):
        diff_versions(lake, "labeled_projects", old, new)
    assert changes_against(lake, old.id, new)["diff_error"].endswith("after it was written")
