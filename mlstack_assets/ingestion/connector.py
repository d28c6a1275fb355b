"""Install the pinned Airbyte File source connector with `uv`, once, into a venv of its own
(its dependencies, pandas among them, never meet mlstack's): no connector registry, no Docker."""

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
# the longest a step waits for another process's install (which takes about a minute)
INSTALL_WAIT_SECONDS = 900


class ConnectorInstallError(RuntimeError):
    """The connector could not be installed; the message carries uv's own output."""


def ensure_connector(install_root: Path) -> Path:
    """Return the connector executable, installing it first if this version is missing."""
    venv = install_root / f"{CONNECTOR_NAME}-{CONNECTOR_VERSION}"
    executable, marker = venv / "bin" / CONNECTOR_NAME, venv / ".mlstack-installed"
    if marker.exists():
        return executable
    install_root.mkdir(parents=True, exist_ok=True)
    # Two steps (projects and tags) may ask at once: one installs, the other waits, bounded.
    lock = FileLock(install_root / ".install.lock", timeout=INSTALL_WAIT_SECONDS)
    try:
        with lock:
            if not marker.exists():
                _install(venv, executable)
                marker.write_text(CONNECTOR_VERSION)
    except Timeout:
        waited = f"gave up after {INSTALL_WAIT_SECONDS} s waiting for another process installing"
        held = f"{CONNECTOR_PACKAGE} into {venv} (its lock {lock.lock_file} is still held)"
        raise ConnectorInstallError(f"{waited} {held}") from None
    return executable


def _run(*args: str) -> None:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        failed = f"installing {CONNECTOR_PACKAGE} failed: {' '.join(args)}"
        raise ConnectorInstallError(f"{failed}\n{result.stderr.strip()}")


def _install(venv: Path, executable: Path) -> None:
    from uv import find_uv_bin

    shutil.rmtree(venv, ignore_errors=True)
    _run(find_uv_bin(), "venv", "--quiet", "--python", sys.executable, str(venv))
    # precompiled: where PYTHONDONTWRITEBYTECODE is set, each start would compile pandas and the CDK
    pip = [find_uv_bin(), "pip", "install", "--quiet", "--compile-bytecode"]
    _run(*pip, "--python", str(venv / "bin" / "python"), CONNECTOR_PACKAGE)
    if not executable.exists():
        raise ConnectorInstallError(f"{CONNECTOR_PACKAGE} installed no `{CONNECTOR_NAME}` script")


def main() -> None:
    """`python -m mlstack_assets.ingestion.connector`: install ahead of the first sync."""
    from mlstack_assets.settings import load_settings

    print(ensure_connector(load_settings().connector_dir))


if __name__ == "__main__":
    main()
