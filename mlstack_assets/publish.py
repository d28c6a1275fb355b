"""The one audited publish, for raw tables, dbt's models and the ML tables alike.

Each layer builds its tables where readers do not look (`<dataset>_staging` for raw
extracts, `<dataset>_audit` for dbt's models and the ML tables), evaluates its blocking
checks there into one `Audit` (GX suites, dbt tests, SQL checks), and hands both to
`publish_audited`, which, in one warehouse session:

1. adds the volume guard for the tables it applies to (the raw tables, labeled_projects):
   a row count more than `MLSTACK_MAX_ROW_DROP_PERCENT` below the version it would replace
   fails, naming both counts, unless the run allows it (`allow_row_drop`);
2. fails the step with one report (what failed, where the audited rows are, what was
   kept) when any blocking check failed: nothing is published;
3. otherwise keeps a version of each table in the lake (a raw table's version is its
   checkpoint; a derived table's is exported from the audited relation), replaces the
   published tables atomically, makes the new versions current and prunes old ones;
4. returns, per table, the metadata every materialization carries: the published and
   audited relations, the version and the versions it was built from.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dagster import AssetCheckSpec, AssetKey, Failure, MetadataValue

from mlstack_assets.lake import Lake, utc_label
from mlstack_assets.lake.checkpoints import Checkpoint, prune
from mlstack_assets.lake.restore import path_metadata
from mlstack_assets.lake.versions import (
    VERSIONED_TABLES,
    Version,
    claim_version,
    current_version,
    make_current,
    prune_versions,
    record_version,
)
from mlstack_assets.quality.outcomes import Audit, CheckOutcome
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

    @property
    def versioned(self) -> bool:
        return self.view_sql is None and self.table in VERSIONED_TABLES


@dataclass(frozen=True)
class Policy:
    """What a publish may do, from the settings and the run."""

    lake: str
    dataset: str
    keep_versions: int
    keep_checkpoints: int
    max_row_drop_percent: float
    allow_row_drop: bool = False


def policy(settings: Any, allow_row_drop: bool = False) -> Policy:
    """The publish policy of these `Settings` for a run."""
    return Policy(
        lake=settings.lake,
        dataset=settings.dataset,
        keep_versions=settings.lake_keep_versions,
        keep_checkpoints=settings.lake_keep_checkpoints,
        max_row_drop_percent=settings.max_row_drop_percent,
        allow_row_drop=allow_row_drop,
    )


class AuditFailed(Exception):
    """The audit blocked the publish: `failure` for the step, `audit` for its check results."""

    def __init__(self, audit: Audit, failure: Failure):
        super().__init__(failure.description)
        self.audit = audit
        self.failure = failure


def volume_outcome(candidate: Candidate, rows: int, lake: Lake, policy: Policy) -> CheckOutcome:
    """The volume guard: `rows` against the current version of the table."""
    current = current_version(lake, candidate.table)
    if current is None:
        summary = f"{rows} rows; no published version to compare with yet"
        return CheckOutcome(candidate.key, VOLUME_CHECK, True, summary, metadata={"rows": rows})
    before, limit = current.rows, policy.max_row_drop_percent
    drop = 100.0 * (before - rows) / before if before else 0.0
    metadata: dict[str, Any] = {
        "rows": rows,
        "published_rows": before,
        "published_version": current.id,
        "drop_percent": round(drop, 2),
        "max_row_drop_percent": limit,
    }
    if drop <= limit:
        summary = f"{rows} rows against {before} in version {current.id} ({drop:.1f}% fewer)"
        return CheckOutcome(candidate.key, VOLUME_CHECK, True, summary, metadata=metadata)
    summary = (
        f"{rows} rows, {before} in the published version {current.id}: {drop:.1f}% fewer, more"
        f" than MLSTACK_MAX_ROW_DROP_PERCENT={limit:g}"
    )
    if policy.allow_row_drop:  # the run says the shrink is deliberate
        return CheckOutcome(
            candidate.key,
            VOLUME_CHECK,
            True,
            summary + "; allowed for this run (allow_row_drop)",
            metadata={**metadata, "allowed_by": "allow_row_drop"},
            notice=f"row drop allowed for this run: {summary}",
        )
    summary += (
        "; if the shrink is deliberate: mlstack run --allow-row-drop (run config allow_row_drop)"
    )
    return CheckOutcome(candidate.key, VOLUME_CHECK, False, summary, metadata=metadata)


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
    kept = (
        "was not replaced (it keeps its"
        if len(published) == 1
        else "were not replaced (they keep their"
    )
    return (
        f"{subject}: {' and '.join(what)}, so {', '.join(published)} {kept} previous content);"
        f" the audited rows are in {', '.join(audited)}.\n{audit.report(name_assets)}"
    )


def audit_failed(
    subject: str,
    audit: Audit,
    candidates: Sequence[Candidate],
    policy: Policy,
    name_assets: bool | None = None,
) -> AuditFailed:
    """The exception a step raises when `audit` blocks the publish of `candidates`."""
    published = [f"{policy.dataset}.{c.table}" for c in candidates]
    audited = [f"{c.schema}.{c.table}" for c in candidates]
    audited += [c.checkpoint.uri for c in candidates if c.checkpoint is not None]
    description = failure_description(subject, audit, published, audited, name_assets)
    metadata = {
        "audited_relations": MetadataValue.json(audited),
        "failed_checks": MetadataValue.json(audit.failed_checks),
    }
    return AuditFailed(audit, Failure(description, metadata=metadata, allow_retries=False))


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
    """Publish `candidates` if `audit` and the volume guard pass, else raise `AuditFailed`.
    Returns the whole audit and each table's materialization metadata. `name_assets`:
    whether the report's lines name their asset (default: when there are several)."""
    # one session from the volume guard to the new current versions: nobody sees published
    # rows beside the previous version's pointer, or publishes between guard and replace
    with warehouse.session(purpose=f"publish {subject}"):
        lake = Lake(policy.lake)
        for candidate in candidates:
            if candidate.table in VOLUME_GUARDED and candidate.view_sql is None:
                rows = warehouse.row_count(candidate.schema, candidate.table)
                audit = audit + Audit([volume_outcome(candidate, rows, lake, policy)])
        for warning in audit.warnings():
            log(warning)
        if not audit.passed:
            raise audit_failed(subject, audit, candidates, policy, name_assets)
        passed: dict[AssetKey, list[str]] = {}
        for outcome in audit.outcomes:
            if outcome.passed:
                passed.setdefault(outcome.asset_key, []).append(outcome.name)
        versions = {
            c.key: _keep_version(c, warehouse, lake, run_id, passed.get(c.key, []))
            for c in candidates
            if c.versioned
        }
        for schema in dict.fromkeys(c.schema for c in candidates):
            group = [c for c in candidates if c.schema == schema]
            warehouse.publish_relations(
                schema,
                tables=[c.table for c in group if c.view_sql is None],
                views={c.table: c.view_sql for c in group if c.view_sql is not None},
            )
        metadata = {}
        for candidate in candidates:
            entry: dict[str, Any] = {
                "dagster/table_name": f"{policy.dataset}.{candidate.table}",
                "audited_relation": f"{candidate.schema}.{candidate.table}",
            }
            version = versions.get(candidate.key)
            if version is not None:
                make_current(lake, candidate.table, version.id, run_id=run_id)
                prune_versions(lake, candidate.table, policy.keep_versions, log)
                if candidate.checkpoint is not None:
                    prune(lake, candidate.table, policy.keep_checkpoints, log)
                entry |= {
                    "version": version.id,
                    "version_path": path_metadata(version.data_uri),
                    "inputs": MetadataValue.json(version.inputs),
                }
            metadata[candidate.key] = entry
    return audit, metadata


def _keep_version(
    candidate: Candidate, warehouse: Warehouse, lake: Lake, run_id: str, checks: list[str]
) -> Version:
    """The version of `candidate` as audited: its checkpoint, or a Parquet export of it."""
    manifest: dict[str, Any] = {
        "run_id": run_id,
        "checks_passed": sorted(checks),
        "inputs": candidate.inputs,
    }
    checkpoint = candidate.checkpoint
    if checkpoint is not None:
        key = claim_version(lake, candidate.table, checkpoint.id)
        manifest |= {"rows": checkpoint.rows, "columns": checkpoint.manifest["columns"]}
        sha256 = checkpoint.manifest["sha256"]
        return record_version(lake, key, candidate.table, sha256, manifest, checkpoint.data_uri)
    key = claim_version(lake, candidate.table, candidate.version_id)
    exported = warehouse.export_relation(
        candidate.schema, candidate.table, lake, f"{key}/data.parquet"
    )
    manifest |= {"rows": exported.rows, "columns": exported.columns}
    return record_version(lake, key, candidate.table, exported.sha256, manifest)
