"""Raw `projects` and `tags`: write, audit, publish.

Each raw asset extracts its source into an immutable checkpoint in the lake, loads it
into `<dataset>_staging.<source>`, audits that staged table with its Great Expectations
suite (one asset check per expectation), and publishes it to `<dataset>.<source>` only
when no blocking expectation failed. The checkpoint's manifest records the audit's
outcome. A failed sync or audit never touches the published table, and nothing
downstream runs.
"""

import time
from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    ObserveResult,
    TableColumn,
    TableSchema,
    asset,
    multi_observable_source_asset,
)
from pydantic import Field

from mlstack_assets.ingestion.fingerprint import fingerprint
from mlstack_assets.ingestion.loader import AirbyteLoader, Extracted, SyncReport
from mlstack_assets.ingestion.sources import SourceError, SourceSpec
from mlstack_assets.lake.checkpoints import Checkpoint, prune, record_audit
from mlstack_assets.publish import (
    AuditFailed,
    Candidate,
    policy,
    publish_audited,
    volume_check_spec,
)
from mlstack_assets.quality.suites import Suite, load_suite
from mlstack_assets.quality.validation import import_great_expectations, validate_table
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Warehouse
from mlstack_assets.warehouse.deployment import WarehouseDeployment

INGESTION_GROUP = "ingestion"
OWNER = "team:mlstack"


def _url_metadata(spec: SourceSpec) -> MetadataValue:
    return MetadataValue.url(spec.url) if spec.is_remote else MetadataValue.path(spec.url)


def source_file_key(spec: SourceSpec) -> AssetKey:
    return AssetKey(f"{spec.name}_csv")


def build_source_file_asset(spec: SourceSpec) -> AssetsDefinition:
    """The CSV itself, outside Dagster's control: the first node of the lineage.

    Observing it records its fingerprint as the data version, so the UI shows when the
    source last changed and that the raw asset is stale.
    """
    key = source_file_key(spec)

    @multi_observable_source_asset(
        name=f"observe_{key.path[-1]}",
        specs=[
            AssetSpec(
                key=key,
                description=(
                    f"Source: the {spec.name}.csv file ({spec.env_var}), outside Dagster; its"
                    " data version is its fingerprint (ETag / Last-Modified / content hash)."
                ),
                group_name=INGESTION_GROUP,
                kinds={"csv"},
                owners=[OWNER],
                metadata={"url": _url_metadata(spec)},
            )
        ],
    )
    def observe_source_file():
        try:
            seen = fingerprint(spec)
        except SourceError as error:
            raise Failure(description=str(error), allow_retries=False) from None
        yield ObserveResult(
            asset_key=key,
            data_version=DataVersion(seen.value),
            metadata={"fingerprint": seen.value, "checked_by": seen.how},
        )

    return observe_source_file


def _checkpoint_metadata(checkpoint: Checkpoint) -> dict[str, Any]:
    uri = checkpoint.uri
    return {
        "checkpoint": MetadataValue.url(uri) if "://" in uri else MetadataValue.path(uri),
        "checkpoint_id": checkpoint.id,
        "checkpoint_sha256": checkpoint.manifest["sha256"],
    }


def published_metadata(
    spec: SourceSpec, warehouse: Warehouse, sync: SyncReport, checkpoint: Checkpoint
) -> dict:
    columns = warehouse.table_columns(warehouse.dataset, spec.name) or []
    return {
        "dagster/row_count": warehouse.row_count(warehouse.dataset, spec.name),
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name=name, type=dtype) for name, dtype in columns]
        ),
        "source_url": _url_metadata(spec),
        "records_synced": sync.records,
        **_checkpoint_metadata(checkpoint),
        **sync.metadata,
    }


class RawConfig(Config):
    """Per-run choices of a raw asset."""

    allow_row_drop: bool = Field(
        default=False,
        description="Publish even if the table lost more rows than MLSTACK_MAX_ROW_DROP_PERCENT"
        " (a deliberate shrink; recorded in the materialization).",
    )


def raw_sources_in_run(context: AssetExecutionContext, specs: list[SourceSpec]) -> list[SourceSpec]:
    """The sources whose raw steps this run executes (its asset selection and step keys)."""
    run = context.run
    return [
        spec
        for spec in specs
        if (run.asset_selection is None or AssetKey(spec.name) in run.asset_selection)
        and (run.step_keys_to_execute is None or spec.name in run.step_keys_to_execute)
    ]


def _stage(extracted: Extracted) -> float:
    """Copy the extract into the staging table (hold the warehouse lock); its seconds."""
    started = time.perf_counter()
    extracted.stage()
    seconds = time.perf_counter() - started
    extracted.report.metadata.setdefault("extract_seconds", {})["stage"] = round(seconds, 3)
    return seconds


