"""The benchmark's peers: other tools loading the same CSVs into DuckDB, for comparison.

- dlt (`peer_dlt.py`, in its own virtualenv): its filesystem source and DuckDB reader;
- sling: its Linux binary (from the `sling-linux-amd64` wheel), one `sling run` per file,
  one after the other (a DuckDB file takes one writer), through the `duckdb` CLI.
Both are installed by `make bench-peers` under `.mlstack/peers/`. Neither audits,
checkpoints or transforms: each is an extract-load, set against mlstack's extract-load
(and its whole refresh) in the report, with no target.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from mlstack_assets.settings import REPO_ROOT

PEERS_DIR = REPO_ROOT / ".mlstack" / "peers"
PEERS = ("dlt", "sling")


def ensure_installed() -> None:
    """The peers from the project's own Makefile target (a no-op once installed)."""
    from tests.support.make import make_target

    make_target("bench-peers")


def command(peer: str, projects: Path, tags: Path, workdir: Path) -> list[str]:
    """The command that runs `peer` on the two files (it prints its stage seconds)."""
    if peer == "dlt":
        python = PEERS_DIR / "dlt" / "bin" / "python"
        script = REPO_ROOT / "benchmarks" / "peer_dlt.py"
        args = [str(projects), str(tags), str(workdir / "dlt.duckdb"), str(workdir / "dlt")]
        return [str(python), str(script), *args]
    if peer == "sling":
        return [
            sys.executable,
            "-m",
            "benchmarks.peers",
            str(projects),
            str(tags),
            str(workdir),
        ]
    raise ValueError(peer)


def run_sling(projects: Path, tags: Path, workdir: Path) -> None:
    """Each file by its own `sling run`, in turn; the wall time of the pair."""
    import json
    import subprocess
    import time

    venv = PEERS_DIR / "sling"
    [binary] = venv.glob("lib/python*/site-packages/sling_linux_amd64/bin/sling-linux-amd64")
    env = {
        **os.environ,
        "HOME": str(venv / "home"),  # the CLI's extensions were installed there
        "DUCKDB_PATH": str(venv / "bin" / "duckdb"),  # or sling downloads one
        "SLING_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "SLING_HOME_DIR": str(workdir / "sling-home"),
        "PEER_DUCKDB": f"duckdb://{workdir / 'sling.duckdb'}",
    }
    started = time.perf_counter()
    for path, table in ((projects, "projects"), (tags, "tags")):
        done = subprocess.run(
            [str(binary), "run", "--src-stream", f"file://{path}", "--tgt-conn", "PEER_DUCKDB",
             "--tgt-object", f"main.{table}", "--mode", "full-refresh"],
            env=env,
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )  # fmt: skip
        if done.returncode != 0:
            sys.exit(f"sling failed on {path}:\n{(done.stdout + done.stderr)[-2000:]}")
    print(json.dumps({"extract_load": time.perf_counter() - started}))


if __name__ == "__main__":
    run_sling(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))
