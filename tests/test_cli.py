"""Both ways users run the graph: the Dagster CLI, and `mlstack run` (used by `make run`)."""

import os
import subprocess
from pathlib import Path

import duckdb
import pytest
from dagster import DagsterInstance

from mlstack_assets.cli import format_summary, materialize_command, summarize_run
from tests.conftest import REPO_ROOT, Stack
from tests.fixture_data import PROJECTS
from tests.processes import dagster_home

pytestmark = pytest.mark.slow


def test_dagster_asset_materialize_builds_the_whole_graph_from_the_cli(
    stack: Stack, tmp_path: Path
):
    home = dagster_home(tmp_path / "cli_home")
    env = {**os.environ, "DAGSTER_HOME": str(home)}

    completed = subprocess.run(
        materialize_command("*"),
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    with duckdb.connect(str(stack.warehouse_path), read_only=True) as conn:
        count, tagged = conn.execute(
            "select count(*), count(tag) from mlops_course.labeled_projects"
        ).fetchone()
    assert (count, tagged) == (len(PROJECTS), len(PROJECTS))
    with DagsterInstance.from_config(str(home)) as instance:
        [record] = instance.get_run_records()
        assert record.dagster_run.is_success


def test_run_summary_lists_rows_per_table_and_check_outcomes(stack: Stack):
    result = stack.materialize()

    summary = summarize_run(stack.instance, result.run_id)
    text = format_summary(summary, elapsed=1.0)

    assert summary.ok
    assert summary.assets["labeled_projects"].rows == len(PROJECTS)
    assert summary.assets["projects"].rows == len(PROJECTS)
    assert len(summary.assets["labeled_projects"].passed) >= 5
    assert "SUCCESS" in text
    assert any(
        line.split()[:2] == ["labeled_projects", str(len(PROJECTS))] for line in text.splitlines()
    )


def test_run_summary_of_a_failed_run_names_the_failing_source(stack: Stack):
    stack.set_source("tags", stack.root / "missing.csv")

    result = stack.materialize()

    summary = summarize_run(stack.instance, result.run_id)
    assert not summary.ok
    assert any("source 'tags'" in failure for failure in summary.failures)
    assert "failed steps:" in format_summary(summary, elapsed=1.0)
