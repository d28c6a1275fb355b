"""`mlstack run`, `versions`, `rollback`, `diff`, `airbyte-setup`.

`mlstack run` materializes the graph in this process, as a run in the Dagster instance, and
shows it from the run's events (`runs.RunProgress`): a line per step, then rows and checks per
table, failed steps' messages. What Dagster, dbt and the connector print goes to a log file.
"""

import argparse
import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from mlstack_assets.runs import RunProgress, RunSummary, StepProgress, summarize_run
from mlstack_assets.settings import REPO_ROOT, SettingsError, load_settings

POLL_SECONDS = 0.25
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def ensure_dagster_home() -> Path:
    """`$DAGSTER_HOME`, or `.mlstack/dagster_home`, with the repo's instance configuration."""
    home = load_settings().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(REPO_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def run_config(allow_row_drop: bool) -> dict[str, Any]:
    """The run config that lets the volume guard pass a deliberate shrink."""
    allowed = {"config": {"allow_row_drop": True}}
    return {"ops": dict.fromkeys(("airbyte_sync", "dbt_models"), allowed)} if allow_row_drop else {}


def launch_command(selection: str = "*", allow_row_drop: bool = False) -> list[str]:
    """The `dg` command that does what `mlstack run` does, in a process of its own."""
    command = [_bin("dg"), "launch", "--assets", selection]
    if allow_row_drop:
        command += ["--config-json", json.dumps(run_config(True))]
    return command


def materialize_command(selection: str = "*") -> list[str]:
    """The plain Dagster command for the same."""
    return [_bin("dagster"), "asset", "materialize", "--select", selection, "-m", "mlstack_assets"]


def dg_environment(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for `dg`: this virtualenv marked active, as `dg` expects."""
    env = dict(os.environ if environ is None else environ)
    env["VIRTUAL_ENV"] = str(Path(sys.prefix))
    return env


# ------------------------------------------------------------------------------ display


def symbols_for(stream: TextIO) -> dict[str, str]:
    """Step marks: Unicode where the stream's encoding has them, ASCII elsewhere."""
    if (getattr(stream, "encoding", None) or "").lower().replace("-", "").startswith("utf"):
        return {"start": "▸", "ok": "✓", "failed": "✗", "skipped": "·"}
    return {"start": "->", "ok": "ok", "failed": "FAILED", "skipped": "--"}


def live_display_wanted(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """A live display on a terminal; plain lines in a pipe, a file or CI (`CI` set)."""
    ci = environ.get("CI", "").strip().lower() not in ("", "0", "false")
    return not ci and environ.get("TERM", "") != "dumb" and stream.isatty()


class PlainDisplay:
    """One line per step as it starts and as it finishes: for logs, pipes and CI."""

    def __init__(self, stream: TextIO) -> None:
        self.stream, self.symbols = stream, symbols_for(stream)

    def __enter__(self) -> "PlainDisplay":
        return self

    def __exit__(self, *_: object) -> None:
        self.stream.flush()

    def print(self, line: str = "") -> None:
        print(line, file=self.stream, flush=True)

    def update(self, changes: list[tuple[str, StepProgress]]) -> None:
        for change, step in changes:
            if change == "note":
                self.print(f"    {step.message}")
            elif change == "start":
                self.print(f"  {self.symbols['start']} {step.key}")
            else:  # finished: rows, checks, seconds
                detail = f"{outcome}, " if (outcome := step.outcome()) else ""
                mark = self.symbols[step.status]
                self.print(f"  {mark} {step.key:<28} {detail}{step.seconds:.1f} s")

    def tick(self, running: list[StepProgress], waiting: str) -> None:
        pass


class LiveDisplay(PlainDisplay):
    """On a terminal: finished steps stay as lines; running ones spin with their time."""

    def __init__(self, stream: TextIO) -> None:
        from rich.console import Console
        from rich.live import Live

        super().__init__(stream)
        console = Console(file=stream, highlight=False)
        self.view = Live(console=console, refresh_per_second=4, transient=True)

    def __enter__(self) -> "LiveDisplay":
        self.view.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.view.stop()

    def print(self, line: str = "") -> None:
        self.view.console.print(line, markup=False, highlight=False)

    def update(self, changes: list[tuple[str, StepProgress]]) -> None:
        super().update([change for change in changes if change[0] != "start"])  # the spinner

    def tick(self, running: list[StepProgress], waiting: str) -> None:
        from rich.spinner import Spinner
        from rich.table import Table

        grid = Table.grid(padding=(0, 1))
        for label, seconds in [(s.key, f"{s.seconds:.0f} s") for s in running] or [(waiting, "")]:
            grid.add_row(Spinner("dots"), label, seconds)
        self.view.update(grid)


def format_summary(summary: RunSummary, elapsed: float, verbose: bool = False) -> str:
    """The run's status, rows and checks per asset, and its failed steps' messages."""
    lines = [f"mlstack run {summary.run_id[:8]}: {summary.status} in {elapsed:.1f} s", ""]
    lines.append(f"{'asset':<28}{'rows':>8}  checks")
    for key, asset in sorted(summary.assets.items()):
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
        rest += failure.traceback.rstrip().splitlines() if verbose else []
        lines += [f"    {line}" for line in rest]
    return "\n".join(lines)


# -------------------------------------------------------------------------------- run


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it is below it (shorter to read)."""
    path, here = path.resolve(), Path.cwd().resolve()
    return str(path.relative_to(here) if path.is_relative_to(here) else path)


class Stopped(Exception):
    """`mlstack run` received SIGINT or SIGTERM (its one argument, a `signal.Signals`)."""


@contextmanager
def stopped_by_signals() -> Iterator[None]:
    """SIGINT (Ctrl-C) and SIGTERM raise `Stopped` in the body."""

    def handler(number: int, _frame: Any) -> None:
        raise Stopped(signal.Signals(number))

    previous = {number: signal.signal(number, handler) for number in STOP_SIGNALS}
    try:
        yield
    finally:
        for number, old in previous.items():
            signal.signal(number, old)


@contextmanager
def output_to(log: Path) -> Iterator[TextIO]:
    """Send everything this process and its children print to `log`; yield the terminal's
    stdout, for what mlstack itself shows."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    encoding = sys.stdout.encoding or "utf-8"
    terminal = os.fdopen(os.dup(saved[0]), "w", encoding=encoding, buffering=1)
    with log.open("ab") as file:
        os.dup2(file.fileno(), 1)
        os.dup2(file.fileno(), 2)
    try:
        yield terminal
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        terminal.flush()


def execute(run_id: str, selection: str, allow_row_drop: bool, outcome: dict[str, Any]) -> None:
    """Materialize `selection` (a Dagster selection) as run `run_id`, on the instance."""
    try:
        from dagster import AssetSelection, DagsterInstance

        from mlstack_assets.definitions import build_definitions

        defs = build_definitions()
        # a Dagster selection, or a comma list of them (as `dagster asset materialize` takes)
        parts = [part.strip() for part in selection.split(",")]
        keys = list(AssetSelection.from_coercible(parts).resolve(defs.resolve_asset_graph()))
        with DagsterInstance.get() as instance:
            result = defs.resolve_implicit_global_asset_job_def().execute_in_process(
                instance=instance,
                run_id=run_id,
                asset_selection=keys,
                run_config=run_config(allow_row_drop),
                raise_on_error=False,
            )
        outcome["success"] = result.success
    except BaseException as error:  # a bad selection, definitions that do not load
        traceback.print_exc()  # into the log file
        outcome["error"] = f"{type(error).__name__}: {error}"


def follow(worker: threading.Thread, instance: Any, run_id: str, display: Any) -> RunProgress:
    """Show the run's steps until the worker is done."""
    progress, started = RunProgress(instance, run_id), False
    while True:
        done = not worker.is_alive()
        if not started and instance.get_run_by_id(run_id) is not None:
            display.print(f"run {run_id[:8]} started")
            started = True
        if started:
            display.update(progress.poll())
        running = [s for s in progress.steps.values() if s.status == "running"]
        display.tick(running, "starting" if started else "loading definitions")
        if done:
            return progress
        time.sleep(POLL_SECONDS)


def run(args: argparse.Namespace) -> int:
    """`mlstack run`: materialize `--select` here, showing its steps, then a summary."""
    ensure_dagster_home()
    from dagster import DagsterInstance

    from mlstack_assets.processes import fail_orphaned_runs

    settings = load_settings()
    log = settings.home / "logs" / f"run-{time.strftime('%Y%m%d-%H%M%S')}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    selection, allow = args.select or "*", args.allow_row_drop
    shown = f"materialize --select '{selection}'" + (" (allow_row_drop)" if allow else "")
    print(f"mlstack run: {shown}  (full log: {_shown(log)})", flush=True)
    run_id, outcome, started = str(uuid.uuid4()), {}, time.time()
    with DagsterInstance.get() as instance, output_to(log) as out:
        for line in fail_orphaned_runs(instance):
            print(line, file=out, flush=True)
        worker = threading.Thread(
            target=execute, args=(run_id, selection, allow, outcome), daemon=True
        )
        display = LiveDisplay(out) if live_display_wanted(out, os.environ) else PlainDisplay(out)
        try:
            with display, stopped_by_signals():
                worker.start()
                progress = follow(worker, instance, run_id, display)
        except Stopped as stop:
            name, run = stop.args[0].name, instance.get_run_by_id(run_id)
            if run is not None and not run.is_finished:
                instance.report_run_canceled(run, message=f"stopped by mlstack run ({name})")
                print(f"run {run_id[:8]}: marked canceled", file=out)
            print(f"mlstack run: stopped by {name}", file=out, flush=True)
            # what the run started (connectors, dbt) dies with this process
            os._exit(128 + stop.args[0])
        elapsed = time.time() - started
        if instance.get_run_by_id(run_id) is None:
            print(f"\nmlstack run: Dagster started no run: {outcome.get('error')}", file=out)
            print(f"\nfull log: {_shown(log)}", file=out)
            return 1
        if skipped := progress.not_run():
            mark = display.symbols["skipped"]
            print(f"  {mark} not run (upstream failed): {', '.join(skipped)}", file=out)
        summary = summarize_run(instance, run_id)
        print("\n" + format_summary(summary, elapsed, verbose=args.verbose), file=out)
        where = f"{settings.warehouse} {settings.warehouse_location}, dataset {settings.dataset}"
        print(f"\nwarehouse: {where}\nfull log:  {_shown(log)}", file=out, flush=True)
        return 0 if outcome.get("success") and summary.ok else 1


# --------------------------------------------------------------------- versions, rollback


def versions(args: argparse.Namespace) -> int:
    """`mlstack versions <table>`: the versions of a published table, newest first."""
    from mlstack_assets.lake.versions import VERSIONED_TABLES, current_version_id, warehouse_lake
    from mlstack_assets.lake.versions import versions as versions_of

    if args.table not in VERSIONED_TABLES:
        print(
            f"mlstack versions: {args.table!r} has no versions; the versioned tables are"
            f" {', '.join(VERSIONED_TABLES)}",
            file=sys.stderr,
        )
        return 1
    settings = load_settings()
    lake = warehouse_lake(settings)
    listed, current = versions_of(lake, args.table), current_version_id(lake, args.table)
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
        run_id = str(version.manifest.get("run_id", ""))[:8]
        row = f"{mark:2}{version.id:<26}{created:<21}{run_id:<10}{version.rows:>9}  {checks:>6}"
        print(f"{row}  {inputs}")
    print(f"\n* the version {settings.dataset}.{args.table} holds now (current)")
    return 0


def rollback(args: argparse.Namespace) -> int:
    """`mlstack rollback <table> --to <version>`: restore, record, and optionally rebuild
    what depends on it."""
    ensure_dagster_home()
    from dagster import AssetKey, AssetSelection, DagsterInstance

    from mlstack_assets.definitions import build_definitions
    from mlstack_assets.lake.restore import restore
    from mlstack_assets.lake.versions import VersionError
    from mlstack_assets.warehouse.deployment import warehouse_deployment

    settings = load_settings()
    try:
        warehouse = warehouse_deployment(settings).warehouse
        restored = restore(args.table, args.to, settings.warehouse_lake, warehouse)
    except VersionError as error:
        print(f"mlstack rollback: {error}", file=sys.stderr)
        return 1
    with DagsterInstance.get() as instance:
        instance.report_runless_asset_event(restored.materialization())
    print(
        f"{args.table}: restored version {restored.version.id} ({restored.version.rows} rows;"
        f" it held {restored.previous or 'no version'}); recorded in the Dagster instance"
    )
    below = AssetSelection.assets(AssetKey(args.table)).downstream(include_self=False)
    graph = build_definitions().resolve_asset_graph()
    downstream = sorted(key.to_user_string() for key in below.resolve(graph))
    if not downstream:
        if args.with_downstream:  # an empty selection would be `mlstack run`'s default, `*`
            print(f"nothing depends on {args.table}: nothing to rebuild")
        return 0
    if not args.with_downstream:
        print(f"stale now (rebuild with --with-downstream): {', '.join(downstream)}")
        return 0
    args.select, args.allow_row_drop = ",".join(downstream), False
    return run(args)


def restore_from_lake(_: argparse.Namespace) -> int:
    """`mlstack restore`: a lost or damaged warehouse made what the lake's current versions say."""
    from mlstack_assets.lake.restore import restore_warehouse
    from mlstack_assets.lake.versions import VersionError, warehouse_lake
    from mlstack_assets.warehouse.deployment import warehouse_deployment

    settings = load_settings()
    lake = warehouse_lake(settings)
    try:
        restored, views = restore_warehouse(lake, warehouse_deployment(settings).warehouse)
    except VersionError as error:
        print(f"mlstack restore: {error}", file=sys.stderr)
        return 1
    for table in restored:
        version = table.version
        print(f"{settings.dataset}.{table.table}: version {version.id} ({version.rows} rows)")
    print(f"views recreated: {', '.join(views) or 'none recorded'}")
    where = f"{settings.warehouse} {settings.warehouse_location}"
    print(f"restored {where} from {lake.root} (sha256 checked; no source read)")
    return 0


def _shown_value(value: Any, width: int = 40) -> str:
    """A value in a line: text quoted, a timestamp or number as it reads, shortened."""
    text = repr(value) if isinstance(value, str) else "null" if value is None else str(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def format_diff(found: dict[str, Any]) -> str:
    """`mlstack diff`: counts, then a few keys of each kind (changed ones with their values)."""
    key, rows = found["key"], found["rows"]
    lines = [
        f"{found['table']}: {found['from']} -> {found['to']}"
        f" ({rows['from']} -> {rows['to']} rows, matched by {key})"
    ]
    per_column = ", ".join(f"{c} {n}" for c, n in found["columns_changed"].items())
    lines.append(
        f"  added {found['added']}, removed {found['removed']}, changed {found['changed']}"
    )
    lines += [f"  changed columns: {per_column}"] if per_column else []
    for kind in ("columns_added", "columns_removed"):
        if found[kind]:
            lines.append(f"  {kind.replace('_', ' ')}: {', '.join(found[kind])} (not compared)")
    examples = found["examples"]
    for kind in ("added", "removed"):
        if examples[kind]:
            keys = ", ".join(map(_shown_value, examples[kind]))
            lines.append(f"{kind} (first {len(examples[kind])}): {key} {keys}")
    if examples["changed"]:
        lines.append(f"changed (first {len(examples['changed'])}):")
    for row in examples["changed"]:
        change = "; ".join(
            f"{c} {_shown_value(old)} -> {_shown_value(new)}"
            for c, (old, new) in row["columns"].items()
        )
        lines.append(f"  {key} {_shown_value(row['key'])}: {change}")
    return "\n".join(lines)


def diff(args: argparse.Namespace) -> int:
    """`mlstack diff <table> [--from V] [--to V]`: rows added, removed and changed between two
    versions (default: the one before the current, and the current), read from the lake."""
    from mlstack_assets.lake import LakeError
    from mlstack_assets.lake.diff import diff_versions, versions_to_compare
    from mlstack_assets.lake.versions import VERSIONED_TABLES, warehouse_lake

    try:
        if args.table not in VERSIONED_TABLES:
            known = ", ".join(VERSIONED_TABLES)
            raise LakeError(f"{args.table!r} has no versions; the versioned tables are {known}")
        lake = warehouse_lake(load_settings())
        old, new = versions_to_compare(lake, args.table, args.old, args.new)
        found = diff_versions(lake, args.table, old, new)
    except LakeError as error:
        print(f"mlstack diff: {error}", file=sys.stderr)
        return 1
    print(json.dumps(found, indent=2, default=str) if args.json else format_diff(found))
    return 0


def airbyte_setup(_: argparse.Namespace) -> int:
    """`mlstack airbyte-setup`: create or update the Airbyte server's objects."""
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


def main(argv: list[str] | None = None) -> None:
    """The `mlstack` command: parse, check the settings, run the subcommand, exit with it."""
    parser = argparse.ArgumentParser(prog="mlstack", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="materialize every asset and print a summary")
    run_parser.add_argument("--select", default="*", help="a Dagster asset selection (default *)")
    run_parser.add_argument(
        "--allow-row-drop",
        action="store_true",
        help="publish raw tables and labeled_projects even if they lost more rows than"
        " MLSTACK_MAX_ROW_DROP_PERCENT (a deliberate shrink; recorded)",
    )
    listing = commands.add_parser("versions", help="the versions of a published table")
    listing.add_argument("--json", action="store_true", help="as JSON, for scripts")
    restoring = commands.add_parser("rollback", help="restore a table to one of its versions")
    restoring.add_argument("--to", required=True, help="the version id (or a prefix)")
    restoring.add_argument(
        "--with-downstream", action="store_true", help="then rebuild what depends on it"
    )
    comparing = commands.add_parser("diff", help="what changed between two versions of a table")
    comparing.add_argument(
        "--from", dest="old", help="the older version (default: the one before --to)"
    )
    comparing.add_argument("--to", dest="new", help="the newer version (default: the current one)")
    comparing.add_argument("--json", action="store_true", help="as JSON, for scripts")
    subcommands = ((run_parser, run), (listing, versions), (restoring, rollback), (comparing, diff))
    for command, func in subcommands:
        command.add_argument("-v", "--verbose", action="store_true", help="show tracebacks")
        if command is not run_parser:
            command.add_argument("table")
        command.set_defaults(func=func)
    recovering = commands.add_parser(
        "restore", help="rebuild a lost or damaged warehouse from the lake's current versions"
    )
    recovering.set_defaults(func=restore_from_lake)
    setup = commands.add_parser("airbyte-setup", help="create or update the Airbyte objects")
    setup.set_defaults(func=airbyte_setup)
    args = parser.parse_args(argv)
    try:
        load_settings()  # a bad setting: one line, before anything starts
    except SettingsError as error:
        print(f"mlstack: {error}", file=sys.stderr)
        sys.exit(2)
    code = args.func(args)
    if args.func is run:
        # the run is recorded and its output written; tearing down an interpreter that holds
        # Dagster, dbt and GX (freeing every module) took 2 s after the last line: skip it
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    main()
