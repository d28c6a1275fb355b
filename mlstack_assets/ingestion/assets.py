"""The raw tables: every registered source synced, audited and published by one step.

`airbyte_sync` is one multi-asset over the sources (`sources.SOURCES`), subsettable, so
the sensor reruns only what a changed source feeds. It starts every selected source's
extract at once (`AirbyteLoader.extract`: the connectors read concurrently, no lock held),
imports Great Expectations meanwhile, then, source by source in one warehouse session
each: loads the checkpoint into `<dataset>_staging.<source>`, audits it with the source's
GX suite (one asset check per expectation) and the volume guard, and publishes it to
`<dataset>.<source>` only when no blocking check failed (`publish.py`). A source that
fails leaves its published table as it was; the others still publish; the step then
fails naming every failed source, and nothing downstream runs. Each source's CSV is an
observable asset upstream of its raw table: its data version is the file's fingerprint.
"""

import time
from collections.abc import Iterator
from contextlib import closing
from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Config,
    DataVersion,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    ObserveResult,
    TableColumn,
    TableSchema,
    multi_asset,
    multi_observable_source_asset,
    with_source_code_references,
)
from pydantic import Field

from mlstack_assets.ingestion.fingerprint import fingerprint
from mlstack_assets.ingestion.loader import AirbyteLoader, Extracted
from mlstack_assets.ingestion.sources import SourceError, SourceSpec, source_specs
from mlstack_assets.lake import Lake
from mlstack_assets.lake.checkpoints import record_audit
from mlstack_assets.lake.restore import path_metadata
from mlstack_assets.publish import (
    AuditFailed,
    Candidate,
    policy,
    publish_audited,
    volume_check_spec,
    volume_outcome,
)
from mlstack_assets.quality.outcomes import Audit
from mlstack_assets.quality.suites import load_suite
from mlstack_assets.quality.validation import import_great_expectations, validate_table
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Warehouse
from mlstack_assets.warehouse.deployment import WarehouseDeployment

INGESTION_GROUP = "ingestion"
OWNER = "team:mlstack"


def source_file_key(spec: SourceSpec) -> AssetKey:
    return AssetKey(f"{spec.name}_csv")


def _url_metadata(spec: SourceSpec) -> MetadataValue:
    return MetadataValue.url(spec.url) if spec.is_remote else MetadataValue.path(spec.url)


def build_source_file_asset(spec: SourceSpec) -> AssetsDefinition:
    """The CSV itself, outside Dagster's control: the first node of the lineage. Observing
    it records its fingerprint as the data version, so the UI shows when the source last
    changed and that its raw table is stale."""
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


class RawConfig(Config):
    """Per-run choices of the raw step."""

    allow_row_drop: bool = Field(
        default=False,
        description="Publish even if a table lost more rows than MLSTACK_MAX_ROW_DROP_PERCENT"
        " (a deliberate shrink; recorded in the materialization).",
    )


def published_metadata(
    spec: SourceSpec, warehouse: Warehouse, extracted: Extracted, published: dict[str, Any]
) -> dict[str, Any]:
    checkpoint = extracted.checkpoint
    columns = warehouse.table_columns(warehouse.dataset, spec.name) or []
    return {
        "dagster/row_count": warehouse.row_count(warehouse.dataset, spec.name),
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name=name, type=dtype) for name, dtype in columns]
        ),
        "source_url": _url_metadata(spec),
        "records_synced": extracted.records,
        "checkpoint": path_metadata(checkpoint.uri),
        "checkpoint_id": checkpoint.id,
        "checkpoint_sha256": checkpoint.manifest["sha256"],
        **extracted.metadata,
        **published,
    }


def audit_and_publish(
    context: AssetExecutionContext,
    spec: SourceSpec,
    extracted: Extracted,
    warehouse: Warehouse,
    settings: Settings,
    allow_row_drop: bool,
    seconds: dict[str, float],
) -> Iterator[MaterializeResult | AssetCheckResult]:
    """Stage the extract, audit it with its suite, then the one audited publish; the
    checkpoint's manifest records the outcome. Raises `AuditFailed` when it blocks."""
    key, staging = AssetKey(spec.name), warehouse.staging_dataset
    checkpoint = extracted.checkpoint
    with warehouse.session(purpose=f"stage, audit and publish {spec.name}"):
        started = time.perf_counter()
        if not extracted.staged:
            try:
                warehouse.stage_checkpoint(spec.name, checkpoint)
            except Exception as error:
                context.log.debug(f"error while staging {spec.name}: {error!r}")
                first = next(iter(str(error).strip().splitlines()), "")[:300]
                raise SourceError(
                    spec,
                    f"loading the checkpoint into staging failed: {type(error).__name__}: {first}",
                ) from None
        seconds["extract_load"] += time.perf_counter() - started
        context.log.info(f"synced {extracted.records} records into {staging}.{spec.name}; auditing")
        started = time.perf_counter()
        suite = load_suite(spec.name)
        validation = validate_table(
            warehouse, staging, spec.name, suite, settings.data_docs_dir, key
        )
        seconds["audit"] = time.perf_counter() - started
        started = time.perf_counter()
        try:
            audit, published = publish_audited(
                f"source '{spec.name}' ({spec.url})",
                [Candidate(key, spec.name, staging, checkpoint=checkpoint)],
                validation.audit,
                warehouse,
                policy(settings, allow_row_drop),
                context.run_id,
                context.log.warning,
            )
        except AuditFailed as failed:
            record_audit(checkpoint, False, failed.audit.failed_checks, False, context.run_id)
            raise
        checkpoint = record_audit(checkpoint, True, [], True, context.run_id)
        seconds["publish"] = time.perf_counter() - started
        extracted.checkpoint = checkpoint
        yield MaterializeResult(
            asset_key=key,
            metadata={
                **published_metadata(spec, warehouse, extracted, published[key]),
                **({"allow_row_drop": True} if allow_row_drop else {}),
                "seconds": MetadataValue.json({k: round(v, 3) for k, v in seconds.items()}),
            },
            check_results=audit.results(),
            data_version=DataVersion(published[key]["version"]),
        )


