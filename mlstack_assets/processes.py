"""Processes: children that die with their parent, and runs whose processes died.

When a Dagster process is killed (SIGKILL, out of memory, a closed terminal), what it
started lives on unless told otherwise: a `dbt build` kept writing the DuckDB file, a
connector kept reading. Linux sends a process a chosen signal when the thread that
started it ends (`PR_SET_PDEATHSIG`, kept across `exec`): a child asks for SIGKILL first
thing, then replaces itself with the real program (`python -m mlstack_assets.processes
<program> [args...]`, and `mlstack-dbt` for dbt). The kernel also drops a killed
process's file locks; what it cannot end is the run a killed process left STARTED in the
Dagster instance, which `fail_orphaned_runs` marks failed.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent ends; exit now if it already has.
    Elsewhere the process simply runs."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def child_command(program: str, *args: str) -> list[str]:
    """The command line that runs `program` as a child that dies with its parent."""
    return [sys.executable, "-m", "mlstack_assets.processes", program, *args]


def pid_alive(pid: int) -> bool:
    """Is a process with this pid running on this machine? (A zombie has ended: it only
    waits for its parent to read its exit status.)"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    try:
        return "State:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return not sys.platform.startswith("linux")


def alive_since(pid: int, since: float) -> bool:
    """Is `pid` running, and the process that was running at `since` (epoch seconds)? On
    Linux a pid reused by a process started later is not the same process."""
    if not pid_alive(pid):
        return False
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK") <= since + 1
    except (OSError, ValueError, IndexError, StopIteration):
        return True


def fail_orphaned_runs(instance: Any) -> list[str]:
    """Mark failed the runs left STARTED or STARTING by processes that are gone.

    Only for an instance kept on this machine (SQLite storage), where every event records
    the pid of a local process: when none of them still runs, nothing will ever finish the
    run. Runs on a shared instance are left to Dagster's run monitoring. One line per run.
    """
    from dagster import DagsterRunStatus, RunsFilter

    from mlstack_assets.compat import runs_stored_in_sqlite

    if not runs_stored_in_sqlite(instance):
        return []
    lines = []
    in_progress = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING]
    for record in instance.get_run_records(filters=RunsFilter(statuses=in_progress)):
        run = record.dagster_run
        logs = instance.all_logs(run.run_id)
        pids = {e.dagster_event.pid for e in logs if e.dagster_event and e.dagster_event.pid}
        since = record.start_time or record.create_timestamp.timestamp()
        if not pids or any(alive_since(pid, since) for pid in pids):
            continue
        message = (
            f"marked failed by mlstack: its process{'es' if len(pids) > 1 else ''}"
            f" ({', '.join(map(str, sorted(pids)))}) ended without finishing it (killed?)"
        )
        instance.report_run_failed(run, message)
        lines.append(f"run {run.run_id[:8]} ({run.status.value}): {message}")
    return lines


def main() -> None:
    die_with_parent()
    program, *args = sys.argv[1:]
    os.execv(program, [program, *args])


if __name__ == "__main__":
    main()
