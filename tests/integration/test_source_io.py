"""Reading sources without hanging or blocking: stall time-outs, retries, lock waits.

Real pieces only: the loopback HTTPS server stalls, resets connections or answers 503;
a second real process holds the warehouse lock; the raw asset runs the real connector.
"""

import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO_ROOT, Stack
from tests.support.fixture_data import PROJECT_TAGS, write_tags
from tests.support.https_server import HTTPSServer, Route
from tests.support.results import failure_messages, snapshot


def run_logs(stack: Stack, run_id: str) -> list[str]:
    """Every log message of a run, as the step's log in the UI shows them."""
    return [entry.user_message for entry in stack.instance.all_logs(run_id)]


def serve_tags(stack: Stack, server: HTTPSServer, route: Route, **env: str) -> tuple[Any, float]:
    """Materialize tags from `route` on the HTTPS server with `env` set: the result and the
    seconds it took."""
    server.routes["/tags.csv"] = route
    stack.set_source("tags", server.url("/tags.csv"))
    for name, value in env.items():
        stack.monkeypatch.setenv(name, value)
    started = time.monotonic()
    result = stack.materialize("tags")
    return result, time.monotonic() - started


def big_tags(stack: Stack) -> bytes:
    many = {**PROJECT_TAGS, **{1000 + i: "mlops" for i in range(15000)}}  # ~230 KB
    return write_tags(stack.root / "big.csv", many).read_bytes()


def test_stalling_https_source_fails_within_the_configured_time(
    published_stack: Stack, https_server: HTTPSServer
):
    before = snapshot(published_stack)
    result, elapsed = serve_tags(
        published_stack,
        https_server,
        Route(body=big_tags(published_stack), slow_after=150_000),
        MLSTACK_SOURCE_TIMEOUT_SECONDS="2",
    )

    assert not result.success
    message = failure_messages(result)
    assert f"source 'tags' ({https_server.url('/tags.csv')})" in message
    assert "the server stopped sending data: no bytes for 2 s after 150,000 bytes" in message
    assert "MLSTACK_SOURCE_TIMEOUT_SECONDS=2" in message
    assert https_server.count("/tags.csv") == 1  # a stall is not retried
    assert elapsed < 30, elapsed  # 2 s of stall plus loading the definitions, not minutes
    assert snapshot(published_stack) == before


def test_a_trickling_https_source_fails_at_the_deadline_with_bytes_and_rate(
    published_stack: Stack, https_server: HTTPSServer
):
    # one byte every half second: never a stall (MLSTACK_SOURCE_TIMEOUT_SECONDS), and a
    # download that would take hours without a deadline
    before = snapshot(published_stack)
    result, elapsed = serve_tags(
        published_stack,
        https_server,
        Route(body=big_tags(published_stack), trickle_seconds=0.5),
        MLSTACK_SOURCE_TIMEOUT_SECONDS="5",
        MLSTACK_SOURCE_DEADLINE_SECONDS="4",
    )
    https_server.release.set()

    assert not result.success
    message = failure_messages(result)
    assert f"source 'tags' ({https_server.url('/tags.csv')})" in message
    assert "the download did not finish within 4 s (MLSTACK_SOURCE_DEADLINE_SECONDS)" in message
    received = r"\b([5-9]|1[0-2]) bytes received in [45] s, \d+\.\d bytes/s"
    assert re.search(received, message), message
    assert https_server.count("/tags.csv") == 1  # a deadline is not retried
    assert elapsed < 40, elapsed
    assert snapshot(published_stack) == before


def test_a_source_under_the_low_speed_limit_fails_with_the_rate_and_bytes_received(
    published_stack: Stack, https_server: HTTPSServer
):
    # two bytes a second: never a stall, far under the default 1000 bytes/s; judged over 3 s
    # instead of the default 60, with the default (half an hour) deadline
    before = snapshot(published_stack)
    result, elapsed = serve_tags(
        published_stack,
        https_server,
        Route(body=big_tags(published_stack), trickle_seconds=0.5),
        MLSTACK_SOURCE_LOW_SPEED_SECONDS="3",
    )
    https_server.release.set()

    assert not result.success
    message = failure_messages(result)
    assert f"source 'tags' ({https_server.url('/tags.csv')})" in message
    slow = r"too slowly: \d\.\d bytes/s over the last [34]\.\d s, under the 1\.0 kB/s required"
    assert re.search(slow, message), message
    names = "MLSTACK_SOURCE_LOW_SPEED_BYTES_PER_SECOND=1000 over MLSTACK_SOURCE_LOW_SPEED_SECONDS=3"
    assert f"({names})" in message
    assert re.search(r"; ([5-9]|1[0-2]) bytes received in [34] s", message), message
    assert https_server.count("/tags.csv") == 1  # a low speed is not retried
    assert elapsed < 40, elapsed
    assert snapshot(published_stack) == before


