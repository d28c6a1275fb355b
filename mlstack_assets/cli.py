"""`mlstack run`: materialize every asset with plain Dagster, show its progress, summarize it.

The run itself is `dg launch --assets '*'`, the command a Dagster user would type. Its
whole output (Dagster's DEBUG events, the connector's lines) goes to a log file under
`.mlstack/logs/`; what the terminal shows is read from the run's events in the Dagster
instance while it runs: one line per step as it starts and as it finishes (a live
display on a terminal), then the rows and checks per table, and on failure the failed
step, its checks and its message (the traceback with `--verbose`).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, TextIO

from mlstack_assets.runs import (
    AssetSummary,
    RunProgress,
    RunSummary,
    StepFailure,
    StepProgress,
    summarize_run,
)
from mlstack_assets.settings import REPO_ROOT, load_settings

__all__ = [
    "AssetSummary",
    "RunProgress",
    "RunSummary",
    "StepFailure",
    "StepProgress",
    "format_summary",
    "summarize_run",
]

POLL_SECONDS = 0.5
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
STOP_GRACE_SECONDS = 20.0
# runs started by the daemon in the same instance are not ours
AUTOMATION_TAG_PREFIXES = ("dagster/sensor_name", "dagster/schedule_name", "dagster/backfill")


def ensure_dagster_home() -> Path:
    """Use `$DAGSTER_HOME`, or `.mlstack/dagster_home`; give it the repo's instance configuration
    (deploy/dagster.yaml)."""
    home = load_settings().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(REPO_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)  # for Dagster, here and in `dg`
    return home


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def launch_command(selection: str = "*", allow_row_drop: bool = False) -> list[str]:
    """The `dg` command that materializes `selection` (what `make run` runs); with
    `allow_row_drop`, the run config that lets the volume guard pass a deliberate shrink."""
    command = [_bin("dg"), "launch", "--assets", selection]
    if allow_row_drop:
        allowed = {"config": {"allow_row_drop": True}}
        ops = {name: allowed for name in ("projects", "tags", "dbt_models")}
        command += ["--config-json", json.dumps({"ops": ops})]
    return command


def materialize_command(selection: str = "*") -> list[str]:
    """The plain Dagster command for the same (still supported; Dagster calls it superseded)."""
    return [_bin("dagster"), "asset", "materialize", "--select", selection, "-m", "mlstack_assets"]


def dg_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for `dg`: this virtualenv marked active, as `dg` expects of a project."""
    # the whole environment passes through to `dg` (its children load Settings themselves)
    env = dict(os.environ if environ is None else environ)
    env["VIRTUAL_ENV"] = str(Path(sys.prefix))
    return env


# ----------------------------------------------------------------------------- progress


SYMBOLS = {
    "utf": {"start": "▸", "ok": "✓", "failed": "✗", "skipped": "·"},
    "ascii": {"start": "->", "ok": "ok", "failed": "FAILED", "skipped": "--"},
}


def symbols_for(stream: TextIO) -> dict[str, str]:
    encoding = (getattr(stream, "encoding", None) or "").lower().replace("-", "")
    return SYMBOLS["utf" if encoding.startswith("utf") else "ascii"]


def step_line(step: StepProgress, symbols: dict[str, str], started: bool = False) -> str:
    """The line for a step that started, or that finished (with rows, checks, seconds)."""
    if started:
        return f"  {symbols['start']} {step.label()}"
    mark = symbols[step.status]
    detail = step.outcome()
    seconds = f"{step.seconds:.1f} s"
    return f"  {mark} {step.label():<28} {detail + ', ' if detail else ''}{seconds}"


def live_display_wanted(stream: TextIO, environ: dict[str, str] | os._Environ) -> bool:
    """A live display on a terminal; plain lines in a pipe, a file or CI (`CI` set)."""
    if environ.get("CI", "").strip().lower() not in ("", "0", "false"):
        return False
    if environ.get("TERM", "") == "dumb":
        return False
    return stream.isatty()


