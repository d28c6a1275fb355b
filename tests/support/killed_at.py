"""The `mlstack` CLI with one function made to SIGKILL its own process when it is called: a
kill at an exact point of a run or a rollback (e.g. after the table was written, before its
version is made current), where a kill from outside could only guess.

    python -m tests.support.killed_at mlstack_assets.lake.versions:make_current rollback ...
"""

import os
import signal
import sys
from importlib import import_module
from typing import Any


def kill_when_called(target: str) -> None:
    """Replace `module:function` so that calling it SIGKILLs this process."""
    module_name, name = target.split(":")
    module = import_module(module_name)
    getattr(module, name)  # it must exist: a typo would never kill

    def killed(*_: Any, **__: Any) -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    setattr(module, name, killed)


if __name__ == "__main__":
    target, *argv = sys.argv[1:]
    kill_when_called(target)
    from mlstack_assets.cli import main

    main(argv)
