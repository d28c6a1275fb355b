"""`make bench`: what a full refresh costs, where the time goes, and how it grows.

For each size (synthetic sources, `benchmarks/generate.py`), ways of doing the same work,
interleaved in one run, each in a fresh process tree on a fresh DuckDB file:

- mlstack_run: `mlstack run`, the command users type (fresh DAGSTER_HOME);
- mlstack:  `dagster asset materialize --select '*' -m mlstack_assets` (fresh DAGSTER_HOME);
- baseline: the same syncs, audits, publish, dbt build, checks and ML steps as plain code
  (`benchmarks/baseline.py`), no Dagster;
- limit:    DuckDB alone, in SQL (`benchmarks/limit.py`);
- airbyte_floor: the pinned connector's `read` alone for both sources, records discarded
  (`benchmarks/floor.py`): the least an extract-load through the real connector can cost;
- dlt, sling: peers loading the same CSVs into DuckDB their own way (`benchmarks/peers.py`),
  so users see what they trade; extract-load only, no target.

and, at the sizes in `--bigquery-emulator-sizes` (default 1000), mlstack with
`MLSTACK_WAREHOUSE=bigquery` against the BigQuery emulator (bqemulator on loopback, the
tests' harness, `tests/support/bigquery_emulator.py`), each run into a fresh dataset. The emulator
is not BigQuery (DuckDB behind BigQuery's API, on this machine): its figures show what
mlstack's BigQuery code path costs on the client side, not what BigQuery would take.

Reports wall time per stage and in total, peak resident memory of the whole process tree
and of its largest process (sampled every 50 ms), rows/s, and the ratios to the baseline and
the limit; plus one sensor tick when nothing changed, and how long loading the definitions
takes (what every UI reload, sensor tick and CLI call pays). Writes
`benchmarks/results/latest.json` (and a dated copy) and `benchmarks/results/time_vs_size.png`.
Figures are never asserted by tests.

Usage: python -m benchmarks.run [--sizes 1000,100000,1000000] [--repeat N] [--workdir DIR]
"""

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import psutil

from benchmarks.generate import generate
from benchmarks.peers import PEERS, ensure_installed
from benchmarks.peers import command as peer_command
from mlstack_assets.cli import materialize_command
from mlstack_assets.settings import REPO_ROOT

RESULTS = REPO_ROOT / "benchmarks" / "results"
STAGES = ("extract_load", "audit", "publish", "transform", "checks", "ml")
VARIANTS = ("limit", "airbyte_floor", "baseline", "mlstack", "mlstack_run", *PEERS)
MLSTACK_VARIANTS = ("mlstack", "mlstack_run")
SCRIPTS = {"baseline": "benchmarks.baseline", "airbyte_floor": "benchmarks.floor"}
BIN = Path(sys.executable).parent


def measure(command: list[str], env: dict[str, str]) -> tuple[str, float, int, list]:
    """Run `command`; return its stdout, wall seconds, the peak RSS of its process tree, and
    the sampled (epoch seconds, tree RSS bytes, largest process's RSS bytes) timeline."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    peak, done, timeline = 0, threading.Event(), []

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(process.pid)
        while not done.is_set():
            with contextlib.suppress(psutil.Error):  # processes come and go between calls
                sizes = []
                for member in [root, *root.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        sizes.append(member.memory_info().rss)
                peak = max(peak, sum(sizes))
                timeline.append((time.time(), sum(sizes), max(sizes, default=0)))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    wall = time.perf_counter() - started
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{stderr[-4000:]}")
    return stdout, wall, peak, timeline


def mlstack_stages(home: Path) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Per-stage seconds of the run in `home`, and each step's (start, end) epoch seconds,
    from its event log."""
    from dagster import DagsterEventType, DagsterInstance

    with DagsterInstance.from_config(str(home)) as instance:
        [run] = instance.get_runs()
        starts, steps, windows = {}, {}, {}
        stages = dict.fromkeys(STAGES, 0.0)
        for record in instance.all_logs(run.run_id):
            event = record.dagster_event
            if event is None:
                continue
            if event.event_type == DagsterEventType.STEP_START:
                starts[event.step_key] = record.timestamp
            elif event.event_type == DagsterEventType.STEP_SUCCESS:
                steps[event.step_key] = record.timestamp - starts[event.step_key]
                windows[event.step_key] = (starts[event.step_key], record.timestamp)
            elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
                metadata = event.step_materialization_data.materialization.metadata
                if "seconds" in metadata:
                    for stage, seconds in metadata["seconds"].value.items():
                        stages[stage] += seconds
    # the dbt step reports its stages (dbt build, the GX suite, publish) in "seconds" too
    stages["ml"] = sum(
        steps.get(step, 0.0) for step in ("ml_dataset", "ml_splits", "tag_distribution")
    )
    return stages, windows