class PlainDisplay:
    """One line per step as it starts and as it finishes: for logs, pipes and CI."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.symbols = symbols_for(stream)

    def __enter__(self) -> PlainDisplay:
        return self

    def __exit__(self, *_: object) -> None:
        self.stream.flush()

    def print(self, line: str = "") -> None:
        print(line, file=self.stream, flush=True)

    def update(self, changes: list[tuple[str, StepProgress]]) -> None:
        for change, step in changes:
            if change == "note":
                self.print(f"    {step.message}")
            else:
                self.print(step_line(step, self.symbols, started=change == "start"))

    def tick(self, running: list[StepProgress], waiting: str) -> None:
        pass


class LiveDisplay(PlainDisplay):
    """On a terminal: finished steps stay as lines; running ones spin with their time."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        from rich.console import Console
        from rich.live import Live

        self.console = Console(file=stream, highlight=False)
        self.live = Live(console=self.console, refresh_per_second=4, transient=True)

    def __enter__(self) -> LiveDisplay:
        self.live.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.live.stop()

    def print(self, line: str = "") -> None:
        self.live.console.print(line, markup=False, highlight=False)

    def update(self, changes: list[tuple[str, StepProgress]]) -> None:
        for change, step in changes:
            if change == "note":
                self.print(f"    {step.message}")
            elif change == "finish":  # a running step is shown by the spinner below
                self.print(step_line(step, self.symbols))

    def tick(self, running: list[StepProgress], waiting: str) -> None:
        from rich.spinner import Spinner
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        rows = [(step.label(), f"{step.seconds:.0f} s") for step in running] or [(waiting, "")]
        for label, seconds in rows:
            grid.add_row(Spinner("dots"), label, seconds)
        self.live.update(grid)


# ------------------------------------------------------------------------------ summary


def format_summary(summary: RunSummary, elapsed: float, verbose: bool = False) -> str:
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
        if asset.view:  # no rows of its own; checks only if it has some
            rows = "view"
            checks = checks if asset.passed or asset.warned or asset.failed else ""
        lines.append(f"{key:<28}{rows:>8}  {checks}".rstrip())
    if summary.step_failures:
        lines += ["", "failed steps:"]
        for failure in summary.step_failures:
            first, *rest = failure.message.splitlines() or [""]
            lines.append(f"  {failure.step}: {first}")
            lines += [f"    {line}" for line in rest]
            if verbose and failure.traceback:
                lines += [f"    {line}" for line in failure.traceback.rstrip().splitlines()]
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is below it (shorter to read)."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def log_path(home: Path) -> Path:
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return logs / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"


def find_run(instance: Any, created_after: float) -> str | None:
    """The run `dg launch` created: the first one since it started, not the daemon's."""
    from dagster import RunsFilter

    records = instance.get_run_records(
        filters=RunsFilter(created_after=_utc(created_after)), ascending=True, limit=20
    )
    for record in records:
        tags = record.dagster_run.tags
        if not any(tag.startswith(AUTOMATION_TAG_PREFIXES) for tag in tags):
            return record.dagster_run.run_id
    return None


def follow(process: subprocess.Popen, instance: Any, started: float, display: Any) -> Any:
    """Show the run's steps until the process exits; return its `RunProgress` (or None)."""
    progress: RunProgress | None = None
    while True:
        exited = process.poll() is not None
        if progress is None:
            run_id = find_run(instance, started - 1)
            if run_id is not None:
                progress = RunProgress(instance, run_id)
                display.print(f"run {run_id[:8]} started")
        if progress is not None:
            display.update(progress.poll())
        running = [s for s in progress.steps.values() if s.status == "running"] if progress else []
        display.tick(running, "loading definitions" if progress is None else "starting")
        if exited:
            return progress
        time.sleep(POLL_SECONDS)


def tail(path: Path, lines: int) -> list[str]:
    with path.open(errors="replace") as handle:
        return handle.read().splitlines()[-lines:]