def test_megabytes_at_an_ordinary_rate_pass_the_low_speed_limit(
    tmp_path: Path, https_server: HTTPSServer
):
    """About 5 MB sent at 2 MB/s through the real download path, judged against 1 MB/s over
    every 0.5 s, arrives whole; the same transfer fails a 10 MB/s limit: the limit is active."""
    from mlstack_assets.ingestion.download import download
    from mlstack_assets.ingestion.sources import SourceError, SourceSpec

    body = b"id,tag\n" + b"".join(b"%d,mlops\n" % i for i in range(400_000))
    https_server.routes["/big.csv"] = Route(body=body, bytes_per_second=2_000_000)
    spec, copy, retries = SourceSpec("tags", https_server.url("/big.csv")), tmp_path / "big.csv", []

    size = download(spec, copy, 5, 3, retries.append, low_speed=(1_000_000, 0.5))

    assert size == len(body) > 4_000_000 and copy.read_bytes() == body
    with pytest.raises(SourceError) as raised:
        download(spec, copy, 5, 3, retries.append, low_speed=(10_000_000, 0.5))
    slow = r"too slowly: [12]\.\d MB/s over the last 0\.\d s, under the 10\.0 MB/s required"
    assert re.search(slow, str(raised.value)), raised.value
    assert https_server.count("/big.csv") == 2 and retries == []  # not retried


def test_the_two_sources_are_read_at_the_same_time(stack: Stack, https_server: HTTPSServer):
    """On DuckDB a run's steps share one process, yet the tags source is fetched while the
    projects source is still arriving: the raw extracts run concurrently."""
    from tests.support.fixture_data import write_projects

    projects = write_projects(stack.root / "p.csv").read_bytes()
    https_server.routes["/projects.csv"] = Route(body=projects, slow_after=100)
    https_server.routes["/tags.csv"] = Route(body=(stack.root / "src" / "tags.csv").read_bytes())
    stack.set_source("projects", https_server.url("/projects.csv"))
    stack.set_source("tags", https_server.url("/tags.csv"))

    results = []
    run = threading.Thread(
        target=lambda: results.append(stack.materialize("key:projects or key:tags"))
    )
    run.start()
    deadline = time.monotonic() + 60
    while https_server.count("/tags.csv") == 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    fetched_while_projects_stalled = https_server.count("/tags.csv") == 1
    https_server.release.set()  # projects.csv may now finish
    run.join(timeout=300)

    assert fetched_while_projects_stalled
    [result] = results
    assert result.success
    assert {"projects", "tags"} <= {
        e.asset_key.path[-1] for e in result.get_asset_materialization_events()
    }
    # each source is read once per run: the second raw step starts no second extract
    assert https_server.count("/projects.csv") == 1
    assert https_server.count("/tags.csv") == 1


def test_connection_reset_twice_then_answered_is_retried_and_succeeds(
    published_stack: Stack, https_server: HTTPSServer
):
    tags = {**PROJECT_TAGS, 6: "mlops"}
    body = write_tags(published_stack.root / "t.csv", tags).read_bytes()
    route = Route(body=body, failures=["reset", "reset"])

    result, _ = serve_tags(published_stack, https_server, route)

    assert result.success, failure_messages(result)
    assert https_server.count("/tags.csv") == 3
    retries = [m for m in run_logs(published_stack, result.run_id) if "retry " in m]
    assert len(retries) == 2, retries
    assert "source 'tags'" in retries[0] and "retry 1 of 3 in 1 s" in retries[0]
    assert "retry 2 of 3 in 2 s" in retries[1]
    assert published_stack.query("select tag from mlops_course.tags where id = 6") == [("mlops",)]


def test_server_errors_are_retried_a_bounded_number_of_times(
    published_stack: Stack, https_server: HTTPSServer
):
    route = Route(body=b"id,tag\n", failures=[503, 503, 503])

    result, _ = serve_tags(published_stack, https_server, route, MLSTACK_SOURCE_RETRIES="1")

    assert not result.success
    assert https_server.count("/tags.csv") == 2
    assert "unreachable after 2 attempts: HTTP 503" in failure_messages(result)


