"""A run killed while work is under way leaves the published tables as they were, nothing
running, and nothing held: the next run on the same Dagster instance finishes.

Each test starts `dagster asset materialize` on an instance of its own (the repo's
dagster.yaml), SIGKILLs that process alone at a point where work is under way
(mid-download, after dbt wrote the audit schema, inside an ML step, in the middle of a
publish), then runs again on that same instance, which must finish in bounded time with
the expected tables. The warehouse lock is the one thing a run holds; the kernel frees it
when its holder dies, so a run waiting for it goes on at once.
"""

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import pytest
from dagster import DagsterInstance, DagsterRunStatus

from mlstack_assets.cli import materialize_command
from mlstack_assets.warehouse.duckdb import duckdb_file_lock
from tests.conftest import REPO_ROOT, Stack
from tests.support.fixture_data import PROJECT_TAGS, PROJECTS, write_tags
from tests.support.https_server import HTTPSServer, Route
from tests.support.processes import dagster_home, processes_of
from tests.support.results import snapshot

pytestmark = pytest.mark.slow
WAIT_FOR_WORK = 240  # seconds for the killed run to reach the point it is killed at
RERUN_BOUND = 420  # the next run finishes within this, or the test fails


def start_materialize(selection: str, home: Path, log: IO[str]) -> subprocess.Popen:
    """`dagster asset materialize` of `selection` on the instance in `home`, in a session of
    its own (a test can kill it, or it and what it started), its output in `log`."""
    return subprocess.Popen(
        materialize_command(selection),
        cwd=REPO_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


@contextmanager
def run_killed_when(
    selection: str, home: Path, log_path: Path, ready: Callable[[subprocess.Popen], bool]
) -> Iterator[subprocess.Popen]:
    """A run of `selection`, SIGKILLed (its process alone: what it started must die on its
    own) as soon as `ready(process)` is true. Whatever still runs after a failure is
    killed, group and all."""
    with log_path.open("w") as log:
        process = start_materialize(selection, home, log)
        try:
            deadline = time.monotonic() + WAIT_FOR_WORK
            while not ready(process):
                assert process.poll() is None, log_path.read_text(errors="replace")[-3000:]
                assert time.monotonic() < deadline, "the run never reached the kill point"
                time.sleep(0.05)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)


