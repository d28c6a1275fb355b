"""The one audited publish, for raw tables, dbt's models and the ML tables alike: in one
warehouse session, the volume guard, then either one failure report (nothing published) or a
version of each table kept in the lake and the published tables replaced atomically."""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from dagster import AssetCheckSpec, AssetKey, Failure, MetadataValue

from mlstack_assets.lake import DATA, Lake, diff, utc_label, versions
from mlstack_assets.lake.checkpoints import Checkpoint, prune
from mlstack_assets.lake.restore import path_metadata
from mlstack_assets.quality.outcomes import Audit, CheckOutcome
from mlstack_assets.settings import Settings
from mlstack_assets.sources import source_names
from mlstack_assets.warehouse import Warehouse

VOLUME_CHECK = "row_drop_within_limit"
VOLUME_GUARDED = (*source_names(), "labeled_projects")


def volume_check_spec(key: AssetKey) -> AssetCheckSpec:
    """The volume guard's check on a raw table or labeled_projects (blocking)."""
    return AssetCheckSpec(
        VOLUME_CHECK,
        asset=key,
        blocking=True,
        description="The row count does not drop more than MLSTACK_MAX_ROW_DROP_PERCENT below"
        " the version it would replace (a deliberate shrink: run with allow_row_drop).",
    )


@dataclass(frozen=True)
class Candidate:
    """A relation built where readers do not look, to be published as `<dataset>.<table>`."""

    key: AssetKey
    table: str  # its name, audited and published
    schema: str  # where it was built and audited
    view_sql: str | None = None  # a view: its SELECT, reading the published tables
    checkpoint: Checkpoint | None = None  # a raw table: the checkpoint staging came from
    inputs: dict[str, str] = field(default_factory=dict)  # table -> version it was built from
    version_id: str = field(default_factory=utc_label)


@dataclass(frozen=True)
class Policy:
    """What a publish may do: the settings' lake, dataset and limits, and the run's say."""

    settings: Settings
    allow_row_drop: bool = False


def policy(settings: Settings, allow_row_drop: bool = False) -> Policy:
    """The publish policy of these `Settings` for a run."""
    return Policy(settings, allow_row_drop)


class AuditFailed(Exception):
    """The audit blocked the publish: `failure` for the step, `audit` for its check results."""

    def __init__(self, audit: Audit, failure: Failure):
        super().__init__(failure.description)
        self.audit, self.failure = audit, failure


def volume_outcome(candidate: Candidate, rows: int, lake: Lake, policy: Policy) -> CheckOutcome:
    """The volume guard: `rows` against the current version of the table."""
    current = versions.current_version(lake, candidate.table)
    outcome = partial(CheckOutcome, candidate.key, VOLUME_CHECK)
    if current is None:
        summary = f"{rows} rows; no published version to compare with yet"
        return outcome(True, summary, metadata={"rows": rows})
    before, limit = current.rows, policy.settings.max_row_drop_percent
    drop = 100.0 * (before - rows) / before if before else 0.0
    metadata = {"rows": rows, "published_rows": before, "published_version": current.id}
    metadata |= {"drop_percent": round(drop, 2), "max_row_drop_percent": limit}
    if drop <= limit:
        summary = f"{rows} rows against {before} in version {current.id} ({drop:.1f}% fewer)"
        return outcome(True, summary, metadata=metadata)
    summary = f"{rows} rows, {before} in the published version {current.id}: {drop:.1f}% fewer,"
    summary += f" more than MLSTACK_MAX_ROW_DROP_PERCENT={limit:g}"
    if policy.allow_row_drop:  # the run says the shrink is deliberate
        notice = f"row drop allowed for this run: {summary}"
        summary += "; allowed for this run (allow_row_drop)"
        metadata["allowed_by"] = "allow_row_drop"
        return outcome(True, summary, metadata=metadata, notice=notice)
    hint = "mlstack run --allow-row-drop (run config allow_row_drop)"
    return outcome(False, f"{summary}; if the shrink is deliberate: {hint}", metadata=metadata)


def failure_description(
    subject: str,
    audit: Audit,
    published: Sequence[str],
    audited: Sequence[str],
    name_assets: bool | None = None,
) -> str:
    """The one failure report: what failed, that nothing was replaced, where to look."""
    what = ["the build failed"] if audit.errors else []
    if audit.blocking_failures:
        blocking = [o for o in audit.outcomes if o.blocking]
        what.append(f"{len(audit.blocking_failures)} of {len(blocking)} blocking checks failed")
    one = len(published) == 1
    kept = "was not replaced (it keeps its" if one else "were not replaced (they keep their"
    return (
        f"{subject}: {' and '.join(what)}, so {', '.join(published)} {kept} previous content);"
        f" the audited rows are in {', '.join(audited)}.\n{audit.report(name_assets)}"
    )


