"""Heavy imports, one at a time across a process's threads.

Steps start work in threads (the raw extracts, dbt's in-process adapter) while the step's
own thread imports what it needs next (Great Expectations). Two threads importing large
packages that share dependencies can wait on each other's module locks in a cycle; Python
then hands one of them a partially initialized module ("module 'airbyte' has no
attribute 'DuckDBCache'", seen in `make bench`). Every such import goes through
`import_serially`, so only one of them runs at a time; the waiting thread's own work (a
connector process, dbt) goes on meanwhile.
"""

import importlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_ONE_AT_A_TIME = threading.RLock()


@contextmanager
def importing() -> Iterator[None]:
    """Hold the process's heavy-import lock: for code that imports as it goes."""
    with _ONE_AT_A_TIME:
        yield


def import_serially(*modules: str) -> None:
    """Import `modules` (dotted names), holding the process's heavy-import lock."""
    with importing():
        for module in modules:
            importlib.import_module(module)
