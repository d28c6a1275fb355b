"""The ways users run the graph: `dg`, plain `dagster`, and `mlstack run` (`make run`)."""

import io
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import duckdb
import pytest
from dagster import DagsterInstance

from mlstack_assets.cli import (
    PlainDisplay,
    RunProgress,
    dg_environment,
    format_summary,
    launch_command,
    live_display_wanted,
    summarize_run,
)
from mlstack_assets.warehouse.duckdb import duckdb_file_lock
from tests.conftest import REPO_ROOT, Stack
from tests.support.fixture_data import PROJECT_TAGS, PROJECTS, write_csv
from tests.support.https_server import HTTPSServer, Route
from tests.support.processes import dagster_home

WARNINGS = re.compile(r"superseded|deprecat|does not match the virtual environment", re.I)


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The test's stack environment, a fresh Dagster home, and plain (non-CI) output."""
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home(tmp_path / "cli_home")), **extra}
    env["MLSTACK_HOME"] = str(tmp_path / "mlstack_home")
    env.pop("CI", None)
    return dg_environment(env)


@pytest.mark.slow
def test_dg_check_defs_loads_the_project_from_the_repo_root(stack: Stack, tmp_path: Path):
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "dg"), "check", "defs"],
        cwd=REPO_ROOT,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert "All definitions loaded successfully" in output
    assert not WARNINGS.search(output), output


@pytest.mark.slow
def test_dg_launch_builds_the_whole_graph_on_a_temporary_home(stack: Stack, tmp_path: Path):
    env = cli_env(tmp_path)

    completed = subprocess.run(
        launch_command("*"), cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )

    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-3000:]
    assert not WARNINGS.search(output), [
        line for line in output.splitlines() if WARNINGS.search(line)
    ]
    with duckdb.connect(str(stack.warehouse_path), read_only=True) as conn:
        count, tagged = conn.execute(
            "select count(*), count(tag) from mlops_course.labeled_projects"
        ).fetchone()
    assert (count, tagged) == (len(PROJECTS), len(PROJECTS))
    with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        [record] = instance.get_run_records()
        assert record.dagster_run.is_success


@pytest.mark.slow
def test_plain_dagster_commands_keep_working(stack: Stack, tmp_path: Path):
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "asset", "list", "-m", "mlstack_assets"],
        cwd=REPO_ROOT,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert {"projects", "tags", "labeled_projects", "ml_splits"} <= set(completed.stdout.split())


@pytest.mark.slow
def test_a_rerun_prints_no_library_log_records(stack: Stack, tmp_path: Path):
    """Libraries' log records stay off the CLI. Importing PyAirbyte once pointed the root
    logger at Airbyte-protocol JSON on stdout, and on a rerun GX warned about every past
    audit's Data Docs page (its results are not in the fresh context's store, by design)."""
    env = cli_env(tmp_path)
    command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize"]
    command += ["-m", "mlstack_assets", "--select", "projects,tags"]

    for _ in range(2):  # the second run's audits find the first run's pages
        completed = subprocess.run(
            command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
        )
        output = completed.stdout + completed.stderr
        assert completed.returncode == 0, output[-3000:]

    assert len(list((tmp_path / "mlstack_home").rglob("validations/*/*/*"))) >= 4
    assert '{"type":"LOG"' not in output, output[-3000:]
    assert "Validation result not found" not in output, output[-3000:]


def checks_in_step(*assets: str) -> int:
    """The checks the raw step runs on `assets`: every check on them but dbt's source
    freshness, which the dbt_source_freshness step runs."""
    from dagster import AssetKey

    from mlstack_assets.definitions import defs

    keys = defs.resolve_asset_graph().asset_check_keys
    wanted = {AssetKey(asset) for asset in assets}
    return sum(k.asset_key in wanted and k.name != "dbt_source_freshness" for k in keys)


def mlstack_run(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess, list[Path]]:
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "mlstack"), "run", *args],
        cwd=REPO_ROOT,
        env=cli_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    logs = sorted((tmp_path / "mlstack_home" / "logs").glob("run-*.log"))
    return completed, logs


@pytest.mark.slow
def test_mlstack_run_prints_steps_and_summary_and_keeps_the_logs_in_a_file(
    stack: Stack, tmp_path: Path
):
    completed, [log] = mlstack_run(tmp_path)

    out = completed.stdout
    assert completed.returncode == 0, out + completed.stderr[-3000:]
    lines = out.splitlines()
    assert 20 <= len(lines) <= 40, out
    # (the labeled_projects GX suite runs inside dbt_models, before publishing)
    for step in ("airbyte_sync", "dbt_models", "ml_dataset", "ml_splits"):
        assert any(line.strip().startswith(f"▸ {step}") for line in lines), out
        assert any(line.strip().startswith(f"✓ {step}") for line in lines), out
    n = checks_in_step("projects", "tags")
    assert checks_in_step("projects") >= 12  # the GX suite, the row count, the volume guard
    rows = f"projects {len(PROJECTS)} rows, tags {len(PROJECT_TAGS)} rows"
    assert re.search(rf"✓ airbyte_sync\s+{rows}, {n}/{n} checks passed", out), out
    assert "SUCCESS" in out and "labeled_projects" in out
    assert str(log.name) in out
    assert "Traceback" not in out + completed.stderr
    assert "DEBUG" not in out and "DEBUG" not in completed.stderr
    written = log.read_text()
    assert written.count(" - DEBUG - ") > 50  # Dagster's events: in the file, not on screen
    assert "STEP_START" in written and "RUN_SUCCESS" in written
    assert not WARNINGS.search(out + written)


