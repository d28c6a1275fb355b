"""A tool installed through the project's own Makefile target (for tests and benchmarks)."""

from __future__ import annotations

import subprocess

from mlstack_assets.settings import REPO_ROOT


def make_target(target: str, timeout: float = 900) -> None:
    """`make <target>` in the repository (the targets are idempotent: a no-op when done);
    fails with the end of make's output."""
    completed = subprocess.run(
        ["make", "--no-print-directory", target],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        output = (completed.stdout + completed.stderr)[-3000:]
        raise RuntimeError(f"`make {target}` failed:\n{output}")