def publish_audited(
    subject: str,
    candidates: Sequence[Candidate],
    audit: Audit,
    warehouse: Warehouse,
    policy: Policy,
    run_id: str,
    log: Callable[[str], None],
    name_assets: bool | None = None,
) -> tuple[Audit, dict[AssetKey, dict[str, Any]]]:
    """Publish `candidates` if `audit` and the volume guard pass, else raise `AuditFailed`."""
    # one session: nobody publishes between guard and replace, or sees rows and pointer differ
    with warehouse.session(purpose=f"publish {subject}"):
        lake, dataset = versions.warehouse_lake(policy.settings, log), policy.settings.dataset
        for candidate in candidates:
            if candidate.table in VOLUME_GUARDED and candidate.view_sql is None:
                rows = warehouse.row_count(candidate.schema, candidate.table)
                audit = audit + Audit([volume_outcome(candidate, rows, lake, policy)])
        for warning in audit.warnings():
            log(warning)
        if not audit.passed:
            published = [f"{dataset}.{c.table}" for c in candidates]
            audited = [f"{c.schema}.{c.table}" for c in candidates]
            audited += [c.checkpoint.uri for c in candidates if c.checkpoint is not None]
            description = failure_description(subject, audit, published, audited, name_assets)
            failed = MetadataValue.json(audit.failed_checks)
            details = {"audited_relations": MetadataValue.json(audited), "failed_checks": failed}
            raise AuditFailed(audit, Failure(description, metadata=details, allow_retries=False))
        kept = {  # a version of each table, recorded before the publish
            c.key: _keep_version(c, audit, warehouse, lake, run_id)
            for c in candidates
            if c.view_sql is None and c.table in versions.VERSIONED_TABLES
        }
        replaced = {c.table: versions.current_version_id(lake, c.table) for c in candidates}

        def make_current() -> None:  # inside the publish: a kill leaves table and pointer agreeing
            for candidate in candidates:
                if (version := kept.get(candidate.key)) is not None:
                    versions.make_current(lake, candidate.table, version.id, run_id=run_id)
                elif candidate.view_sql is not None:  # so that `mlstack restore` can recreate it
                    versions.record_view(lake, candidate.table, candidate.view_sql, run_id)

        [schema] = {c.schema for c in candidates}  # one step's candidates are built together
        try:
            warehouse.publish_relations(
                schema,
                tables=[c.table for c in candidates if c.view_sql is None],
                views={c.table: c.view_sql for c in candidates if c.view_sql is not None},
                before_commit=make_current,
            )
        except Exception:  # not published: the pointers say what the tables still hold
            for candidate in candidates:
                if candidate.key in kept:
                    versions.make_current(lake, candidate.table, replaced[candidate.table])
            raise
        metadata = {}
        for candidate in candidates:
            table, version = candidate.table, kept.get(candidate.key)
            entry: dict[str, Any] = {
                "dagster/table_name": f"{dataset}.{table}",
                "audited_relation": f"{candidate.schema}.{table}",
            }
            if version is not None:
                entry |= diff.changes_against(lake, replaced[table], version)  # before pruning
                versions.prune_versions(lake, table, policy.settings.lake_keep_versions, log)
                if candidate.checkpoint is not None:
                    prune(lake, table, policy.settings.lake_keep_checkpoints, log)
                entry |= {
                    "version": version.id,
                    "version_path": path_metadata(version.data_uri),
                    "inputs": MetadataValue.json(version.inputs),
                }
            metadata[candidate.key] = entry
    return audit, metadata


def _keep_version(
    candidate: Candidate, audit: Audit, warehouse: Warehouse, lake: Lake, run_id: str
) -> versions.Version:
    """The version of `candidate` as audited: its checkpoint, or a Parquet export of it."""
    checks = sorted(o.name for o in audit.outcomes if o.passed and o.asset_key == candidate.key)
    manifest = {"run_id": run_id, "checks_passed": checks, "inputs": candidate.inputs}
    checkpoint, table = candidate.checkpoint, candidate.table
    if checkpoint is not None:
        key = versions.claim_version(lake, table, checkpoint.id)
        manifest |= {"rows": checkpoint.rows, "columns": checkpoint.manifest["columns"]}
        sha256 = checkpoint.manifest["sha256"]
        return versions.record_version(lake, key, table, sha256, manifest, checkpoint.data_uri)
    key = versions.claim_version(lake, table, candidate.version_id)
    exported = warehouse.export_relation(candidate.schema, table, lake, f"{key}/{DATA}")
    manifest |= {"rows": exported.rows, "columns": exported.columns}
    return versions.record_version(lake, key, table, exported.sha256, manifest)
