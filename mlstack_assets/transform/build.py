"""The dbt step's first piece: `dbt build` into the audit schema, and what it built.

`dbt build` writes every model into `<dataset>_audit` (the profile's schema, from the dbt
var `audit_dataset`) and runs dbt's unit and data tests there. `run_build` collects its
events with dagster-dbt's metadata (row counts, column schemas, column lineage, the SQL
that ran) and returns a `DbtBuild`: the models built (each with its manifest node, looked
up once), dbt's check results and dbt's own error, if any.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import AssetCheckResult, AssetKey, MetadataValue, Output, get_dagster_logger
from dagster_dbt import DbtCliInvocation

from mlstack_assets.compat import dbt_events_with_metadata
from mlstack_assets.transform.dbt_connections import dbt_connections_released

COLUMN_LINEAGE = "dagster/column_lineage"
logger = get_dagster_logger()


@dataclass(frozen=True)
class BuiltModel:
    """A model this `dbt build` built in the audit schema, with its manifest node."""

    key: AssetKey
    output: Output
    node: dict[str, Any]
    compiled_sql: str

    @property
    def alias(self) -> str:
        return self.node.get("alias") or self.node["name"]

    @property
    def is_view(self) -> bool:
        return self.node.get("config", {}).get("materialized", "view") == "view"

    @property
    def lineage(self) -> Any:
        metadata = self.output.metadata.get(COLUMN_LINEAGE)
        return metadata.value if metadata is not None else None

    def published_sql(self, manifest: dict[str, Any], audit: str, dataset: str) -> str:
        """A view's SELECT reading the published relations: each model it refs is named
        in dbt's compiled SQL by its relation in the audit schema (the manifest's
        `relation_name`, as dbt quotes it), which becomes the same relation in `dataset`.
        Sources are read from the published dataset already."""
        sql = self.compiled_sql
        for parent_id in self.node.get("depends_on", {}).get("nodes", []):
            parent = manifest["nodes"].get(parent_id)
            if parent is None or not parent.get("relation_name"):
                continue
            relation = parent["relation_name"]
            published = relation
            for quote in ('"', "`"):
                published = published.replace(f"{quote}{audit}{quote}", f"{quote}{dataset}{quote}")
            sql = sql.replace(relation, published)
        return sql


@dataclass
class DbtBuild:
    """What one `dbt build` did."""

    models: list[BuiltModel]
    checks: list[AssetCheckResult]
    manifest: dict[str, Any]
    error: Exception | None
    seconds: float
    events: list[Any] = field(default_factory=list)

    @property
    def lineage(self) -> dict[AssetKey, Any]:
        return {m.key: m.lineage for m in self.models if m.lineage is not None}


def _events_with_metadata(invocation: DbtCliInvocation, adapter: Future[Any]) -> Iterator[Any]:
    """dbt's events with row counts, column schemas and column-level lineage attached.

    dagster-dbt attaches metadata through `dagster._core.utils.imap`, which spins without
    sleeping while its input is not ready: chained twice over a live `dbt build`, two
    threads of this process spin for the whole build. Collecting dbt's events first stops
    that; on DuckDB dagster-dbt waits for dbt to exit before fetching anyway (dbt holds the
    file), and on BigQuery fetching after the build costs a few metadata queries in a row.
    If dbt fails, the events it did produce are still reported before its error is raised.
    `adapter`: dagster-dbt's in-process adapter, made while dbt ran.
    """
    events: list[Any] = []
    error: Exception | None = None
    try:
        for event in invocation.stream():
            events.append(event)
    except Exception as failure:  # re-raised below, after the events it did produce
        error = failure
    try:
        invocation.adapter = adapter.result()
    except Exception as failure:  # as dagster-dbt does: no metadata, not a failed step
        logger.warning(f"no dbt adapter for row counts and column metadata: {failure}")
    yield from dbt_events_with_metadata(events, invocation)
    if error is not None:
        raise error


def _compiled_sql(node: dict[str, Any], target_path: Path) -> str:
    compiled = target_path / "compiled" / node["package_name"] / node["original_file_path"]
    return compiled.read_text().strip() if compiled.exists() else ""


def run_build(context: Any, dbt: Any, warehouse: Any, args: list[str]) -> DbtBuild:
    """`dbt build` with `args`, for the models this run selects; what it built."""
    started = time.perf_counter()
    invocation = dbt.cli(args, context=context, raise_on_error=False)
    adapter = dbt.adapter_while_dbt_runs(args)
    with dbt_connections_released(warehouse.kind):
        events = list(_events_with_metadata(invocation, adapter))
    manifest = invocation.manifest
    models = []
    for event in events:
        if not isinstance(event, Output):
            continue
        unique_id = event.metadata.get("unique_id")
        node = manifest["nodes"].get(unique_id.value if unique_id else "", {})
        if node.get("resource_type") != "model":
            continue
        sql = _compiled_sql(node, invocation.target_path)
        if sql:  # the SQL dbt actually ran for the model (what the warehouse executed)
            event = event.with_metadata(
                {**event.metadata, "compiled_sql": MetadataValue.md(f"```sql\n{sql}\n```")}
            )
        models.append(BuiltModel(context.asset_key_for_output(event.output_name), event, node, sql))
    return DbtBuild(
        models=models,
        checks=[e for e in events if isinstance(e, AssetCheckResult)],
        manifest=manifest,
        error=invocation.get_error(),
        seconds=time.perf_counter() - started,
        events=events,
    )