def checks_on_published(
    context: AssetExecutionContext,
    specs: list[SourceSpec],
    warehouse: Warehouse,
    settings: Settings,
) -> Iterator[AssetCheckResult]:
    """The selected checks run alone (the UI's "Execute" on a check): on the published
    tables, changing nothing."""
    selected = context.selected_asset_check_keys
    with warehouse.session(purpose="run the selected checks on the published raw tables"):
        for spec in specs:
            key = AssetKey(spec.name)
            wanted = {check.name for check in selected if check.asset_key == key}
            if not wanted:
                continue
            suite = load_suite(spec.name)
            audit = validate_table(
                warehouse, warehouse.dataset, spec.name, suite, settings.data_docs_dir, key
            ).audit
            rows = warehouse.row_count(warehouse.dataset, spec.name)
            candidate = Candidate(key, spec.name, warehouse.dataset)
            lake = Lake(settings.lake)
            audit = audit + Audit([volume_outcome(candidate, rows, lake, policy(settings))])
            yield from (r for r in audit.results() if r.check_name in wanted)


def build_raw_asset(settings: Settings, deployment: WarehouseDeployment) -> AssetsDefinition:
    """Extract-load every source, audit each with its GX suite and the volume guard, publish."""
    specs = source_specs(settings)
    keys = [AssetKey(spec.name) for spec in specs]

    @multi_asset(
        name="airbyte_sync",
        specs=[
            AssetSpec(
                key=key,
                deps=[source_file_key(spec)],
                description=(
                    f"Extract-load, then validate: the Airbyte File source syncs {spec.name}.csv"
                    " into an immutable checkpoint in the lake, loaded into"
                    f" {settings.staging_dataset}.{spec.name} (Full refresh | Overwrite); its"
                    " Great Expectations suite audits it there, and only then is it published"
                    f" to {settings.dataset}.{spec.name}, atomically."
                ),
                group_name=INGESTION_GROUP,
                kinds={"airbyte", deployment.kind, "great_expectations"},
                owners=[OWNER],
            )
            for key, spec in zip(keys, specs, strict=True)
        ],
        check_specs=[
            spec
            for key in keys
            for spec in [*load_suite(key.path[-1]).check_specs(key), volume_check_spec(key)]
        ],
        can_subset=True,
    )
    def airbyte_sync(
        context: AssetExecutionContext,
        config: RawConfig,
        airbyte: AirbyteLoader,
        warehouse: Warehouse,
    ):
        selected = [s for s in specs if AssetKey(s.name) in context.selected_asset_keys]
        if not selected:  # only checks were selected
            yield from checks_on_published(context, specs, warehouse, settings)
            return
        started = time.perf_counter()
        failures: list[Failure] = []
        with closing(airbyte.extract(selected, warehouse, context.run_id, context.log)) as synced:
            import_great_expectations()  # seconds of imports, while the connectors read
            for spec, extracted in synced:
                seconds = {"extract_load": time.perf_counter() - started}
                try:
                    if isinstance(extracted, SourceError):
                        raise extracted
                    yield from audit_and_publish(
                        context,
                        spec,
                        extracted,
                        warehouse,
                        settings,
                        config.allow_row_drop,
                        seconds,
                    )
                except AuditFailed as failed:
                    yield from failed.audit.results()
                    failures.append(failed.failure)
                except SourceError as error:
                    metadata = {"source": spec.name, "source_url": _url_metadata(spec)}
                    failures.append(Failure(str(error), metadata=metadata, allow_retries=False))
                except TimeoutError as error:  # the warehouse lock was never granted
                    failures.append(
                        Failure(f"{spec.name}: nothing was staged or published: {error}")
                    )
                started = time.perf_counter()
        if len(failures) == 1:
            raise failures[0]
        if failures:
            raise Failure("\n\n".join(f.description or "" for f in failures), allow_retries=False)

    return airbyte_sync


def build_airbyte_loader(settings: Settings) -> AirbyteLoader:
    """The connector run by mlstack by default; an Airbyte server or Cloud when
    MLSTACK_AIRBYTE says so."""
    if settings.airbyte != "embedded":
        from mlstack_assets.ingestion.server import build_server_loader

        return build_server_loader(settings)
    from mlstack_assets.ingestion.embedded import EmbeddedAirbyte

    return EmbeddedAirbyte(
        lake=settings.lake,
        connector_dir=str(settings.connector_dir),
        source_timeout_seconds=settings.source_timeout_seconds,
        source_retries=settings.source_retries,
        source_deadline_seconds=settings.source_deadline_seconds,
        connector_timeout_seconds=settings.connector_timeout_seconds,
        memory_limit=settings.duckdb_memory_limit,
    )


def build_ingestion_definitions(settings: Settings, deployment: WarehouseDeployment) -> Definitions:
    observations = [build_source_file_asset(spec) for spec in source_specs(settings)]
    return Definitions(
        assets=with_source_code_references([*observations, build_raw_asset(settings, deployment)]),
        resources={"airbyte": build_airbyte_loader(settings)},
    )
