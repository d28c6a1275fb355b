"""Install the Airbyte File source connector into a private venv, once, offline-safe.

The connector is the `source-file` package from the package registry, pinned, installed
with `uv` into a virtualenv of its own (its dependencies, pandas among them, never meet
mlstack's), so a sync needs neither Airbyte's connector registry nor Docker.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from filelock import FileLock, Timeout

CONNECTOR_NAME = "source-file"
# 0.5.40 and later, as published on PyPI, require `smart-open[all]==<their own version>`,
# a release that does not exist, so they cannot be installed. 0.5.39 is the newest that can.
CONNECTOR_VERSION = "0.5.39"
CONNECTOR_PACKAGE = f"airbyte-source-file=={CONNECTOR_VERSION}"
# the longest a step waits for another process installing the connector (an install from
# the package registry takes about a minute here)
INSTALL_WAIT_SECONDS = 900


class ConnectorInstallError(RuntimeError):
    """The connector could not be installed; the message carries uv's own output."""


def connector_venv(install_root: Path) -> Path:
    return install_root / f"{CONNECTOR_NAME}-{CONNECTOR_VERSION}"


def _uv() -> str:
    from uv import find_uv_bin

    return find_uv_bin()


def _run(args: list[str]) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ConnectorInstallError(
            f"installing {CONNECTOR_PACKAGE} failed: {' '.join(args)}\n{result.stderr.strip()}"
        )


def ensure_connector(install_root: Path) -> Path:
    """Return the connector executable, installing it first if this version is missing."""
    venv = connector_venv(install_root)
    executable = venv / "bin" / CONNECTOR_NAME
    marker = venv / ".mlstack-installed"
    if marker.exists():
        return executable
    install_root.mkdir(parents=True, exist_ok=True)
    # Two steps (projects and tags) may ask at once: one installs, the other waits, bounded.
    lock = FileLock(install_root / ".install.lock", timeout=INSTALL_WAIT_SECONDS)
    try:
        lock.acquire()
    except Timeout:
        raise ConnectorInstallError(
            f"gave up after {INSTALL_WAIT_SECONDS} s waiting for another process installing"
            f" {CONNECTOR_PACKAGE} into {venv} (its lock {lock.lock_file} is still held)"
        ) from None
    try:
        if marker.exists():
            return executable
        shutil.rmtree(venv, ignore_errors=True)
        _run([_uv(), "venv", "--quiet", "--python", sys.executable, str(venv)])
        _run(
            [
                _uv(),
                "pip",
                "install",
                "--quiet",
                # without bytecode, and with PYTHONDONTWRITEBYTECODE set as in many
                # containers, every start of the connector compiles pandas and the CDK
                # from source again
                "--compile-bytecode",
                "--python",
                str(venv / "bin" / "python"),
                CONNECTOR_PACKAGE,
            ]
        )
        if not executable.exists():
            raise ConnectorInstallError(
                f"{CONNECTOR_PACKAGE} installed no `{CONNECTOR_NAME}` script"
            )
        marker.write_text(CONNECTOR_VERSION)
    finally:
        lock.release()
    return executable


def main() -> None:
    """`python -m mlstack_assets.ingestion.connector`: install ahead of the first sync."""
    from mlstack_assets.settings import load_settings

    print(ensure_connector(load_settings().connector_dir))


if __name__ == "__main__":
    main()
