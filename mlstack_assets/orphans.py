"""Runs a killed process left behind, and the concurrency slots they still hold.

A run whose process was killed (SIGKILL, out of memory, a closed terminal, a reboot)
stays STARTED in the instance for ever, and the slot of the `duckdb_warehouse` pool its
step had claimed stays claimed: every later step of that pool waited for it, silently,
for ever. `repair` marks such runs failed and frees the slots of every run that has
ended; `mlstack run` calls it before it launches, and every DuckDB run calls it as it
starts (`compat/executor.py`), and again whenever one of its steps finds the pool held.
Dagster's daemon does the same for ended runs (`run_monitoring.free_slots_after_run_end_seconds`
in dagster.yaml).
"""

from __future__ import annotations

from typing import Any

from mlstack_assets.compat import runs_stored_in_sqlite
from mlstack_assets.processes import alive_since


def fail_orphaned_runs(instance) -> list[str]:
    """Mark failed the runs left STARTED/STARTING by a process that is gone (SIGKILL, OOM).

    Such a run stays "in progress" in the instance for ever. Only for an instance kept on
    this machine (SQLite storage): each event records the pid that wrote it, and when no
    process that wrote events for the run still runs, nothing will ever finish it. Runs on
    a shared instance (Postgres, Kubernetes) are left to Dagster's run monitoring.
    Returns one line per run marked failed.
    """
    from dagster import DagsterRunStatus, RunsFilter

    if not runs_stored_in_sqlite(instance):
        return []
    lines = []
    in_progress = [DagsterRunStatus.STARTED, DagsterRunStatus.STARTING]
    for record in instance.get_run_records(filters=RunsFilter(statuses=in_progress)):
        run = record.dagster_run
        logs = instance.all_logs(run.run_id)
        pids = {e.dagster_event.pid for e in logs if e.dagster_event and e.dagster_event.pid}
        since = (record.start_time or record.create_timestamp.timestamp()) if logs else 0
        if not pids or any(alive_since(pid, since) for pid in pids):
            continue
        message = (
            f"marked failed by mlstack: its process{'es' if len(pids) > 1 else ''}"
            f" ({', '.join(map(str, sorted(pids)))}) ended without finishing it (killed?)"
        )
        instance.report_run_failed(run, message)
        lines.append(f"run {run.run_id[:8]} ({run.status.value}): {message}")
    return lines


def free_slots_of_ended_runs(instance: Any, run_ids: set[str] | None = None) -> list[str]:
    """Free the concurrency slots (and pending claims) of every run that has ended, among
    `run_ids` (default: every run holding or waiting for a slot). One line per run."""
    from dagster import RunsFilter
    from dagster._core.storage.dagster_run import FINISHED_STATUSES

    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    if run_ids is None:
        run_ids = set(storage.get_concurrency_run_ids())
        for info in storage.get_concurrency_infos(list(storage.get_concurrency_keys())).values():
            run_ids |= {slot.run_id for slot in info.claimed_slots}
    if not run_ids:
        return []
    lines = []
    ended = instance.get_run_records(
        filters=RunsFilter(run_ids=sorted(run_ids), statuses=list(FINISHED_STATUSES))
    )
    for record in ended:
        run = record.dagster_run
        storage.free_concurrency_slots_for_run(run.run_id)
        lines.append(f"run {run.run_id[:8]} ({run.status.value}): freed its concurrency slots")
    return lines


def repair(instance: Any) -> list[str]:
    """Mark failed the runs a killed process left in progress, then free the slots of every
    ended run; one line per thing done."""
    return fail_orphaned_runs(instance) + free_slots_of_ended_runs(instance)
