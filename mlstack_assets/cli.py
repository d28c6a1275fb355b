"""`mlstack run`: materialize every asset with plain Dagster, then print what happened.

The run itself is `dagster asset materialize --select '*' -m mlstack_assets`, the same
command a user would type; this wrapper only prepares `DAGSTER_HOME` and reads the run's
events back from the instance to print rows per table and checks passed/failed.
"""

import argparse
import os
import shutil
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from mlstack_assets.settings import REPO_ROOT, load_settings


def ensure_dagster_home() -> Path:
    """Use `$DAGSTER_HOME`, or `.mlstack/dagster_home`; give it the repo's dagster.yaml."""
    home = Path(os.environ.get("DAGSTER_HOME") or load_settings().home / "dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(REPO_ROOT / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home.resolve())
    return home


@dataclass
class AssetSummary:
    rows: int | None = None
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)


@dataclass
class RunSummary:
    run_id: str
    status: str
    assets: dict[str, AssetSummary]
    failures: list[str]

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS" and not any(a.failed for a in self.assets.values())


def summarize_run(instance, run_id: str) -> RunSummary:
    """Rows per materialized asset, check outcomes and step failures, from the event log."""
    from dagster import DagsterEventType

    run = instance.get_run_by_id(run_id)
    assets: dict[str, AssetSummary] = defaultdict(AssetSummary)
    failures: list[str] = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            rows = materialization.metadata.get("dagster/row_count")
            summary = assets[materialization.asset_key.to_user_string()]
            summary.rows = rows.value if rows is not None else summary.rows
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            summary = assets[evaluation.asset_key.to_user_string()]
            if evaluation.passed:
                summary.passed.append(evaluation.check_name)
            elif evaluation.severity.value == "WARN":
                summary.warned.append(evaluation.check_name)
            else:
                summary.failed.append(evaluation.check_name)
        elif event.event_type == DagsterEventType.STEP_FAILURE:
            error = event.step_failure_data.error
            while (
                error is not None
                and error.cause is not None
                and "Error occurred while" in error.message
            ):
                error = error.cause  # unwrap Dagster's "Error occurred while executing op" wrapper
            message = error.message.strip() if error else "failed"
            failures.append(f"{event.step_key}: {message}")
    return RunSummary(
        run_id=run_id, status=run.status.value, assets=dict(assets), failures=failures
    )


def format_summary(summary: RunSummary, elapsed: float) -> str:
    lines = [f"mlstack run {summary.run_id[:8]}: {summary.status} in {elapsed:.1f} s", ""]
    lines.append(f"{'asset':<28}{'rows':>8}  checks")
    for key in sorted(summary.assets):
        asset = summary.assets[key]
        checks = f"{len(asset.passed)} passed"
        if asset.warned:
            checks += f", {len(asset.warned)} warned ({', '.join(asset.warned)})"
        if asset.failed:
            checks += f", {len(asset.failed)} FAILED ({', '.join(asset.failed)})"
        rows = "" if asset.rows is None else str(asset.rows)
        lines.append(f"{key:<28}{rows:>8}  {checks}")
    if summary.failures:
        lines += ["", "failed steps:", *(f"  {failure}" for failure in summary.failures)]
    return "\n".join(lines)


def materialize_command(selection: str = "*") -> list[str]:
    """The plain Dagster command that materializes `selection` (what `make run` runs)."""
    dagster = Path(sys.executable).parent / "dagster"
    return [str(dagster), "asset", "materialize", "--select", selection, "-m", "mlstack_assets"]


def _process_alive_since(pid: int, since: float) -> bool:
    """Is `pid` running, and the same process that was running at `since` (epoch s)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # Linux: a pid reused by a process started later is not the same process
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK") <= since + 1
    except (OSError, ValueError, IndexError, StopIteration):
        return True


def fail_orphaned_runs(instance) -> list[str]:
    """Mark failed the runs left STARTED/STARTING by a process that is gone (SIGKILL, OOM).

    Such a run stays "in progress" in the instance for ever. Only for an instance kept on
    this machine (SQLite storage): each event records the pid that wrote it, and when no
    process that wrote events for the run still runs, nothing will ever finish it. Runs on
    a shared instance (Postgres, Kubernetes) are left to Dagster's run monitoring.
    Returns one line per run marked failed.
    """
    from dagster import DagsterRunStatus, RunsFilter
    from dagster._core.storage.runs.sqlite import SqliteRunStorage

    storage = getattr(instance.run_storage, "_storage", instance.run_storage)
    if not isinstance(storage, SqliteRunStorage):
        return []
    lines = []
    in_progress = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING]
    for record in instance.get_run_records(filters=RunsFilter(statuses=in_progress)):
        run = record.dagster_run
        logs = instance.all_logs(run.run_id)
        pids = {e.dagster_event.pid for e in logs if e.dagster_event and e.dagster_event.pid}
        since = (record.start_time or record.create_timestamp.timestamp()) if logs else 0
        if not pids or any(_process_alive_since(pid, since) for pid in pids):
            continue
        message = (
            f"marked failed by mlstack run: its process{'es' if len(pids) > 1 else ''}"
            f" ({', '.join(map(str, sorted(pids)))}) ended without finishing it (killed?)"
        )
        instance.report_run_failed(run, message)
        lines.append(f"run {run.run_id[:8]} ({run.status.value}): {message}")
    return lines


def run(_: argparse.Namespace) -> int:
    ensure_dagster_home()
    from dagster import DagsterInstance, RunsFilter

    with DagsterInstance.get() as instance:
        for line in fail_orphaned_runs(instance):
            print(line)
    started = time.time()
    returncode = subprocess.call(materialize_command(), cwd=REPO_ROOT)
    elapsed = time.time() - started
    with DagsterInstance.get() as instance:
        records = instance.get_run_records(
            filters=RunsFilter(created_after=_utc(started - 1)), limit=1
        )
        if not records:
            print("mlstack run: no run was created (see the output above)", file=sys.stderr)
            return returncode or 1
        summary = summarize_run(instance, records[0].dagster_run.run_id)
    settings = load_settings()
    print()
    print(format_summary(summary, elapsed))
    where = settings.duckdb_path if settings.warehouse == "duckdb" else settings.bigquery_project
    print(f"\nwarehouse: {settings.warehouse} {where}, dataset {settings.dataset}")
    return 0 if returncode == 0 and summary.ok else 1


def airbyte_setup(_: argparse.Namespace) -> int:
    from mlstack_assets.ingestion.airbyte_setup import AirbyteSetup, AirbyteSetupError

    settings = load_settings()
    if settings.airbyte == "embedded":
        print("set MLSTACK_AIRBYTE=server (Airbyte OSS) or cloud first", file=sys.stderr)
        return 2
    try:
        AirbyteSetup(settings).run()
    except AirbyteSetupError as error:
        print(f"airbyte-setup: {error}", file=sys.stderr)
        return 1
    return 0


def _utc(timestamp: float):
    from datetime import datetime, timezone

    return datetime.fromtimestamp(timestamp, tz=timezone.utc)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="mlstack", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="materialize every asset and print a summary").set_defaults(
        func=run
    )
    commands.add_parser(
        "airbyte-setup", help="create or update the Airbyte sources, destination and connections"
    ).set_defaults(func=airbyte_setup)
    args = parser.parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
