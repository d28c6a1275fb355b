"""End to end: the Dagster daemon keeps the graph current when a source file changes."""

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from mlstack_assets.cli import materialize_command
from tests.conftest import REPO_ROOT, Stack
from tests.support.fixture_data import PROJECT_TAGS, write_tags
from tests.support.graph import TAGS_DOWNSTREAM, touch_later
from tests.support.processes import dagster_home, stop

pytestmark = pytest.mark.slow
INTERVAL = 3


@pytest.fixture
def daemon(stack: Stack, tmp_path: Path) -> Iterator[Path]:
    """`dagster-daemon run` on a temporary DAGSTER_HOME; killed (with its children) at the end."""
    home = dagster_home(tmp_path / "daemon_home")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MLSTACK_SENSOR_INTERVAL_SECONDS": str(INTERVAL),
    }
    log = (tmp_path / "daemon.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", "workspace.yaml"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield home
    finally:
        stop(process)
        log.close()


def wait_for_run(home: Path, known: set[str], timeout: float, logfile: Path, sensor: str = ""):
    """The next run not in `known` (launched by `sensor`, if given), once it has finished."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with DagsterInstance.from_config(str(home)) as instance:
            for run in instance.get_runs():
                launched_by = run.tags.get("dagster/sensor_name", "")
                if run.run_id not in known and run.is_finished and sensor in launched_by:
                    return run
        time.sleep(2)
    raise AssertionError(
        f"no run finished within {timeout}s; daemon log:\n{logfile.read_text()[-4000:]}"
    )


def run_assets(run) -> set[str]:
    return {key.to_user_string() for key in run.asset_selection or ()}


def materialize_by_hand(home: Path, selection: str) -> subprocess.Popen:
    return subprocess.Popen(
        materialize_command(selection),
        cwd=REPO_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def quiet_period(home: Path, runs: set[str]) -> None:
    """Several ticks with no change: no run is launched, and the sensor says why."""
    time.sleep(INTERVAL * 6)
    with DagsterInstance.from_config(str(home)) as instance:
        assert {run.run_id for run in instance.get_runs()} == runs
        state = next(
            s
            for s in instance.all_instigator_state()
            if s.instigator_name == "source_change_sensor"
        )
        ticks = instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=3)
    assert any("no source changed" in (tick.skip_reason or "") for tick in ticks)


def test_daemon_keeps_the_graph_current(stack: Stack, daemon: Path, tmp_path: Path):
    log = tmp_path / "daemon.log"

    # First tick: no cursor, so everything is requested; then nothing changes: no runs.
    first = wait_for_run(daemon, set(), timeout=420, logfile=log)
    assert first.status == DagsterRunStatus.SUCCESS, first.run_id
    assert {"projects", "tags", "labeled_projects", "ml_splits"} <= run_assets(first)
    quiet_period(daemon, {first.run_id})

    # tags.csv changes while somebody materializes everything by hand: both runs finish.
    write_tags(stack.root / "src" / "tags.csv", {**PROJECT_TAGS, 6: "mlops"})
    touch_later(stack.root / "src" / "tags.csv")
    manual = materialize_by_hand(daemon, "*")
    sensor_run = wait_for_run(daemon, {first.run_id}, 420, log, sensor="source_change_sensor")
    output, _ = manual.communicate(timeout=600)
    assert manual.returncode == 0, output[-3000:]
    assert sensor_run.status == DagsterRunStatus.SUCCESS, sensor_run.run_id
    assert sensor_run.tags["dagster/sensor_name"] == "source_change_sensor"
    assert run_assets(sensor_run) == TAGS_DOWNSTREAM
    assert stack.query("select tag from mlops_course.labeled_projects where id = 6") == [("mlops",)]

    # A raw asset materialized by hand: declarative automation refreshes its dependents.
    with DagsterInstance.from_config(str(daemon)) as instance:
        known = {run.run_id for run in instance.get_runs()}
    manual = materialize_by_hand(daemon, "tags")
    output, _ = manual.communicate(timeout=600)
    assert manual.returncode == 0, output[-3000:]
    automated = wait_for_run(daemon, known, 420, log, sensor="downstream_automation")
    assert automated.status == DagsterRunStatus.SUCCESS, automated.run_id
    assert {"stg_mlops_course__tags", "labeled_projects", "ml_dataset"} <= run_assets(automated)
    assert "projects" not in run_assets(automated)
