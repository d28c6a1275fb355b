"""`mlstack-dbt`: dbt, started so that it dies with the Dagster process that started it.

dagster-dbt runs `dbt build` as a child process. When the Dagster step is killed (SIGKILL,
out of memory, a lost pod), the child lives on, keeps the DuckDB file locked and keeps
writing, with no run tracking it. This launcher asks Linux to send the child SIGKILL when
its parent dies (`PR_SET_PDEATHSIG`, kept across `exec`), then replaces itself with the
dbt installed beside this Python. Elsewhere it simply runs dbt.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from pathlib import Path

PR_SET_PDEATHSIG = 1
EXECUTABLE = "mlstack-dbt"


def dbt_child_executable() -> str:
    """The launcher's path, for `DbtCliResource(dbt_executable=...)`."""
    return str(Path(sys.executable).parent / EXECUTABLE)


def _die_with_parent() -> None:
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
        return  # not fatal: dbt then runs as it would without mlstack
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def main() -> None:
    _die_with_parent()
    dbt = Path(sys.executable).parent / "dbt"
    os.execv(str(dbt), [str(dbt), *sys.argv[1:]])


if __name__ == "__main__":
    main()
