"""`make bench` keeps working: the benchmark end to end at a tiny size (figures not asserted)."""

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.generate import TAG_WEIGHTS, generate
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_generated_sources_are_deterministic_and_shaped_like_the_lessons(tmp_path: Path):
    first = generate(tmp_path / "a", 300)
    again = generate(tmp_path / "b", 300)

    assert [p.read_bytes() for p in first] == [p.read_bytes() for p in again]
    with first[0].open(newline="") as handle:
        projects = list(csv.DictReader(handle))
    with first[1].open(newline="") as handle:
        tags = list(csv.DictReader(handle))
    assert len(projects) == len(tags) == 300
    assert [p["id"] for p in projects] == [t["id"] for t in tags]
    assert any("\n" in p["description"] for p in projects)
    assert any('"' in p["description"] for p in projects)
    assert len({(p["title"], p["description"]) for p in projects}) == 300
    assert {t["tag"] for t in tags} <= set(TAG_WEIGHTS)


def test_benchmark_runs_end_to_end_at_a_tiny_size(tmp_path: Path):
    """Each run has a lake of its own: while the benchmark wrote into the lake of the
    environment, the volume guard compared a run with the last run at another size (a
    1,000-row run after a 100,000-row one failed row_drop_within_limit), and the user's
    lake filled with benchmark checkpoints."""
    results = tmp_path / "results"
    users_lake = tmp_path / "users_lake"

    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.run",
            "--sizes",
            "200",
            "--ticks",
            "2",
            "--results",
            str(results),
            "--workdir",
            str(tmp_path / "work"),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "MLSTACK_LAKE": str(users_lake)},
    )

    assert completed.returncode == 0, completed.stderr[-3000:]
    assert not users_lake.exists()
    report = json.loads((results / "latest.json").read_text())
    assert {run["variant"] for run in report["runs"]} == {
        "mlstack",
        "mlstack_run",
        "baseline",
        "limit",
        "airbyte_floor",
        "dlt",
        "sling",
    }
    for run in report["runs"]:
        assert run["total_s"] > 0 and run["peak_rss_mb"] > 0
        if run["variant"] in ("airbyte_floor", "dlt", "sling"):  # extract-load only
            assert set(run["stages_s"]) == {"extract_load"}
            continue
        assert set(run["stages_s"]) == {
            "extract_load",
            "audit",
            "publish",
            "transform",
            "checks",
            "ml",
        }
    assert {"local", "https_etag"} == set(report["sensor_tick"])
    assert report["definitions_load"]["median_s"] > 0
    for variant in ("mlstack", "mlstack_run"):
        assert any(r["variant"] == variant and r["largest_process_mb"] > 0 for r in report["runs"])
    assert (results / "time_vs_size.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 200 | mlstack |" in completed.stdout
    assert any(line.startswith("extract_load at 200 rows") for line in report["targets"])
    assert any(line.startswith("peer sling at 200 rows") for line in report["targets"])