def step_peaks(timeline: list, windows: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Peak RSS (MB) of the process tree while each Dagster step ran."""
    return {
        step: max((rss for t, rss, _ in timeline if start <= t <= end), default=0) / 2**20
        for step, (start, end) in windows.items()
    }


BQ_EMULATOR_VARIANT = "mlstack_bq_emulator"


def run_variant(
    variant: str,
    size: int,
    sources: tuple[Path, Path],
    workdir: Path,
    bigquery_env: dict[str, str] | None = None,
) -> dict:
    workdir.mkdir(parents=True)
    env = {
        **os.environ,
        "MLSTACK_DUCKDB_PATH": str(workdir / "warehouse.duckdb"),
        # a lake of its own too: the volume guard compares a publish with the lake's
        # current version, which a run at another size must not be
        "MLSTACK_LAKE": str(workdir / "lake"),
        "MLSTACK_PROJECTS_URL": str(sources[0]),
        "MLSTACK_TAGS_URL": str(sources[1]),
        "MLSTACK_WAREHOUSE": "duckdb",
        "MLSTACK_AIRBYTE": "embedded",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if variant == BQ_EMULATOR_VARIANT:
        # a fresh dataset per run, like the fresh DuckDB file of the other variants
        env |= {**(bigquery_env or {}), "MLSTACK_WAREHOUSE": "bigquery"}
        env["MLSTACK_DATASET"] = f"bench_{workdir.name.replace('-', '_')}"
    largest = None
    if variant in (*MLSTACK_VARIANTS, BQ_EMULATOR_VARIANT):
        home = workdir / "dagster_home"
        home.mkdir()
        shutil.copy(REPO_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
        env |= {"DAGSTER_HOME": str(home), "CI": "true"}
        command = (
            [str(BIN / "mlstack"), "run"] if variant == "mlstack_run" else materialize_command()
        )
        _, wall, peak, timeline = measure(command, env)
        stages, windows = mlstack_stages(home)
        largest = max((biggest for _, _, biggest in timeline), default=0) / 2**20
        extra = {"step_peak_rss_mb": step_peaks(timeline, windows)}
    elif variant in PEERS:
        command = peer_command(variant, sources[0], sources[1], workdir)
        stdout, wall, peak, _ = measure(command, env)
        stages = json.loads(stdout.strip().splitlines()[-1])
    elif variant in SCRIPTS:
        stdout, wall, peak, _ = measure([sys.executable, "-m", SCRIPTS[variant]], env)
        stages = json.loads(stdout.strip().splitlines()[-1])
    else:
        command = [
            sys.executable,
            "-m",
            "benchmarks.limit",
            str(sources[0]),
            str(sources[1]),
            str(workdir / "limit.duckdb"),
        ]
        stdout, wall, peak, _ = measure(command, env)
        stages = json.loads(stdout.strip().splitlines()[-1])
    return {
        **(extra if variant in (*MLSTACK_VARIANTS, BQ_EMULATOR_VARIANT) else {}),
        "variant": variant,
        "size": size,
        "total_s": wall,
        "peak_rss_mb": peak / 2**20,
        "largest_process_mb": largest,
        "rows_per_s": size / wall,
        "stages_s": stages,
        "other_s": wall - sum(stages.values()),  # process start, imports, orchestration
    }


def machine() -> dict:
    cpu = (
        next(
            (
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else platform.processor()
    )
    return {
        "cpu": cpu,
        "cores": psutil.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "os": platform.platform(),
        "versions": {
            p: version(p)
            for p in (
                "dagster",
                "dagster-dbt",
                "dbt-core",
                "duckdb",
                "great-expectations",
                "airbyte",  # the baseline's PyAirbyte
            )
        },
    }


def median_runs(runs: list[dict]) -> dict:
    """Per variant and size, the run with the median total (keeps its stages consistent)."""
    by_key: dict[tuple, list[dict]] = {}
    for run in runs:
        by_key.setdefault((run["variant"], run["size"]), []).append(run)
    picked = {}
    for key, group in by_key.items():
        group.sort(key=lambda r: r["total_s"])
        picked[key] = group[len(group) // 2]
    return picked


def markdown(picked: dict, sizes: list[int]) -> str:
    head = [
        "size",
        "variant",
        "total s",
        *[f"{s} s" for s in STAGES],
        "other s",
        "peak RSS MB",
        "largest MB",
        "rows/s",
        "x baseline",
        "x limit",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for size in sizes:
        for variant in VARIANTS:
            run = picked[(variant, size)]
            baseline, limit = (picked[(other, size)]["total_s"] for other in ("baseline", "limit"))
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"{size:,}",
                        variant,
                        f"{run['total_s']:.1f}",
                        *[f"{run['stages_s'].get(s, 0.0):.2f}" for s in STAGES],
                        f"{run['other_s']:.1f}",
                        f"{run['peak_rss_mb']:.0f}",
                        f"{run['largest_process_mb'] or 0:.0f}",
                        f"{run['rows_per_s']:,.0f}",
                        f"{run['total_s'] / baseline:.2f}",
                        f"{run['total_s'] / limit:.2f}",
                    ]
                )
                + " |"
            )
        emulated = picked.get((BQ_EMULATOR_VARIANT, size))
        if emulated:
            baseline = picked[("baseline", size)]["total_s"]
            limit = picked[("limit", size)]["total_s"]
            lines.append(
                "| "
                + " | ".join(
                    [
                        f"{size:,}",
                        "mlstack on the BigQuery emulator (not BigQuery)",
                        f"{emulated['total_s']:.1f}",
                        *[f"{emulated['stages_s'].get(s, 0.0):.2f}" for s in STAGES],
                        f"{emulated['other_s']:.1f}",
                        f"{emulated['peak_rss_mb']:.0f}",
                        f"{emulated['largest_process_mb'] or 0:.0f}",
                        f"{emulated['rows_per_s']:,.0f}",
                        f"{emulated['total_s'] / baseline:.2f}",
                        f"{emulated['total_s'] / limit:.2f}",
                    ]
                )
                + " |"
            )
    return "\n".join(lines)


def _verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def pair_ratio(runs: list[dict], variant: str, size: int) -> float:
    """The median, over the repeats, of `variant`'s wall time over the limit's in that repeat."""
    by_rep = {(r["variant"], r["rep"]): r["total_s"] for r in runs if r["size"] == size}
    ratios = sorted(t / by_rep[("limit", rep)] for (v, rep), t in by_rep.items() if v == variant)
    return ratios[len(ratios) // 2]


def targets(
    picked: dict,
    sizes: list[int],
    tick: dict | None,
    previous: dict | None = None,
    runs: list[dict] | None = None,
) -> list[str]:
    """This round's targets (the raw-layer issue), each with its figures and met or MISSED;
    mlstack's ratio to each peer; and what must not get slower (the audit, the sensor
    tick), against the previous results when given."""
    lines = []
    small, large = min(sizes), max(sizes)

    def total(variant: str, size: int) -> float:
        return picked[(variant, size)]["total_s"]

    def extract(variant: str, size: int) -> float:
        return picked[(variant, size)]["stages_s"]["extract_load"]

    limit_small = total("limit", small)
    for variant in MLSTACK_VARIANTS:
        ratio = pair_ratio(runs, variant, small)
        lines.append(
            f"{variant} at {small:,} rows: {total(variant, small):.1f} s vs the limit"
            f" {limit_small:.1f} s (medians); x{ratio:.2f} the limit, median of the interleaved"
            f" pairs (target <= 4.0): {_verdict(ratio <= 4.0)}"
        )
    largest = picked[("mlstack_run", small)]["largest_process_mb"]
    lines.append(
        f"largest single process of mlstack_run at {small:,} rows: {largest:.0f} MiB"
        f" (target <= 450 MiB): {_verdict(largest <= 450)}"
    )
    floor = extract("airbyte_floor", large)
    lines.append(
        f"extract_load at {large:,} rows: {extract('mlstack', large):.1f} s vs airbyte_floor"
        f" {floor:.1f} s = x{extract('mlstack', large) / floor:.2f} (target <= 1.10):"
        f" {_verdict(extract('mlstack', large) <= 1.10 * floor)}"
    )
    for variant in MLSTACK_VARIANTS:
        ratio = total(variant, large) / total("limit", large)
        peak = picked[(variant, large)]["peak_rss_mb"]
        lines.append(
            f"{variant} at {large:,} rows: x{ratio:.2f} the limit (target <= 6):"
            f" {_verdict(ratio <= 6)}; peak RSS of the process tree {peak:.0f} MB"
            f" (target <= 800 MB): {_verdict(peak <= 800)}"
        )
    for size in sizes:
        for peer in PEERS:
            lines.append(
                f"peer {peer} at {size:,} rows: extract-load {extract(peer, size):.1f} s;"
                f" mlstack's extract-load x{extract('mlstack', size) / extract(peer, size):.2f}"
                f" of it, its full refresh x{total('mlstack', size) / extract(peer, size):.2f}"
                " (no target)"
            )
    if len(sizes) > 1:
        mid = sorted(sizes)[-2]
        before = picked[("mlstack", mid)]["step_peak_rss_mb"]
        after = picked[("mlstack", large)]["step_peak_rss_mb"]
        lines.append(
            f"peak RSS per Dagster step (process tree), {mid:,} → {large:,} rows: "
            + ", ".join(
                f"{step} {before[step]:.0f} → {after[step]:.0f} MB"
                for step in after
                if before.get(step)
            )
        )
    audit = picked[("mlstack", large)]["stages_s"]["audit"]
    limit_audit = picked[("limit", large)]["stages_s"]["audit"]
    line = f"audit at {large:,} rows: {audit:.2f} s (limit SQL checks {limit_audit:.2f} s)"
    earlier = _previous_stage(previous, large, "audit")
    if earlier is not None:
        line += f"; previous results {earlier:.2f} s: " + _verdict(audit <= earlier * 1.1)
    lines.append(line)
    if tick:
        worst = max(t["mean_ms_per_source"] for t in tick.values())
        line = f"sensor tick, nothing changed: {worst:.1f} ms per source at worst"
        if previous and previous.get("sensor_tick"):
            was = max(t["mean_ms_per_source"] for t in previous["sensor_tick"].values())
            line += f"; previous results {was:.1f} ms: " + _verdict(worst <= max(was * 1.5, 1.0))
        lines.append(line)
    return lines


def _previous_stage(previous: dict | None, size: int, stage: str) -> float | None:
    """`stage` seconds of mlstack at `size` in earlier results (their median run)."""
    if not previous or size not in previous.get("sizes", []):
        return None
    runs = [r for r in previous["runs"] if r["variant"] == "mlstack" and r["size"] == size]
    return median_runs(runs)[("mlstack", size)]["stages_s"].get(stage) if runs else None


def plot(picked: dict, sizes: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5), dpi=100)
    for variant in VARIANTS:
        axes.plot(
            sizes, [picked[(variant, s)]["total_s"] for s in sizes], marker="o", label=variant
        )
    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.set_xlabel("projects (rows per source)")
    axes.set_ylabel("wall time, s (full refresh)")
    axes.set_title("mlstack full refresh vs baseline and DuckDB limit")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


LOAD = "import time; t = time.perf_counter(); import mlstack_assets; mlstack_assets.defs; "
LOAD += "print(time.perf_counter() - t)"


def env_for_load(workdir: Path) -> dict[str, str]:
    return {**os.environ, "MLSTACK_DUCKDB_PATH": str(workdir / "load.duckdb"), "CI": "true"}


def definitions_load(env: dict[str, str], times: int) -> dict:
    """What loading the code location costs a fresh process: seconds (median of `times`)."""
    seconds, peaks = [], []
    for _ in range(max(3, min(times, 5))):
        stdout, _, peak, _ = measure([sys.executable, "-c", LOAD], env)
        seconds.append(float(stdout.strip().splitlines()[-1]))
        peaks.append(peak / 2**20)
    return {
        "seconds": seconds,
        "median_s": sorted(seconds)[len(seconds) // 2],
        "peak_rss_mb": max(peaks),
    }


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=os.environ.get("MLSTACK_BENCH_SIZES", "1000,100000"))
    parser.add_argument(
        "--repeat", type=int, default=int(os.environ.get("MLSTACK_BENCH_REPEAT", "1"))
    )
    parser.add_argument(
        "--repeat-largest",
        type=int,
        default=None,
        help="repeats at the largest size only (default: --repeat); its median is of these",
    )
    parser.add_argument(
        "--ticks",
        type=_at_least_one,
        default=20,
        help="sensor ticks to time (at least 1: checked before the long runs, not after)",
    )
    parser.add_argument(
        "--bigquery-emulator-sizes",
        default=os.environ.get("MLSTACK_BENCH_BQ_SIZES", "1000"),
        help="sizes (among --sizes) to also run on the BigQuery emulator; empty for none",
    )
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    sizes = sorted(int(s) for s in args.sizes.split(","))
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mlstack-bench-"))
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)

    emulated = {int(s) for s in args.bigquery_emulator_sizes.split(",") if s.strip()} & set(sizes)
    ensure_installed()  # the peers' virtualenvs
    runs = []
    with contextlib.ExitStack() as stack:
        bigquery_env = None
        if emulated:
            from tests.support.bigquery_emulator import running_emulator

            bigquery_env = stack.enter_context(running_emulator(workdir / "bqemulator")).environment
        for size in sizes:
            sources = generate(workdir / f"sources-{size}", size)
            repeats = args.repeat_largest if size == max(sizes) and args.repeat_largest else None
            for rep in range(repeats or args.repeat):
                shift = rep % len(VARIANTS)
                order = VARIANTS[shift:] + VARIANTS[:shift]  # interleave the order too
                if size in emulated:
                    order += (BQ_EMULATOR_VARIANT,)
                for variant in order:
                    run = run_variant(
                        variant, size, sources, workdir / f"{variant}-{size}-{rep}", bigquery_env
                    )
                    runs.append({**run, "rep": rep})
                    print(
                        f"{size:>9,} {variant:<12} {run['total_s']:7.1f} s"
                        f"  {run['peak_rss_mb']:6.0f} MB",
                        flush=True,
                    )
    tick_out, _, _, _ = measure(
        [
            sys.executable,
            "-m",
            "benchmarks.sensor_tick",
            str(workdir / "tick"),
            str(max(sizes)),
            str(args.ticks),
        ],
        {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"},
    )
    tick = json.loads(tick_out.strip().splitlines()[-1])

    picked = median_runs(runs)
    table = markdown(picked, sizes)
    latest = results / "latest.json"
    previous = json.loads(latest.read_text()) if latest.exists() else None
    load = definitions_load(env_for_load(workdir), args.ticks)
    verdicts = targets(picked, sizes, tick, previous, runs)
    verdicts.append(
        f"loading the definitions (a fresh process: import and build, no run): median"
        f" {load['median_s']:.2f} s of {len(load['seconds'])}, peak {load['peak_rss_mb']:.0f} MB"
        " (reported, no target)"
    )
    report = {
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine(),
        "sizes": sizes,
        "repeat": args.repeat,
        "repeat_largest": args.repeat_largest or args.repeat,
        "runs": runs,
        "sensor_tick": tick,
        "definitions_load": load,
        "targets": verdicts,
        "table": table,
    }
    stamp = report["when"].replace(":", "").replace("-", "")
    (results / f"bench-{stamp}.json").write_text(json.dumps(report, indent=2))
    (results / "latest.json").write_text(json.dumps(report, indent=2))
    plot(picked, sizes, results / "time_vs_size.png")
    print()
    print(table)
    print()
    print(
        "sensor tick, nothing changed: "
        + ", ".join(
            f"{k} {v['mean_ms_per_source']:.1f} ms/source (mean of {args.ticks})"
            for k, v in tick.items()
        )
    )
    print(*verdicts, sep="\n")
    print(
        f"\nmachine: {report['machine']['cpu']}, {report['machine']['cores']} cores,"
        f" {report['machine']['memory_gb']} GB; results in {results}"
    )
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
