"""The dbt step's first piece: `dbt build` into the audit schema, and what it built.

`dbt build` writes every model into `<dataset>_audit` (the profile's schema, from the dbt
var `audit_dataset`) and runs dbt's unit and data tests there. Its events come through
dagster-dbt's own stream, with the column schemas and column-level lineage the models'
`log_column_metadata` post-hook logs; `run_build` returns a `DbtBuild`: the models built
(each with its manifest node and compiled SQL), dbt's check results and dbt's error.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import AssetCheckResult, AssetKey, MetadataValue, Output

COLUMN_LINEAGE = "dagster/column_lineage"


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
        """A view's SELECT reading the published relations: each model it refs is named in
        dbt's compiled SQL by its relation in the audit schema (the manifest's
        `relation_name`, as dbt quotes it), which becomes the same relation in `dataset`.
        Sources are read from the published dataset already."""
        sql = self.compiled_sql
        for parent_id in self.node.get("depends_on", {}).get("nodes", []):
            relation = manifest["nodes"].get(parent_id, {}).get("relation_name")
            if not relation:
                continue
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

    @property
    def lineage(self) -> dict[AssetKey, Any]:
        return {m.key: m.lineage for m in self.models if m.lineage is not None}


def _compiled_sql(node: dict[str, Any], target_path: Path) -> str:
    compiled = target_path / "compiled" / node["package_name"] / node["original_file_path"]
    return compiled.read_text().strip() if compiled.exists() else ""


def run_build(context: Any, dbt: Any, args: list[str]) -> DbtBuild:
    """`dbt build` with `args`, for the models this run selects; what it built."""
    started = time.perf_counter()
    invocation = dbt.cli(args, context=context, raise_on_error=False)
    events = list(invocation.stream())
    manifest = invocation.manifest
    models = []
    for event in events:
        unique_id = event.metadata.get("unique_id") if isinstance(event, Output) else None
        node = manifest["nodes"].get(unique_id.value if unique_id else "", {})
        if node.get("resource_type") != "model":
            continue
        sql = _compiled_sql(node, invocation.target_path)
        if sql:  # the SQL dbt ran for the model (what the warehouse executed)
            compiled = MetadataValue.md(f"```sql\n{sql}\n```")
            event = event.with_metadata({**event.metadata, "compiled_sql": compiled})
        models.append(BuiltModel(context.asset_key_for_output(event.output_name), event, node, sql))
    return DbtBuild(
        models=models,
        checks=[e for e in events if isinstance(e, AssetCheckResult)],
        manifest=manifest,
        error=invocation.get_error(),
        seconds=time.perf_counter() - started,
    )
