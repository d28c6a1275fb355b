"""Peer: dlt loading the two CSVs into DuckDB with its own filesystem source.

Run with the peers' dlt virtualenv (`make bench-peers`), not mlstack's: it imports only
dlt. Usage: python peer_dlt.py <projects.csv> <tags.csv> <database> <workdir>; prints
stage seconds as JSON (extract-load only: dlt neither audits nor transforms here).
"""

import json
import os
import sys
import time

os.environ.setdefault("RUNTIME__DLTHUB_TELEMETRY", "false")

import dlt
from dlt.sources.filesystem import filesystem, read_csv_duckdb


def main(projects: str, tags: str, database: str, workdir: str) -> None:
    pipeline = dlt.pipeline(
        pipeline_name="mlstack_peer",
        destination=dlt.destinations.duckdb(database),
        dataset_name="raw",
        pipelines_dir=workdir,
    )
    started = time.perf_counter()
    resources = []
    for path, table in ((projects, "projects"), (tags, "tags")):
        folder, name = os.path.split(os.path.abspath(path))
        files = filesystem(bucket_url=f"file://{folder}", file_glob=name)
        resources.append((files | read_csv_duckdb(chunk_size=100_000)).with_name(table))
    pipeline.run(resources, write_disposition="replace")
    print(json.dumps({"extract_load": time.perf_counter() - started}))


if __name__ == "__main__":
    main(*sys.argv[1:5])
