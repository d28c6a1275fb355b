"""Helpers for tests that start real processes: Dagster homes, no-network runs, clean stops."""

import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.conftest import REPO_ROOT


def dagster_home(path: Path) -> Path:
    """A fresh DAGSTER_HOME with the repo's instance configuration."""
    path.mkdir(parents=True)
    shutil.copy(REPO_ROOT / "deploy" / "dagster.yaml", path / "dagster.yaml")
    return path


def offline(command: list[str]) -> list[str]:
    """`command` in its own network namespace (no network at all) when the OS allows it.
    With `CI` set, a refused namespace fails the test instead of running with network."""
    if shutil.which("unshare"):
        probe = subprocess.run(["unshare", "--net", "true"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["unshare", "--net", *command]
    if os.environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        import pytest

        pytest.fail("no network namespace (unshare --net was refused): cannot run offline")
    return command


def stop(process: subprocess.Popen, grace: float = 30) -> None:
    """Stop a process started with `start_new_session=True`, and everything it started."""
    with_children = os.getpgid(process.pid)
    os.killpg(with_children, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(with_children, signal.SIGKILL)
        process.wait(timeout=30)


def processes_of(home: Path) -> list[int]:
    """Live processes started for the instance in `home` (they inherit DAGSTER_HOME)."""
    marker = f"DAGSTER_HOME={home}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if marker in (entry / "environ").read_bytes().split(b"\0") and _alive(int(entry.name)):
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _alive(pid: int) -> bool:
    """Running (a zombie has finished: it only waits for someone to read its exit status)."""
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