HOLDER = """
import sys, time
from mlstack_assets.warehouse.duckdb import duckdb_file_lock
with duckdb_file_lock(sys.argv[1]).hold(purpose="hold it for a test", log=print):
    print("held", flush=True)
    sys.stdin.readline()  # until the test says so (or closes the pipe)
"""


@pytest.fixture
def lock_holder(published_stack: Stack):
    """Another process holding the warehouse lock until the test writes a line to it."""
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(published_stack.warehouse_path)],
        cwd=REPO_ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    while (line := process.stdout.readline()) and line.strip() != "held":
        pass
    assert line.strip() == "held", "the holder could not take the lock"
    yield process
    process.stdin.close()
    process.wait(timeout=30)


def _release_when_waiting(stack: Stack, holder: subprocess.Popen, seen: list[str]) -> None:
    """Release the holder once the run's log says it waits for the lock."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        for record in stack.instance.get_run_records():
            messages = run_logs(stack, record.dagster_run.run_id)
            waiting = [m for m in messages if "waiting to stage" in m]
            if waiting:
                seen.extend(waiting)
                holder.stdin.write("release\n")
                holder.stdin.flush()
                return
        time.sleep(0.5)


def test_run_waiting_for_a_held_warehouse_logs_who_holds_it_then_proceeds(
    published_stack: Stack, lock_holder: subprocess.Popen
):
    published_stack.set_source(
        "tags", write_tags(published_stack.root / "t.csv", {**PROJECT_TAGS, 6: "mlops"})
    )
    seen: list[str] = []
    releaser = threading.Thread(
        target=_release_when_waiting, args=(published_stack, lock_holder, seen)
    )
    releaser.start()

    result = published_stack.materialize("tags")
    releaser.join()

    assert result.success, failure_messages(result)
    lock_file = f"{published_stack.warehouse_path}.lock"
    assert seen, "the run never said it was waiting"
    assert f"waiting to stage, audit and publish tags for the warehouse lock {lock_file}" in seen[0]
    assert f"held by pid {lock_holder.pid} (hold it for a test)" in seen[0]
    # it asks for the lock to stage only once the connector has finished: the sync itself
    # ran while the other process held the lock; then it got the lock and went on
    logs = [m or "" for m in run_logs(published_stack, result.run_id)]
    waited = next(i for i, m in enumerate(logs) if "waiting to stage" in m)
    got = next(i for i, m in enumerate(logs) if "got the warehouse lock" in m)
    audited = next(i for i, m in enumerate(logs) if m.startswith("synced "))
    assert waited < got < audited
    assert published_stack.query("select tag from mlops_course.tags where id = 6") == [("mlops",)]


def test_run_waiting_past_the_configured_wait_fails_naming_the_holder(
    published_stack: Stack, lock_holder: subprocess.Popen
):
    before = snapshot(published_stack)
    published_stack.monkeypatch.setenv("MLSTACK_LOCK_TIMEOUT_SECONDS", "3")

    result = published_stack.materialize("tags")

    assert not result.success
    message = failure_messages(result)
    assert "gave up waiting to stage, audit and publish tags for the warehouse" in message
    assert str(published_stack.warehouse_path) in message
    assert f"held by pid {lock_holder.pid}" in message and "(hold it for a test)" in message
    assert "MLSTACK_LOCK_TIMEOUT_SECONDS=3" in message
    assert any("waiting to stage" in m for m in run_logs(published_stack, result.run_id))
    lock_holder.stdin.write("release\n")
    lock_holder.stdin.flush()
    lock_holder.wait(timeout=30)
    assert snapshot(published_stack) == before


def test_sync_directories_of_ended_processes_are_pruned(tmp_path: Path):
    from mlstack_assets.ingestion.embedded import prune_stale

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    stale = tmp_path / f"tags-{ended.pid}-abc123"
    live = tmp_path / "tags-1-xyz789"  # pid 1 always runs
    for directory in (stale, live):
        directory.mkdir()
        (directory / "cache.duckdb").write_bytes(b"x")
    messages: list[str] = []

    assert prune_stale(tmp_path, messages.append) == [stale]
    assert live.is_dir() and not stale.exists()
    assert stale.name in messages[0]
