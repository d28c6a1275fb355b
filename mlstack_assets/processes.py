"""Processes: children that die with their parent, and whether a process still runs.

When a Dagster step is killed (SIGKILL, out of memory, a lost pod), the processes it
started live on unless told otherwise: a `dbt build` kept the DuckDB file locked and kept
writing, a connector kept reading, with no run tracking either. Linux sends a process a
chosen signal when its parent dies (`PR_SET_PDEATHSIG`, kept across `exec`); a child asks
for SIGKILL first thing, then replaces itself with the real program. Elsewhere the
program simply runs.

`python -m mlstack_assets.processes <program> [args...]` runs any program that way (the
Airbyte connector); `mlstack-dbt` (`transform/dbt_child.py`) does the same for dbt.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent dies; exit now if it already has.

    Not fatal where it cannot be done: the process then runs as it would without mlstack.
    """
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
    """Is a process with this pid running (on this machine)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def alive_since(pid: int, since: float) -> bool:
    """Is `pid` running, and the same process that was running at `since` (epoch s)?
    On Linux a pid reused by a process started later is not the same process."""
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


def main() -> None:
    die_with_parent()
    program, *args = sys.argv[1:]
    os.execv(program, [program, *args])


if __name__ == "__main__":
    main()