def audit_and_publish(
    context: AssetExecutionContext,
    spec: SourceSpec,
    suite: Suite,
    warehouse: Warehouse,
    extracted: Extracted,
    seconds: dict[str, float],
    settings: Settings,
    allow_row_drop: bool,
) -> Iterator[Any]:
    """Audit the staged table with its suite, then the one audited publish (`publish.py`);
    record the outcome in the checkpoint's manifest."""
    sync, checkpoint = extracted.report, extracted.checkpoint
    key = AssetKey(spec.name)
    context.log.info(
        f"synced {sync.records} records into {warehouse.staging_dataset}.{spec.name}; auditing"
    )
    audit_started = time.perf_counter()
    validation = validate_table(
        warehouse, warehouse.staging_dataset, spec.name, suite, settings.data_docs_dir, key
    )
    seconds["audit"] = time.perf_counter() - audit_started
    candidate = Candidate(key, spec.name, warehouse.staging_dataset, checkpoint=checkpoint)
    publish_started = time.perf_counter()
    try:
        audit, published = publish_audited(
            f"source '{spec.name}' ({spec.url})",
            [candidate],
            validation.audit,
            warehouse,
            policy(settings, allow_row_drop),
            context.run_id,
            context.log.warning,
        )
    except AuditFailed as failed:
        record_audit(
            checkpoint,
            passed=False,
            failed_checks=failed.audit.failed_checks,
            published=False,
            run_id=context.run_id,
        )
        yield from failed.audit.results()
        raise failed.failure from None
    checkpoint = record_audit(
        checkpoint, passed=True, failed_checks=[], published=True, run_id=context.run_id
    )
    seconds["publish"] = time.perf_counter() - publish_started
    prune(checkpoint.lake, spec.name, settings.lake_keep_checkpoints, context.log.info)
    metadata = published[key]
    yield MaterializeResult(
        metadata={
            **published_metadata(spec, warehouse, sync, checkpoint),
            **metadata,
            **({"allow_row_drop": True} if allow_row_drop else {}),
            "seconds": MetadataValue.json({k: round(v, 3) for k, v in seconds.items()}),
        },
        check_results=audit.results(),
        data_version=DataVersion(metadata["version"]),
    )


def _failure_from(spec: SourceSpec, error: Exception) -> Failure:
    """The step's failure for a source that could not be read, or a lock never granted."""
    if isinstance(error, SourceError):
        return Failure(
            description=str(error),
            metadata={"source": spec.name, "source_url": _url_metadata(spec)},
            allow_retries=False,
        )
    return Failure(  # the warehouse lock (WarehouseLockTimeout)
        description=f"{spec.name}: nothing was staged or published: {error}",
        metadata={"source": spec.name},
    )


def build_raw_asset(
    spec: SourceSpec,
    settings: Settings,
    all_specs: list[SourceSpec],
    deployment: WarehouseDeployment,
) -> AssetsDefinition:
    """Write (sync into staging), audit (the GX suite, as blocking checks), publish.

    `all_specs`: every raw source, whose extracts the first raw step of a run starts
    together when the run's steps share a process (`AirbyteLoader.start_extracts`)."""
    suite = load_suite(spec.name)
    key = AssetKey(spec.name)

    @asset(
        key=key,
        deps=[source_file_key(spec)],
        description=(
            f"Extract-load, then validate: the Airbyte File source syncs {spec.name}.csv into"
            " an immutable checkpoint in the lake, loaded into"
            f" {settings.staging_dataset}.{spec.name} (Full refresh | Overwrite); its Great"
            " Expectations suite audits it there, and only then is it published to"
            f" {settings.dataset}.{spec.name}, atomically."
        ),
        group_name=INGESTION_GROUP,
        kinds={"airbyte", deployment.kind, "great_expectations"},
        owners=[OWNER],
        pool=deployment.pool,
        check_specs=[*suite.check_specs(key), volume_check_spec(key)],
    )
    def raw_asset(
        context: AssetExecutionContext,
        config: RawConfig,
        airbyte: AirbyteLoader,
        warehouse: Warehouse,
    ):
        started = time.perf_counter()
        try:
            airbyte.start_extracts(
                raw_sources_in_run(context, all_specs), context.run_id, context.log
            )
            # Great Expectations takes seconds to import: here, while the connector reads
            import_great_expectations()
            # no warehouse lock while the source is read: a slow or stalled source keeps
            # no other run waiting (`AirbyteLoader.extract`)
            with airbyte.extract(spec, warehouse, context.log, context.run_id) as extracted:
                seconds = {"extract_load": time.perf_counter() - started}
                with warehouse.session(purpose=f"stage, audit and publish {spec.name}"):
                    # the copy into staging is part of extract-load (the benchmark's stages)
                    seconds["extract_load"] += _stage(extracted)
                    yield from audit_and_publish(
                        context,
                        spec,
                        suite,
                        warehouse,
                        extracted,
                        seconds,
                        settings,
                        config.allow_row_drop,
                    )
        except (SourceError, TimeoutError) as error:
            raise _failure_from(spec, error) from None

    return raw_asset
