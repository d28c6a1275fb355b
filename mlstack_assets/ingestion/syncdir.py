"""A private working directory per extract: the downloaded source, the connector's output.

`<connector_dir>/syncs/<source>-<pid>-<random>/` holds what one extract writes before the
lake and the warehouse see it; `<pid>` is the Dagster process that made it. It is removed
when the raw step is done with it; a process killed mid-sync leaves its directory behind,
and the next extract on the machine removes every directory whose process is gone (a
live pid keeps its directory).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from mlstack_assets.processes import pid_alive


def prune_stale(root: Path, log: Callable[[str], None]) -> list[Path]:
    """Remove the sync directories of processes that no longer run; return them."""
    removed = []
    for directory in root.glob("*-*-*") if root.is_dir() else []:
        try:
            pid = int(directory.name.split("-")[-2])
        except ValueError:
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    if removed:
        names = ", ".join(d.name for d in removed)
        log(f"removed {len(removed)} sync directories left by ended processes: {names}")
    return removed


def new_sync_directory(connector_dir: Path, source: str, log: Callable[[str], None]) -> Path:
    """A fresh directory for one extract of `source` (the caller removes it)."""
    root = connector_dir / "syncs"
    root.mkdir(parents=True, exist_ok=True)
    prune_stale(root, log)
    return Path(tempfile.mkdtemp(prefix=f"{source}-{os.getpid()}-", dir=root))
