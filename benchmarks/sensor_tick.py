"""How long one source-change sensor tick takes when nothing changed.

Two sources of the given size, local files and then the same files over HTTPS on
loopback (with ETag, so each check is a conditional request answered 304). Prints the
mean and worst of `ticks` evaluations, per tick and per source, as JSON.
Usage: python -m benchmarks.sensor_tick <workdir> <size> <ticks>
"""

import json
import os
import statistics
import sys
import time
from pathlib import Path

from benchmarks.generate import generate


def _time_ticks(ticks: int) -> list[float]:
    from dagster import DagsterInstance, build_sensor_context

    from mlstack_assets.definitions import build_definitions

    defs = build_definitions()
    sensor = defs.get_sensor_def("source_change_sensor")
    repository = defs.get_repository_def()
    with DagsterInstance.ephemeral() as instance:
        with build_sensor_context(instance=instance, repository_def=repository) as context:
            cursor = sensor.evaluate_tick(context).cursor  # first tick: fingerprints everything
        timings = []
        for _ in range(ticks):
            with build_sensor_context(
                instance=instance, cursor=cursor, repository_def=repository
            ) as context:
                started = time.perf_counter()
                data = sensor.evaluate_tick(context)
                timings.append(time.perf_counter() - started)
            assert not data.run_requests, "a source changed during the benchmark"
    return timings


def _summary(timings: list[float], sources: int) -> dict[str, float]:
    return {
        "mean_ms_per_tick": 1000 * statistics.mean(timings),
        "max_ms_per_tick": 1000 * max(timings),
        "mean_ms_per_source": 1000 * statistics.mean(timings) / sources,
    }


def main(workdir: str, size: str, ticks: str) -> None:
    root = Path(workdir)
    projects, tags = generate(root / "sources", int(size))
    os.environ.update(
        MLSTACK_DUCKDB_PATH=str(root / "warehouse.duckdb"),
        MLSTACK_PROJECTS_URL=str(projects),
        MLSTACK_TAGS_URL=str(tags),
    )
    results = {"local": _summary(_time_ticks(int(ticks)), 2)}

    from tests.support.https_server import Route, start_https_server

    server, httpd = start_https_server(root)
    os.environ["REQUESTS_CA_BUNDLE"] = str(server.ca_bundle)
    for name, path in (("projects", projects), ("tags", tags)):
        server.routes[f"/{name}.csv"] = Route(body=path.read_bytes(), etag=f'"{name}-v1"')
        os.environ[f"MLSTACK_{name.upper()}_URL"] = server.url(f"/{name}.csv")
    try:
        results["https_etag"] = _summary(_time_ticks(int(ticks)), 2)
    finally:
        httpd.shutdown()
    print(json.dumps(results))


if __name__ == "__main__":
    main(*sys.argv[1:4])
