"""A private working directory per sync: the downloaded source and PyAirbyte's cache.

`<connector_dir>/syncs/<source>-<pid>-<random>/` holds what one sync writes before the
warehouse sees it. It is removed when the sync ends; a process killed mid-sync leaves
its directory behind, and the next sync on the machine removes every directory whose
process is gone (the pid in the name says whose it is; a live pid keeps its directory).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def prune_stale(root: Path, log: Callable[[str], None]) -> list[Path]:
    """Remove the sync directories of processes that no longer run; return them."""
    removed = []
    for directory in root.glob("*-*-*") if root.is_dir() else []:
        try:
            pid = int(directory.name.split("-")[-2])
        except ValueError:
            continue
        if pid != os.getpid() and not _alive(pid):
            shutil.rmtree(directory, ignore_errors=True)
            removed.append(directory)
    if removed:
        names = ", ".join(d.name for d in removed)
        log(f"removed {len(removed)} sync directories left by ended processes: {names}")
    return removed


@contextmanager
def sync_directory(connector_dir: Path, source: str, log: Callable[[str], None]) -> Iterator[Path]:
    """A fresh directory for one sync of `source`, removed afterwards whatever happens."""
    root = connector_dir / "syncs"
    root.mkdir(parents=True, exist_ok=True)
    prune_stale(root, log)
    directory = Path(tempfile.mkdtemp(prefix=f"{source}-{os.getpid()}-", dir=root))
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)