def run(args: argparse.Namespace) -> int:
    ensure_dagster_home()
    from dagster import DagsterInstance

    from mlstack_assets.orphans import repair

    with DagsterInstance.get() as instance:
        for line in repair(instance):
            print(line)
    settings = load_settings()
    log = log_path(settings.home)
    out = sys.stdout
    # CI and TERM are the terminal's conventions, not mlstack's configuration
    live = live_display_wanted(out, os.environ)
    selection = getattr(args, "select", None) or "*"
    allow = getattr(args, "allow_row_drop", False)
    shown = f"dg launch --assets '{selection}'" + (" (allow_row_drop)" if allow else "")
    print(f"mlstack run: {shown}  (full log: {_shown(log)})", flush=True)
    started = time.time()
    with DagsterInstance.get() as instance:
        with log.open("ab") as log_file:
            # a session of its own: `dg`, the run and what it started are stopped together
            process = subprocess.Popen(
                launch_command(selection, allow),
                cwd=REPO_ROOT,
                env=dg_environment(),
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            display = LiveDisplay(out) if live else PlainDisplay(out)
            try:
                with display, stopped_by_signals():
                    progress = follow(process, instance, started, display)
            except Stopped as signal_received:
                run_id = find_run(instance, started - 1)
                for line in stop_run(process, instance, run_id):
                    print(line, file=out, flush=True)
                print(f"mlstack run: stopped by {signal_received.name}", file=out, flush=True)
                return 128 + signal_received.number
            except BaseException:
                stop_run(process, instance, find_run(instance, started - 1))
                raise
        returncode = process.returncode
        elapsed = time.time() - started
        if progress is None:
            print(f"\nmlstack run: Dagster started no run (exit code {returncode}).", file=out)
            shown = tail(log, 40 if args.verbose else 3)
            print("\n".join(f"  {line}" for line in shown), file=out)
            print(f"\nfull log: {_shown(log)}", file=out)
            return returncode or 1
        skipped = progress.not_run()
        if skipped:
            symbol = symbols_for(out)["skipped"]
            print(f"  {symbol} not run (upstream failed): {', '.join(skipped)}", file=out)
        summary = summarize_run(instance, progress.run_id)
    print("\n" + format_summary(summary, elapsed, verbose=args.verbose), file=out)
    where = f"{settings.warehouse} {settings.warehouse_location}, dataset {settings.dataset}"
    print(f"\nwarehouse: {where}", file=out)
    print(f"full log:  {_shown(log)}", file=out)
    return 0 if returncode == 0 and summary.ok else 1


class Stopped(Exception):
    """`mlstack run` received SIGINT or SIGTERM."""

    def __init__(self, number: int):
        super().__init__(signal.Signals(number).name)
        self.number = number
        self.name = signal.Signals(number).name


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM raise `Stopped` in the body, which then stops the run."""

    def handler(number: int, _frame: Any) -> None:
        raise Stopped(number)

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


def stop_run(process: subprocess.Popen, instance: Any, run_id: str | None) -> list[str]:
    """Stop `dg launch` and everything it started; mark its run canceled and free its pool
    slots if it had not ended. One line per thing done."""
    lines = []
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)  # Dagster stops a run it is told to stop
        try:
            process.wait(timeout=STOP_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            lines.append(
                f"mlstack run: `dg launch` did not stop in {STOP_GRACE_SECONDS:g} s; killed"
            )
    with suppress(ProcessLookupError):  # what it started and left behind, if anything
        os.killpg(process.pid, signal.SIGKILL)
    if run_id is None:
        return lines
    from dagster._core.storage.dagster_run import FINISHED_STATUSES

    run = instance.get_run_by_id(run_id)
    if run is not None and run.status not in FINISHED_STATUSES:
        instance.report_run_canceled(run, message="stopped by mlstack run (SIGINT or SIGTERM)")
        lines.append(f"run {run_id[:8]}: marked canceled")
    instance.event_log_storage.free_concurrency_slots_for_run(run_id)
    return lines


def versions(args: argparse.Namespace) -> int:
    """`mlstack versions <table>`: the versions of a published table, newest first."""
    from mlstack_assets.lake import Lake
    from mlstack_assets.lake.versions import VERSIONED_TABLES, current_version_id
    from mlstack_assets.lake.versions import versions as versions_of

    if args.table not in VERSIONED_TABLES:
        print(f"mlstack versions: {args.table!r} has no versions; the versioned tables are"
              f" {', '.join(VERSIONED_TABLES)}", file=sys.stderr)  # fmt: skip
        return 2
    lake = Lake(load_settings().lake)
    listed = versions_of(lake, args.table)
    current = current_version_id(lake, args.table)
    if args.json:
        documents = [{**v.manifest, "current": v.id == current} for v in listed]
        print(json.dumps(documents, indent=2, sort_keys=True))
        return 0
    if not listed:
        print(f"{args.table}: no versions in {lake.root} yet")
        return 0
    print(f"{'':2}{'version':<26}{'created (UTC)':<21}{'run':<10}{'rows':>9}  checks  inputs")
    for version in listed:
        mark = "*" if version.id == current else " "
        created = version.manifest.get("created_at", "")[:19].replace("T", " ")
        inputs = ", ".join(f"{t} {v}" for t, v in sorted(version.inputs.items())) or "-"
        checks = len(version.manifest.get("checks_passed", []))
        run = str(version.manifest.get("run_id", ""))[:8]
        row = f"{mark:2}{version.id:<26}{created:<21}{run:<10}{version.rows:>9}  {checks:>6}"
        print(f"{row}  {inputs}")
    print(f"\n* the version {settings_table(args.table)} holds now (current)")
    return 0


def settings_table(table: str) -> str:
    settings = load_settings()
    return f"{settings.dataset}.{table}"


def rollback(args: argparse.Namespace) -> int:
    """`mlstack rollback <table> --to <version>`: restore, record, and optionally rebuild
    what depends on it."""
    ensure_dagster_home()
    from dagster import DagsterInstance

    from mlstack_assets.lake.restore import restore
    from mlstack_assets.lake.versions import VersionError
    from mlstack_assets.warehouse.deployment import warehouse_deployment

    settings = load_settings()
    warehouse = warehouse_deployment(settings).warehouse
    try:
        restored = restore(args.table, args.to, settings.lake, warehouse)
    except VersionError as error:
        print(f"mlstack rollback: {error}", file=sys.stderr)
        return 1
    with DagsterInstance.get() as instance:
        instance.report_runless_asset_event(restored.materialization())
    downstream = downstream_of(args.table)
    print(
        f"{args.table}: restored version {restored.version.id} ({restored.version.rows} rows;"
        f" it held {restored.previous or 'no version'}); recorded in the Dagster instance"
    )
    if not args.with_downstream:
        if downstream:
            print(f"stale now (rebuild with --with-downstream): {', '.join(downstream)}")
        return 0
    args.select = ",".join(downstream)
    args.allow_row_drop = False
    return run(args)


def downstream_of(table: str) -> list[str]:
    """The assets that depend on `table`, to rebuild after it was restored."""
    from dagster import AssetKey, AssetSelection

    from mlstack_assets.definitions import build_definitions

    graph = build_definitions().resolve_asset_graph()
    keys = AssetSelection.assets(AssetKey(table)).downstream().resolve(graph)
    return sorted(key.to_user_string() for key in keys if key != AssetKey(table))


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
    run_parser = commands.add_parser("run", help="materialize every asset and print a summary")
    run_parser.add_argument(
        "-v", "--verbose", action="store_true", help="show the tracebacks of failed steps"
    )
    run_parser.add_argument(
        "--select", default="*", help="the assets to materialize (a Dagster selection; default *)"
    )
    run_parser.add_argument(
        "--allow-row-drop",
        action="store_true",
        help="publish raw tables and labeled_projects even if they lost more rows than"
        " MLSTACK_MAX_ROW_DROP_PERCENT (a deliberate shrink; recorded)",
    )
    run_parser.set_defaults(func=run)
    versions_parser = commands.add_parser(
        "versions", help="list the versions of a published table, newest first"
    )
    versions_parser.add_argument("table")
    versions_parser.add_argument("--json", action="store_true", help="as JSON, for scripts")
    versions_parser.set_defaults(func=versions)
    rollback_parser = commands.add_parser(
        "rollback", help="restore a published table to one of its versions"
    )
    rollback_parser.add_argument("table")
    rollback_parser.add_argument("--to", required=True, help="the version id (or a prefix)")
    rollback_parser.add_argument(
        "--with-downstream",
        action="store_true",
        help="then rebuild what depends on it, through the graph and all its checks",
    )
    rollback_parser.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)
    rollback_parser.set_defaults(func=rollback)
    commands.add_parser(
        "airbyte-setup", help="create or update the Airbyte sources, destination and connections"
    ).set_defaults(func=airbyte_setup)
    args = parser.parse_args(argv)
    from mlstack_assets.settings import SettingsError

    try:
        load_settings()  # a bad setting: one line, before anything starts
    except SettingsError as error:
        print(f"mlstack: {error}", file=sys.stderr)
        sys.exit(2)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
