"""The connector's floor: the pinned Airbyte File source's `read` alone, records discarded.

For both sources at once (as mlstack extracts them), the connector executable mlstack
installs runs `read` with the configured catalog mlstack gives it (the file's header,
every column text, mlstack's reader options) and its records go to /dev/null: no
checks, no checkpoint, no warehouse, no Dagster. What is left is the real connector's own
cost (start, pandas parse, JSON records), the least any extract-load through it can take.
Run by `benchmarks/run.py` with the MLSTACK_* variables set; prints stage seconds as JSON.
"""

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from mlstack_assets.ingestion.connector import ensure_connector
from mlstack_assets.ingestion.protocol import configured_catalog as catalog_for
from mlstack_assets.ingestion.sources import SourceSpec, source_specs
from mlstack_assets.ingestion.strict_csv import read_header
from mlstack_assets.settings import load_settings


def configured_catalog(spec: SourceSpec) -> dict:
    """The configured catalog mlstack's extract gives the connector."""
    with duckdb.connect() as conn:
        return catalog_for(spec.name, read_header(conn, spec.local_path))


def main() -> None:
    settings = load_settings()
    executable = ensure_connector(settings.connector_dir)
    with tempfile.TemporaryDirectory(prefix="airbyte-floor-") as workdir:
        commands = []
        for spec in source_specs(settings):
            config = Path(workdir, f"{spec.name}-config.json")
            config.write_text(json.dumps(spec.connector_config()))
            catalog = Path(workdir, f"{spec.name}-catalog.json")
            catalog.write_text(json.dumps(configured_catalog(spec)))
            commands.append(
                [str(executable), "read", "--config", str(config), "--catalog", str(catalog)]
            )
        started = time.perf_counter()
        reads = [subprocess.Popen(c, stdout=subprocess.DEVNULL) for c in commands]
        failed = [c for c, p in zip(commands, reads, strict=True) if p.wait() != 0]
        seconds = time.perf_counter() - started
    if failed:
        sys.exit(f"the connector failed: {failed}")
    print(json.dumps({"extract_load": seconds}))


if __name__ == "__main__":
    main()