@pytest.mark.slow
def test_mlstack_run_failure_names_step_checks_and_message_without_a_traceback(
    stack: Stack, tmp_path: Path
):
    duplicated = [*sorted(PROJECT_TAGS.items()), (7, "computer-vision")]
    stack.set_source("tags", write_csv(tmp_path / "dup" / "tags.csv", ["id", "tag"], duplicated))

    completed, [log] = mlstack_run(tmp_path)

    out = completed.stdout
    assert completed.returncode == 1, out
    assert len(out.splitlines()) <= 40, out
    n = checks_in_step("projects", "tags")
    assert checks_in_step("tags") >= 9
    failed = rf"✗ airbyte_sync\s+projects {len(PROJECTS)} rows, {n - 1}/{n} checks passed"
    assert re.search(rf"{failed}, 1 failed: id_is_unique", out), out
    assert "not run (upstream failed): dbt_models" in out
    assert "FAILURE" in out and "1 FAILED (id_is_unique)" in out
    assert "airbyte_sync: source 'tags'" in out  # the failed step and its message
    assert "2 of 9 rows (22.2%) unexpected" in out
    assert "Traceback" not in out + completed.stderr
    assert "in airbyte_sync" in log.read_text()  # the stack is in the log file


def test_live_display_only_on_a_terminal_outside_ci(tmp_path: Path):
    class Terminal:
        def isatty(self) -> bool:
            return True

    assert live_display_wanted(Terminal(), {})
    assert not live_display_wanted(Terminal(), {"CI": "true"})
    assert not live_display_wanted(Terminal(), {"TERM": "dumb"})
    with (tmp_path / "out.txt").open("w") as pipe_like:
        assert not live_display_wanted(pipe_like, {})


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
    # a view is shown as one, without a check count it does not have
    assert "stg_mlops_course__projects      view" in text.splitlines()


def test_run_summary_of_a_failed_run_names_the_failing_source(stack: Stack):
    stack.set_source("tags", stack.root / "missing.csv")

    result = stack.materialize()

    summary = summarize_run(stack.instance, result.run_id)
    assert not summary.ok
    assert any("source 'tags'" in failure for failure in summary.failures)
    # the source file's observation is the first step to find it missing; tags never runs
    assert [failure.assets for failure in summary.step_failures] == [["tags_csv"]]
    text = format_summary(summary, elapsed=1.0)
    assert "failed steps:" in text and "Failure(" not in text
    # --verbose adds the stack (Dagster's error info has the frames, not the header line)
    assert "Failure(" in format_summary(summary, elapsed=1.0, verbose=True)


def test_a_step_that_starts_and_finishes_between_two_polls_shows_both_lines():
    def entry(kind: str, at: float) -> SimpleNamespace:
        event = SimpleNamespace(event_type_value=kind, step_key="ml_splits")
        return SimpleNamespace(event_log_entry=SimpleNamespace(dagster_event=event, timestamp=at))

    class Instance:
        def get_records_for_run(self, run_id, cursor, of_type, limit):
            records = [] if cursor else [entry("STEP_START", 1.0), entry("STEP_SUCCESS", 1.2)]
            return SimpleNamespace(records=records, cursor="end", has_more=False)

    out = io.StringIO()
    PlainDisplay(out).update(RunProgress(Instance(), "run").poll())

    assert [line.split()[:2] for line in out.getvalue().splitlines()] == [
        ["->", "ml_splits"],
        ["ok", "ml_splits"],
    ]


@pytest.mark.slow
@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_mlstack_run_stopped_by_a_signal_stops_its_run_and_everything_it_started(
    stack: Stack, tmp_path: Path, https_server: HTTPSServer, stop_signal: signal.Signals
):
    from tests.support.processes import processes_of

    # a source that stalls mid-file: the run is busy extracting when the signal comes
    body = (stack.root / "src" / "tags.csv").read_bytes() * 50
    https_server.routes["/tags.csv"] = Route(body=body, slow_after=100)
    stack.set_source("tags", https_server.url("/tags.csv"))
    env = cli_env(tmp_path)
    home = Path(env["DAGSTER_HOME"])
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "mlstack"), "run"],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while https_server.count("/tags.csv") == 0:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the run never reached the source"
        time.sleep(0.2)

    process.send_signal(stop_signal)
    out, err = process.communicate(timeout=120)
    https_server.release.set()

    assert process.returncode == 128 + stop_signal, out + err[-3000:]
    assert f"mlstack run: stopped by {stop_signal.name}" in out
    with DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
        assert run.status.value in ("CANCELED", "FAILURE"), run.status
    # nothing of the run holds the warehouse
    with duckdb_file_lock(stack.warehouse_path).hold(timeout=1, purpose="check it is free"):
        pass
    deadline = time.monotonic() + 30
    while processes_of(home) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert processes_of(home) == []


def test_a_bad_setting_stops_mlstack_run_with_one_line_and_no_traceback(tmp_path: Path):
    completed = subprocess.run(
        [str(Path(sys.executable).parent / "mlstack"), "run"],
        cwd=REPO_ROOT,
        env={**cli_env(tmp_path), "MLSTACK_AIRBYTE_POLL_SECONDS": "often"},
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert completed.returncode == 2
    assert (
        completed.stderr.strip() == "mlstack: MLSTACK_AIRBYTE_POLL_SECONDS='often' must be a number"
    )
    assert "Traceback" not in completed.stdout + completed.stderr
