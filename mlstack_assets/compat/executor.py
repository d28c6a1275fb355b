"""Dagster's in-process executor, with a pool wait that is bounded, said, and self-healing.

Why: a step of the `duckdb_warehouse` pool whose slot is held by a run that was killed
waited for ever, with one DEBUG line every five minutes ("Step blocked by limit for pool
duckdb_warehouse"): Dagster frees a dead run's slots only when the daemon's run
monitoring finds the run ended, and with the local run launcher it cannot tell that its
process died. This executor, the one DuckDB runs use:

- before any step, repairs the instance (`orphans.repair`: runs left STARTED by a dead
  process are marked failed, ended runs' slots are freed);
- while a step waits for a slot, checks whether its holder ended (and frees its slot if
  so), logs which run and step hold it and since when (at once, then every
  `LOG_EVERY_SECONDS`), and fails the run past `timeout` seconds
  (`MLSTACK_POOL_TIMEOUT_SECONDS`), as the warehouse lock does.

Why private: Dagster has no public hook into a step's wait for a pool slot. The wait is
`InstanceConcurrencyContext.claim` (`dagster/_core/execution/plan/instance_concurrency_
context.py`), made by `inprocess_execution_iterator` inside `InProcessExecutor.execute`;
this module subclasses the first and repeats the few lines of the other two with the
subclass. `tests/unit/test_compat.py` fails if those pieces change shape.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from typing import Any

from dagster import executor
from dagster._core.definitions.executor_definition import (
    IN_PROC_CONFIG,
    _core_in_process_executor_creation,
)
from dagster._core.events import DagsterEvent, EngineEventData
from dagster._core.execution.api import ExecuteRunWithPlanIterable
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.execute_plan import inner_plan_execution_iterator
from dagster._core.execution.plan.instance_concurrency_context import InstanceConcurrencyContext
from dagster._core.executor.in_process import InProcessExecutor

LOG_EVERY_SECONDS = 15.0


class PoolWaitTimeout(TimeoutError):
    """A step waited for its pool longer than `MLSTACK_POOL_TIMEOUT_SECONDS`."""


class BoundedConcurrencyContext(InstanceConcurrencyContext):
    """`InstanceConcurrencyContext` whose waits for a slot are bounded and reported."""

    def __init__(self, instance: Any, dagster_run: Any, log: Any, timeout: float):
        super().__init__(instance, dagster_run)
        self._log = log
        self._timeout = timeout
        self._waiting_since: dict[str, float] = {}
        self._logged_at: dict[str, float] = {}

    def claim(self, concurrency_key: str, step_key: str, step_priority: int = 0) -> bool:
        if super().claim(concurrency_key, step_key, step_priority):
            started = self._waiting_since.pop(step_key, None)
            if started is not None:
                self._log.info(
                    f"{step_key}: got a slot of pool {concurrency_key} after waiting"
                    f" {time.monotonic() - started:.0f} s"
                )
            return True
        now = time.monotonic()
        started = self._waiting_since.setdefault(step_key, now)
        holders = self._holders(concurrency_key)
        from mlstack_assets.orphans import free_slots_of_ended_runs

        freed = free_slots_of_ended_runs(self._instance, {run for run, _ in holders} or None)
        if freed:
            for line in freed:
                self._log.info(f"{step_key}: pool {concurrency_key}: {line}")
            self._pending_timeouts[step_key] = 0.0  # ask again at once
            return super().claim(concurrency_key, step_key, step_priority)
        held_by = self._describe(holders)
        waited = now - started
        if waited >= self._timeout:
            raise PoolWaitTimeout(
                f"{step_key}: gave up waiting for a slot of pool {concurrency_key}: held by"
                f" {held_by}; waited {waited:.0f} s (MLSTACK_POOL_TIMEOUT_SECONDS="
                f"{self._timeout:g})"
            )
        if now - self._logged_at.get(step_key, -LOG_EVERY_SECONDS) >= LOG_EVERY_SECONDS:
            self._logged_at[step_key] = now
            self._log.info(
                f"{step_key}: waiting for a slot of pool {concurrency_key}: held by {held_by};"
                f" waited {waited:.0f} s of at most {self._timeout:g} s"
            )
        return False

    def _holders(self, concurrency_key: str) -> list[tuple[str, str]]:
        info = self._instance.event_log_storage.get_concurrency_info(concurrency_key)
        return [
            (slot.run_id, slot.step_key)
            for slot in info.claimed_slots
            if slot.run_id and slot.run_id != self._run_id
        ]

    def _describe(self, holders: list[tuple[str, str]]) -> str:
        if not holders:
            return "other steps of this run"
        parts = []
        for run_id, step_key in holders:
            record = self._instance.get_run_record_by_id(run_id)
            since = ""
            if record is not None and record.start_time:
                since = f", started {time.time() - record.start_time:.0f} s ago"
            status = record.dagster_run.status.value if record is not None else "unknown"
            parts.append(f"run {run_id[:8]} ({status}{since}), step {step_key}")
        return "; ".join(parts)


def _execution_iterator(timeout: float):
    def iterate(
        job_context: Any, execution_plan: Any, instance_concurrency_context: Any = None
    ) -> Iterator[DagsterEvent]:
        with BoundedConcurrencyContext(
            job_context.instance, job_context.dagster_run, job_context.log, timeout
        ) as context:
            yield from inner_plan_execution_iterator(job_context, execution_plan, context)

    return iterate


class WarehouseInProcessExecutor(InProcessExecutor):
    """`InProcessExecutor` that repairs the instance first and bounds its pool waits."""

    pool_timeout: float = 900.0

    def execute(self, plan_context: Any, execution_plan: Any) -> Iterator[DagsterEvent]:
        from mlstack_assets.orphans import repair

        for line in repair(plan_context.instance):
            yield DagsterEvent.engine_event(
                plan_context, f"mlstack: {line}", event_specific_data=EngineEventData()
            )
        step_keys = execution_plan.step_keys_to_execute
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps in process (pid: {os.getpid()})",
            event_specific_data=EngineEventData.in_process(os.getpid(), step_keys),
        )
        yield from iter(
            ExecuteRunWithPlanIterable(
                execution_plan=plan_context.execution_plan,
                iterator=_execution_iterator(self.pool_timeout),
                execution_context_manager=PlanExecutionContextManager(
                    job=plan_context.job,
                    retry_mode=plan_context.retry_mode,
                    execution_plan=plan_context.execution_plan,
                    run_config=plan_context.run_config,
                    dagster_run=plan_context.dagster_run,
                    instance=plan_context.instance,
                    raise_on_error=plan_context.raise_on_error,
                    output_capture=plan_context.output_capture,
                    step_dependency_config=self.step_dependency_config,
                ),
            )
        )


def warehouse_in_process_executor(pool_timeout: float) -> Any:
    """The `in_process` executor (same name and config as Dagster's), as above."""

    @executor(name="in_process", config_schema=IN_PROC_CONFIG)
    def in_process(init_context: Any) -> WarehouseInProcessExecutor:
        plain = _core_in_process_executor_creation(init_context.executor_config)
        bounded = WarehouseInProcessExecutor(
            retries=plain.retries, step_dependency_config=plain.step_dependency_config
        )
        bounded.pool_timeout = pool_timeout
        return bounded

    return in_process
