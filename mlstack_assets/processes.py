"""Children that die with their parent, and runs whose processes died.

A killed Dagster process's children live on (a `dbt build` kept writing the DuckDB file), so
each child asks Linux for SIGKILL when its parent ends (`PR_SET_PDEATHSIG`, kept across `exec`)
and then becomes the real program: `python -m mlstack_assets.processes <program> [args...]`
(`mlstack-dbt` for dbt). What the kernel cannot end, a run left STARTED in the Dagster
instance, `fail_orphaned_runs` marks failed.
"""

import ctypes
import os
import signal
import sys
from pathlib import Path
from typing import Any

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent ends; exit now if it already has."""
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
    """Is a process with this pid running on this machine? (A zombie has ended.)"""
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
    """Is `pid` running, and started by `since` (epoch seconds), i.e. not a reused pid?"""
    if not pid_alive(pid):
        return False
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = float(Path("/proc/stat").read_text().split("\nbtime ", 1)[1].split()[0])
        return boot + ticks / os.sysconf("SC_CLK_TCK") <= since + 1
    except (OSError, ValueError, IndexError):
        return True


def fail_orphaned_runs(instance: Any) -> list[str]:
    """Mark failed the runs left STARTED or STARTING by processes that are gone; a line each.

    Only on an instance kept here (SQLite), whose events' pids are local processes; a shared
    instance is left to Dagster's run monitoring."""
    from dagster import DagsterRunStatus, RunsFilter

    from mlstack_assets.compat import runs_stored_in_sqlite

    if not runs_stored_in_sqlite(instance):
        return []
    lines = []
    in_progress = RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.STARTING])
    for record in instance.get_run_records(filters=in_progress):
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
