"""What a run did, read from its events in the Dagster instance: one reader for all, so
`mlstack run` (following a run with `RunProgress`), its summary and the alerts agree."""

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

# log lines about a wait (for the warehouse lock), shown on screen as they come
WAIT_NOTES = ("waiting for", "waiting to ", "gave up waiting", "got the warehouse lock")
STEP_ENDS = {"STEP_SUCCESS": "ok", "STEP_FAILURE": "failed", "STEP_SKIPPED": "skipped"}


@dataclass
class AssetSummary:
    """An asset's rows (a view has none of its own) and its checks by outcome."""

    rows: int | None = None
    view: bool = False
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)


@dataclass
class StepFailure:
    """A failed step (or `run`), the assets it was to materialize, and why."""

    step: str
    assets: list[str]
    message: str
    traceback: str = ""


@dataclass
class RunSummary:
    """A finished run: its status, its assets and its failed steps."""

    run_id: str
    status: str
    assets: dict[str, AssetSummary]
    step_failures: list[StepFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS" and not any(a.failed for a in self.assets.values())

    @property
    def failures(self) -> list[str]:
        return [f"{failure.step}: {failure.message}" for failure in self.step_failures]

    @property
    def failed_checks(self) -> list[str]:
        """`asset: check` for every failed error-severity check."""
        return [f"{key}: {name}" for key, a in sorted(self.assets.items()) for name in a.failed]


def failure_message(error: Any) -> tuple[str, str]:
    """The message users can act on, without Dagster's "Error occurred while ..." wrappers,
    and the whole error chain with its stack traces (for `--verbose`)."""
    full = error.to_string() if error is not None else ""
    while error is not None and error.cause is not None and "Error occurred while" in error.message:
        error = error.cause
    if error is None:
        return "failed", full
    message = error.message.strip()
    qualified, _, rest = message.partition(": ")
    if rest and qualified.endswith(error.cls_name) and " " not in qualified:
        # `dagster...Failure: msg` -> `msg`; `x.y.KeyError: k` -> `KeyError: k`
        message = rest if error.cls_name == "Failure" else f"{error.cls_name}: {rest}"
    return message, full


@dataclass
class StepProgress:
    """One step of the run, as its events arrive."""

    key: str
    started: float = 0.0
    finished: float | None = None
    status: str = "running"  # running | ok | failed | skipped
    rows: dict[str, int] = field(default_factory=dict)
    checks: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    message: str = ""

    @property
    def seconds(self) -> float:
        return (self.finished or time.time()) - self.started

    def outcome(self) -> str:
        """Rows and checks, e.g. `955 rows, 12/12 checks passed`."""
        if list(self.rows) == [self.key]:
            parts = [f"{self.rows[self.key]} rows"]
        else:
            parts = [f"{asset} {rows} rows" for asset, rows in self.rows.items()]
        passed, warned, failed = (self.checks[k] for k in ("passed", "warned", "failed"))
        if total := len(passed) + len(warned) + len(failed):
            text = f"{len(passed)}/{total} checks passed"
            text += f", {len(warned)} warned" if warned else ""
            text += f", {len(failed)} failed: {', '.join(failed)}" if failed else ""
            parts.append(text)
        if self.status == "failed" and not failed and self.message:
            parts.append(self.message.splitlines()[0][:120])
        return ", ".join(parts)


class RunProgress:
    """Reads one run's events from the instance: its steps and its assets, as they come."""

    def __init__(self, instance: Any, run_id: str) -> None:
        self.instance, self.run_id = instance, run_id
        self.cursor: str | None = None
        self.steps: dict[str, StepProgress] = {}
        self.planned: dict[str, list[str]] = {}  # step -> the assets it is to materialize
        self.assets: dict[str, AssetSummary] = defaultdict(AssetSummary)
        self.failures: list[StepFailure] = []

    def poll(self) -> list[tuple[str, StepProgress]]:
        """The events since the last poll: `("start" | "finish" | "note", step)`, in order
        (a step that started and finished between two polls gives both)."""
        changed: list[tuple[str, StepProgress]] = []
        while True:
            page = self.instance.get_records_for_run(
                self.run_id, cursor=self.cursor, of_type=None, limit=500
            )
            for record in page.records:
                entry = record.event_log_entry
                if entry.dagster_event is not None:
                    changed += self._apply(entry)
                elif any(note in entry.user_message for note in WAIT_NOTES):
                    note = StepProgress(entry.step_key or "", message=entry.user_message)
                    changed.append(("note", note))
            self.cursor = page.cursor
            if not page.has_more:
                return changed

    def _apply(self, entry: Any) -> list[tuple[str, StepProgress]]:
        event, kind = entry.dagster_event, entry.dagster_event.event_type_value
        key = event.step_key or ""
        if kind.endswith("_PLANNED") and kind.startswith("ASSET_"):
            asset = (event.asset_key or event.event_specific_data.asset_key).to_user_string()
            planned = self.planned.setdefault(key, [])
            planned += [] if asset in planned else [asset]
        elif kind == "RUN_FAILURE" and not self.failures:  # failed outside any step
            error = getattr(event.event_specific_data, "error", None)
            message, trace = failure_message(error) if error else (event.message or "", "")
            self.failures.append(StepFailure("run", [], message or "run failed", trace))
        elif kind == "STEP_START":
            self.steps[key] = StepProgress(key, started=entry.timestamp)
            return [("start", self.steps[key])]
        if kind not in (*STEP_ENDS, "ASSET_MATERIALIZATION", "ASSET_CHECK_EVALUATION"):
            return []
        step = self.steps.setdefault(key, StepProgress(key))
        if kind == "ASSET_MATERIALIZATION":
            materialization = event.step_materialization_data.materialization
            name, metadata = materialization.asset_key.to_user_string(), materialization.metadata
            if (rows := metadata.get("dagster/row_count")) is not None:
                step.rows[name] = self.assets[name].rows = rows.value
            self.assets[name].view = getattr(metadata.get("relation"), "value", None) == "view"
        elif kind == "ASSET_CHECK_EVALUATION":
            check = event.event_specific_data
            outcome = "warned" if check.severity.value == "WARN" else "failed"
            outcome = "passed" if check.passed else outcome
            step.checks[outcome].append(check.check_name)
            getattr(self.assets[check.asset_key.to_user_string()], outcome).append(check.check_name)
        else:
            step.finished, step.status = entry.timestamp, STEP_ENDS[kind]
            if kind == "STEP_FAILURE":
                step.message, trace = failure_message(event.step_failure_data.error)
                planned = self.planned.get(step.key, [])
                self.failures.append(StepFailure(step.key, planned, step.message, trace))
            return [("finish", step)]
        return []

    def not_run(self) -> list[str]:
        """Planned steps that never started (their upstream failed)."""
        return [key for key in self.planned if key and key not in self.steps]


def summarize_run(instance: Any, run_id: str) -> RunSummary:
    """Rows per materialized asset, check outcomes and step failures, from the event log."""
    progress = RunProgress(instance, run_id)
    progress.poll()
    status = instance.get_run_by_id(run_id).status.value
    return RunSummary(run_id, status, dict(progress.assets), list(progress.failures))
