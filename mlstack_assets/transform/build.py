"""The dbt step's first piece: `dbt build` into the audit schema, and what it built.

`dbt build` writes every model into `<dataset>_audit` (the profile's schema, the dbt var
`audit_dataset`) and runs dbt's tests there; its events come through dagster-dbt's stream, with
the column schemas and lineage of the models' `log_column_metadata` post-hook.
"""

import os
import shutil
from collections.abc import Collection, Mapping, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagster import AssetCheckResult, AssetKey, Failure, MetadataValue, Output

from mlstack_assets.warehouse import Warehouse


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

    def published_sql(self, manifest: dict[str, Any], audit: str, dataset: str) -> str:
        """A view's SELECT reading the published relations: each model it refs (its quoted
        `relation_name` in the audit schema) becomes the same relation in `dataset`."""
        sql = self.compiled_sql
        for parent_id in self.node.get("depends_on", {}).get("nodes", []):
            # a source has none here: it is read from the published dataset already
            if relation := manifest["nodes"].get(parent_id, {}).get("relation_name"):
                published = relation.replace(f'"{audit}"', f'"{dataset}"')
                sql = sql.replace(relation, published.replace(f"`{audit}`", f"`{dataset}`"))
        return sql


@dataclass
class DbtBuild:
    """What one `dbt build` did."""

    models: list[BuiltModel]
    checks: list[AssetCheckResult]
    manifest: dict[str, Any]
    error: Exception | None

    @property
    def lineage(self) -> dict[AssetKey, Any]:
        found = {m.key: m.output.metadata.get("dagster/column_lineage") for m in self.models}
        return {key: lineage.value for key, lineage in found.items() if lineage is not None}


def fail_if_upstream_missing(
    selected: Collection[AssetKey],
    deps: Mapping[AssetKey, Set[AssetKey]],
    relations: Mapping[AssetKey, tuple[str, str]],
    warehouse: Warehouse,
) -> None:
    """Fail before dbt starts, naming what to materialize first, if a relation (`relations`: an
    asset's schema and table) the selected models read is missing: not a dbt Catalog Error."""
    missing = {
        parent: ".".join(relations[parent])
        for key in selected
        for parent in sorted(deps.get(key, ()), key=str)
        if parent not in selected and parent in relations
        if warehouse.table_columns(*relations[parent]) is None
    }
    if not missing:
        return
    wanted = ", ".join(sorted(k.to_user_string() for k in selected))
    needed = ", ".join(f"{key.to_user_string()} ({where})" for key, where in missing.items())
    first = sorted(selected, key=str)[0].to_user_string()
    raise Failure(
        description=f"{wanted}: nothing was built: the upstream {needed} does not exist yet."
        f" Materialize it first, or with its upstream: --select '+{first}'"
        f" (dg launch --assets '+{first}')",
        metadata={"missing_upstream": sorted(k.to_user_string() for k in missing)},
        allow_retries=False,
    )


def keep_partial_parse(run_target: Path, target: Path) -> None:
    """Make the run's `partial_parse.msgpack` the one the next `dbt build` starts from.

    dagster-dbt hands every build a copy of `target/partial_parse.msgpack`, which dbt throws
    away when it was parsed with other `--vars` (another warehouse path, dataset or window):
    without this, each such run parsed the whole project again (3 s here). dbt itself still
    checks the file against the project's files and vars, so a stale one only costs a parse.
    """
    parsed = run_target / "partial_parse.msgpack"
    if not parsed.exists():
        return
    staged = target / f".partial_parse.{os.getpid()}.msgpack"
    try:
        shutil.copyfile(parsed, staged)
        os.replace(staged, target / "partial_parse.msgpack")  # whole, for a concurrent build
    except OSError:  # a saving only: the next build parses again, this one stands
        staged.unlink(missing_ok=True)


# dagster-dbt's per-build target folders kept (each ~2 MB: the build's dbt.log, compiled SQL
# and manifest, for reading a recent run); older ones are removed after each build
RUN_TARGETS_KEPT = 10


def prune_run_targets(run_target: Path, keep: int = RUN_TARGETS_KEPT) -> list[Path]:
    """Remove all but the newest `keep` of the folders dagster-dbt names like `run_target`
    (`<op>-<run id>-<random>`) beside it; return the removed ones. Without it every build's
    folder stayed in `dbt_project/target/` for good."""

    def modified(path: Path) -> float:
        try:
            return path.stat().st_mtime
        except OSError:  # removed meanwhile by a concurrent build's pruning
            return 0.0

    op = run_target.name.rsplit("-", 2)[0]
    folders = [p for p in run_target.parent.glob(f"{op}-*-*") if p.is_dir() and p != run_target]
    folders.sort(key=modified, reverse=True)
    removed = folders[max(keep - 1, 0) :]  # `run_target` itself is the newest
    for folder in removed:
        shutil.rmtree(folder, ignore_errors=True)
    return removed


def run_build(context: Any, dbt: Any, args: list[str], target: Path) -> DbtBuild:
    """`dbt build` with `args`, for the models this run selects; what it built. Its partial
    parse is kept in the project's `target` folder for the next build; older builds' folders go."""
    invocation = dbt.cli(args, context=context, raise_on_error=False)
    events = list(invocation.stream())
    keep_partial_parse(invocation.target_path, target)
    prune_run_targets(invocation.target_path)
    models = []
    for event in events:
        unique_id = event.metadata.get("unique_id") if isinstance(event, Output) else None
        node = invocation.manifest["nodes"].get(unique_id.value if unique_id else "", {})
        if node.get("resource_type") != "model":
            continue
        compiled = invocation.target_path / "compiled" / node["package_name"]
        compiled /= node["original_file_path"]
        sql = compiled.read_text().strip() if compiled.exists() else ""
        if sql:  # the SQL the warehouse executed for the model
            event = event.with_metadata(
                {**event.metadata, "compiled_sql": MetadataValue.md(f"```sql\n{sql}\n```")}
            )
        models.append(BuiltModel(context.asset_key_for_output(event.output_name), event, node, sql))
    return DbtBuild(
        models=models,
        checks=[e for e in events if isinstance(e, AssetCheckResult)],
        manifest=invocation.manifest,
        error=invocation.get_error(),
    )
