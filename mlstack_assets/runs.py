"""What a run did, read back from the Dagster instance: rows, checks, failed steps.

`mlstack run` prints it as its summary and the failure alerts send it, so both say the
same thing about a run: which step failed, on which assets, which checks failed, and why.
"""

from __future__ import annotations

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


def summarize_run(instance: Any, run_id: str) -> RunSummary:
    """Rows per materialized asset, check outcomes and step failures, from the event log."""
    from dagster import DagsterEventType

    run = instance.get_run_by_id(run_id)
    assets: dict[str, AssetSummary] = defaultdict(AssetSummary)
    planned: dict[str, list[str]] = defaultdict(list)  # step -> the assets it materializes
    failures: list[StepFailure] = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type in (
            DagsterEventType.ASSET_MATERIALIZATION_PLANNED,
            DagsterEventType.ASSET_CHECK_EVALUATION_PLANNED,
        ):
            assets_of_step = planned[event.step_key or ""]
            if planned_asset(event) not in assets_of_step:
                assets_of_step.append(planned_asset(event))
        elif event.event_type == DagsterEventType.ASSET_MATERIALIZATION:
            materialization = event.step_materialization_data.materialization
            rows = materialization.metadata.get("dagster/row_count")
            summary = assets[materialization.asset_key.to_user_string()]
            summary.rows = rows.value if rows is not None else summary.rows
            relation = materialization.metadata.get("relation")
            summary.view = relation is not None and relation.value == "view"
        elif event.event_type == DagsterEventType.ASSET_CHECK_EVALUATION:
            evaluation = event.event_specific_data
            summary = assets[evaluation.asset_key.to_user_string()]
            getattr(summary, check_outcome(evaluation)).append(evaluation.check_name)
        elif event.event_type == DagsterEventType.STEP_FAILURE:
            message, traceback = failure_message(event.step_failure_data.error)
            step = event.step_key or ""
            failures.append(StepFailure(step, planned.get(step, []), message, traceback))
        elif event.event_type == DagsterEventType.RUN_FAILURE and not failures:
            # a run that failed outside any step (e.g. its definitions did not load)
            data = event.event_specific_data
            error = getattr(data, "error", None)
            message, traceback = failure_message(error) if error else (event.message or "", "")
            failures.append(StepFailure("run", [], message or "run failed", traceback))
    return RunSummary(
        run_id=run_id, status=run.status.value, assets=dict(assets), step_failures=failures
    )
