"""What a run did, read from its events in the Dagster instance: one reader for all.

`RunProgress` reads a run's events (as they come, or all at once) into its steps (when
each started and ended, rows, checks, failures) and its assets (rows, check outcomes).
`mlstack run`'s live display follows a run with it, and `summarize_run` (the summary
`mlstack run` prints and the failure alerts send) reads a finished run with the same
reader, so both say the same thing about a run: which step failed, on which assets,
which checks failed, and why.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass
class AssetSummary:
    rows: int | None = None
    view: bool = False  # a view: no rows of its own, no checks
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    warned: list[str] = field(default_factory=list)


@dataclass
class StepFailure:
    step: str
    assets: list[str]
    message: str
    traceback: str = ""

    def __str__(self) -> str:
        return f"{self.step}: {self.message}"


@dataclass
class RunSummary:
    run_id: str
    status: str
    assets: dict[str, AssetSummary]
    step_failures: list[StepFailure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.status == "SUCCESS" and not any(a.failed for a in self.assets.values())

    @property
    def failures(self) -> list[str]:
        """`step: message` per failed step (what the summary lists under "failed steps")."""
        return [str(failure) for failure in self.step_failures]

    @property
    def failed_checks(self) -> list[str]:
        """`asset: check` for every failed error-severity check."""
        return [
            f"{key}: {name}" for key, asset in sorted(self.assets.items()) for name in asset.failed
        ]


def failure_message(error: Any) -> tuple[str, str]:
    """The message users can act on, without Dagster's "Error occurred while ..." wrappers.

    Returns the message and the full error chain with stack traces (for `--verbose`).
    """
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


def planned_asset(event: Any) -> str:
    """The asset a `*_PLANNED` event announces (a materialization or a check of it)."""
    key = event.asset_key or event.event_specific_data.asset_key
    return key.to_user_string()


def check_outcome(evaluation: Any) -> str:
    """`passed`, `warned` (a WARN-severity check that failed) or `failed`."""
    if evaluation.passed:
        return "passed"
    return "warned" if evaluation.severity.value == "WARN" else "failed"


@dataclass
class StepProgress:
    """One step of the run, as its events arrive."""

    key: str
    started: float = 0.0
    finished: float | None = None
    status: str = "running"  # running | ok | failed | skipped
    assets: list[str] = field(default_factory=list)
    rows: dict[str, int] = field(default_factory=dict)
    checks: dict[str, int] = field(default_factory=lambda: {"passed": 0, "warned": 0, "failed": 0})
    failed_checks: list[str] = field(default_factory=list)
    message: str = ""

    @property
    def seconds(self) -> float:
        return (self.finished or time.time()) - self.started

    def outcome(self) -> str:
        """Rows and checks, e.g. `955 rows, 12/12 checks passed`."""
        parts = []
        if len(self.rows) == 1 and list(self.rows) == [self.key]:
            parts.append(f"{self.rows[self.key]} rows")
        else:
            parts += [f"{asset} {rows} rows" for asset, rows in self.rows.items()]
        total = sum(self.checks.values())
        if total:
            text = f"{self.checks['passed']}/{total} checks passed"
            if self.checks["warned"]:
                text += f", {self.checks['warned']} warned"
            if self.failed_checks:
                text += f", {len(self.failed_checks)} failed: {', '.join(self.failed_checks)}"
            parts.append(text)
        if self.status == "failed" and not self.failed_checks and self.message:
            parts.append(self.message.splitlines()[0][:120])
        return ", ".join(parts)


class RunProgress:
    """Reads one run's events from the instance: its steps and its assets, as they come."""

    TYPES = (
        "ASSET_MATERIALIZATION_PLANNED",
        "ASSET_CHECK_EVALUATION_PLANNED",
        "STEP_START",
        "STEP_SUCCESS",
        "STEP_FAILURE",
        "STEP_SKIPPED",
        "ASSET_MATERIALIZATION",
        "ASSET_CHECK_EVALUATION",
        "RUN_FAILURE",
    )

    def __init__(self, instance: Any, run_id: str) -> None:
        self.instance = instance
        self.run_id = run_id
        self.cursor: str | None = None
        self.steps: dict[str, StepProgress] = {}
        self.planned: dict[str, list[str]] = {}
        self.assets: dict[str, AssetSummary] = defaultdict(AssetSummary)
        self.failures: list[StepFailure] = []

    def poll(self) -> list[tuple[str, StepProgress]]:
        """Read the events since the last poll: `("start" | "finish", step)` in order.

        A step can start and finish between two polls: both are returned, in order.
        """

        changed: list[tuple[str, StepProgress]] = []
        while True:
            # every record: the step events above, and the log lines that say what a step
            # waits for (the warehouse lock), shown as they come
            connection = self.instance.get_records_for_run(
                self.run_id, cursor=self.cursor, of_type=None, limit=500
            )
            for record in connection.records:
                entry = record.event_log_entry
                if entry.dagster_event is None:
                    if is_wait_note(entry.user_message):
                        changed.append(
                            ("note", StepProgress(entry.step_key or "", message=entry.user_message))
                        )
                    continue
                if entry.dagster_event.event_type_value not in self.TYPES:
                    continue
                step = self._apply(entry)
                if step is not None:
                    changed.append(step)
            self.cursor = connection.cursor
            if not connection.has_more:
                return changed

    def _apply(self, entry: Any) -> tuple[str, StepProgress] | None:
        event = entry.dagster_event
        if event is None:
            return None
        kind = event.event_type_value
        step_key = event.step_key or ""
        if kind in ("ASSET_MATERIALIZATION_PLANNED", "ASSET_CHECK_EVALUATION_PLANNED"):
            planned = self.planned.setdefault(step_key, [])
            if planned_asset(event) not in planned:
                planned.append(planned_asset(event))
            return None
        if kind == "RUN_FAILURE":
            if not self.failures:  # a run that failed outside any step (its definitions...)
                error = getattr(event.event_specific_data, "error", None)
                message, trace = failure_message(error) if error else (event.message or "", "")
                self.failures.append(StepFailure("run", [], message or "run failed", trace))
            return None
        if kind == "STEP_START":
            step = StepProgress(step_key, started=entry.timestamp)
            step.assets = self.planned.get(step_key, [])
            self.steps[step_key] = step
            return "start", step
        step = self.steps.setdefault(step_key, StepProgress(step_key, started=entry.timestamp))
        if kind == "ASSET_MATERIALIZATION":
            materialization = event.step_materialization_data.materialization
            asset = self.assets[materialization.asset_key.to_user_string()]
            rows = materialization.metadata.get("dagster/row_count")
            if rows is not None:
                step.rows[materialization.asset_key.to_user_string()] = rows.value
                asset.rows = rows.value
            relation = materialization.metadata.get("relation")
            asset.view = relation is not None and relation.value == "view"
        elif kind == "ASSET_CHECK_EVALUATION":
            evaluation = event.event_specific_data
            outcome = check_outcome(evaluation)
            step.checks[outcome] += 1
            if outcome == "failed":
                step.failed_checks.append(evaluation.check_name)
            asset = self.assets[evaluation.asset_key.to_user_string()]
            getattr(asset, outcome).append(evaluation.check_name)
        elif kind in ("STEP_SUCCESS", "STEP_FAILURE", "STEP_SKIPPED"):
            step.finished = entry.timestamp
            step.status = {"STEP_SUCCESS": "ok", "STEP_FAILURE": "failed"}.get(kind, "skipped")
            if kind == "STEP_FAILURE":
                message, trace = failure_message(event.step_failure_data.error)
                step.message = message
                assets = self.planned.get(step_key, [])
                self.failures.append(StepFailure(step_key, assets, message, trace))
            return "finish", step
        return None

    def not_run(self) -> list[str]:
        """Planned steps that never started (their upstream failed)."""
        return [key for key in self.planned if key and key not in self.steps]


def summarize_run(instance: Any, run_id: str) -> RunSummary:
    """Rows per materialized asset, check outcomes and step failures, from the event log."""
    progress = RunProgress(instance, run_id)
    progress.poll()
    run = instance.get_run_by_id(run_id)
    return RunSummary(
        run_id=run_id,
        status=run.status.value,
        assets=dict(progress.assets),
        step_failures=list(progress.failures),
    )


WAIT_NOTES = (
    "waiting for",
    "waiting to ",
    "gave up waiting",
    "got the warehouse lock",
)


def is_wait_note(message: str) -> bool:
    """A log line about a wait (for the warehouse lock): shown on screen."""
    return any(note in message for note in WAIT_NOTES)