def wait_until_gone(home: Path, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while processes_of(home) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_of(home) == [], "processes of the killed run are still running"


def rerun_on_the_same_instance(stack: Stack, home: Path, selection: str = "tags*") -> str:
    """The next run, on the killed run's instance, from a good tags file (project 6 now
    `mlops`): it must succeed within RERUN_BOUND seconds. Returns its output."""
    stack.set_source("tags", write_tags(stack.root / "good.csv", {**PROJECT_TAGS, 6: "mlops"}))
    completed = subprocess.run(
        materialize_command(selection),
        cwd=REPO_ROOT,
        env={**os.environ, "DAGSTER_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=RERUN_BOUND,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    wait_until_gone(home)
    return output


def assert_repaired(home: Path, stack: Stack) -> None:
    """The killed run was marked failed, and nothing of it holds the warehouse."""
    with DagsterInstance.from_config(str(home)) as instance:
        runs = instance.get_runs()
        assert runs[-1].status == DagsterRunStatus.FAILURE  # the oldest: the killed one
        assert all(run.status == DagsterRunStatus.SUCCESS for run in runs[:-1])
    with duckdb_file_lock(stack.warehouse_path).hold(timeout=1, purpose="check it is free"):
        pass


def test_a_run_killed_mid_download_is_repaired_by_the_next_run(
    published_stack: Stack, https_server: HTTPSServer
):
    before = snapshot(published_stack)
    many = {**PROJECT_TAGS, **{1000 + i: "mlops" for i in range(15000)}}  # ~230 KB
    body = write_tags(published_stack.root / "big.csv", many).read_bytes()
    # Serve part of the file, then stall: the sync is mid-download.
    https_server.routes["/tags.csv"] = Route(body=body, slow_after=150_000)
    published_stack.set_source("tags", https_server.url("/tags.csv"))
    home = dagster_home(published_stack.root / "cli_home")
    syncs = REPO_ROOT / ".mlstack" / "airbyte" / "syncs"  # the extracts' private directories
    existing = set(syncs.glob("tags-*"))

    def mid_download(_: subprocess.Popen) -> bool:
        if https_server.count("/tags.csv") < 1:
            return False
        time.sleep(2)  # let it read up to the stall
        return True

    with run_killed_when("tags*", home, published_stack.root / "killed.log", mid_download):
        pass
    wait_until_gone(home)  # the extract process died with the run

    assert snapshot(published_stack) == before
    left_behind = set(syncs.glob("tags-*")) - existing  # the partial download
    assert left_behind
    rerun_on_the_same_instance(published_stack, home)

    assert_repaired(home, published_stack)
    assert published_stack.query("select tag from mlops_course.tags where id = 6") == [("mlops",)]
    assert not any(d.exists() for d in left_behind)  # pruned by the next extract


def _dbt_built_the_audit_table(process: subprocess.Popen) -> bool:
    """dbt (a child of the run's process) has logged building labeled_projects."""
    for child in _children(process.pid):
        try:
            environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        log_dir = next((e[13:] for e in environ if e.startswith(b"DBT_LOG_PATH=")), None)
        if log_dir is None:
            continue
        log = Path(f"/proc/{child}/cwd") / log_dir.decode() / "dbt.log"  # relative to dbt's cwd
        if log.exists() and "OK created sql table model" in log.read_text(errors="replace"):
            return True
    return False


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(child) for child in path.read_text().split()] if path.exists() else []


def test_a_run_killed_after_dbt_wrote_the_audit_schema_leaves_nothing_behind(
    published_stack: Stack,
):
    before = snapshot(published_stack)
    home = dagster_home(published_stack.root / "cli_home")

    with run_killed_when(
        "labeled_projects", home, published_stack.root / "killed.log", _dbt_built_the_audit_table
    ):
        pass
    wait_until_gone(home)  # dbt died with the run that started it

    assert snapshot(published_stack) == before
    rerun_on_the_same_instance(published_stack, home)

    assert_repaired(home, published_stack)
    assert published_stack.query("select tag from mlops_course.labeled_projects where id = 6") == [
        ("mlops",)
    ]
    assert published_stack.query("select count(*) from mlops_course.labeled_projects") == [
        (len(PROJECTS),)
    ]


def _log_says(log_path: Path, text: str) -> Callable[[subprocess.Popen], bool]:
    return lambda _: text in log_path.read_text(errors="replace")


def test_a_run_killed_inside_an_ml_step_leaves_the_ml_tables_and_the_next_run_finishes(
    published_stack: Stack,
):
    before = snapshot(published_stack)
    home = dagster_home(published_stack.root / "cli_home")
    log = published_stack.root / "killed.log"

    with run_killed_when("ml_dataset*", home, log, _log_says(log, "ml_dataset - STEP_START")):
        pass
    wait_until_gone(home)

    assert snapshot(published_stack) == before
    output = rerun_on_the_same_instance(published_stack, home, "ml_dataset*")

    assert_repaired(home, published_stack)
    assert "ml_splits - STEP_SUCCESS" in output
    assert snapshot(published_stack) == before  # same inputs, same (deterministic) tables


def _publishing(stack: Stack) -> Callable[[subprocess.Popen], bool]:
    lock = Path(f"{stack.warehouse_path}.lock")

    def ready(_: subprocess.Popen) -> bool:
        try:
            return "publish tags" in lock.read_text()
        except OSError:
            return False

    return ready


def test_a_run_killed_holding_the_warehouse_to_publish_leaves_the_table_before_or_after(
    published_stack: Stack,
):
    before = snapshot(published_stack)
    retagged = {**PROJECT_TAGS, 7: "mlops"}
    published_stack.set_source("tags", write_tags(published_stack.root / "r.csv", retagged))
    home = dagster_home(published_stack.root / "cli_home")

    killed_log = published_stack.root / "killed.log"
    with run_killed_when("tags", home, killed_log, _publishing(published_stack)):
        pass
    wait_until_gone(home)

    tags = published_stack.table_bytes("mlops_course.tags")
    as_before = [(str(i), t) for i, t in sorted(PROJECT_TAGS.items())]
    as_after = [(str(i), t) for i, t in sorted(retagged.items())]
    published = sorted(row[:2] for row in tags)
    assert published in (sorted(as_before), sorted(as_after))
    assert (
        snapshot(published_stack)["mlops_course.labeled_projects"]
        == before["mlops_course.labeled_projects"]
    )
    rerun_on_the_same_instance(published_stack, home, "tags")

    assert_repaired(home, published_stack)
    assert published_stack.query("select tag from mlops_course.tags where id = 6") == [("mlops",)]


HOLDER = """
import sys
from mlstack_assets.warehouse.duckdb import duckdb_file_lock
with duckdb_file_lock(sys.argv[1]).hold(purpose="hold it until killed", log=print):
    print("held", flush=True)
    sys.stdin.readline()
"""


def test_a_run_waiting_for_the_warehouse_goes_on_within_seconds_of_its_holders_sigkill(
    published_stack: Stack,
):
    """A pool slot of a killed run stayed claimed: a run waiting for it waited the whole
    pool timeout. The lock, mlstack's one mechanism, is the kernel's: freed at the kill."""
    home = dagster_home(published_stack.root / "cli_home")
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(published_stack.warehouse_path)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    log_path = published_stack.root / "waiting.log"
    with log_path.open("w") as log:
        waiting = start_materialize("tags", home, log)
        try:
            deadline = time.monotonic() + WAIT_FOR_WORK
            while "waiting to stage, audit and publish tags" not in log_path.read_text():
                assert waiting.poll() is None, log_path.read_text()[-3000:]
                assert time.monotonic() < deadline, "the run never waited for the warehouse"
                time.sleep(0.1)
            holder.send_signal(signal.SIGKILL)
            killed = time.monotonic()
            assert holder.wait(timeout=30) == -signal.SIGKILL
            assert waiting.wait(timeout=RERUN_BOUND) == 0, log_path.read_text()[-3000:]
            went_on = time.monotonic() - killed
        finally:
            holder.kill()
            if waiting.poll() is None:
                os.killpg(waiting.pid, signal.SIGKILL)

    output = log_path.read_text()
    assert f"held by pid {holder.pid}" in output and "(hold it until killed)" in output
    assert f"left by pid {holder.pid}" in output  # the next holder says what happened
    assert went_on < 60, went_on  # the rest of the step, not a timeout
