"""The raw tables: every source synced, audited and published by one step, `airbyte_sync`.

Subsettable, so the sensor reruns only what a changed source feeds. All extracts start at
once; each is then staged, audited (GX suite + volume guard) and published unless a blocking
check failed; a failed source keeps its published table and fails the step by name. Each
source's CSV is an observable asset upstream, versioned by its fingerprint.
"""

import time
from collections.abc import Iterator
from contextlib import closing, contextmanager

import dagster as dg
from pydantic import Field

from mlstack_assets import publish
from mlstack_assets.ingestion.fingerprint import fingerprint
from mlstack_assets.ingestion.loader import AirbyteLoader, Extracted
from mlstack_assets.ingestion.sources import SourceError, SourceSpec, source_specs
from mlstack_assets.lake.checkpoints import record_audit
from mlstack_assets.lake.restore import path_metadata
from mlstack_assets.lake.versions import warehouse_lake
from mlstack_assets.quality.outcomes import Audit
from mlstack_assets.quality.suites import load_suite
from mlstack_assets.quality.validation import import_great_expectations, validate_table
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Warehouse
from mlstack_assets.warehouse.deployment import WarehouseDeployment

INGESTION_GROUP = "ingestion"
OWNER = "team:mlstack"


def source_file_key(spec: SourceSpec) -> dg.AssetKey:
    """The asset key of a source's CSV file."""
    return dg.AssetKey(f"{spec.name}_csv")


def _url_metadata(spec: SourceSpec) -> dg.MetadataValue:
    return dg.MetadataValue.url(spec.url) if spec.is_remote else dg.MetadataValue.path(spec.url)


@contextmanager
def _timed(seconds: dict[str, float], step: str) -> Iterator[None]:
    """Add the block's duration to `seconds[step]` when it succeeds."""
    started = time.perf_counter()
    yield
    seconds[step] = seconds.get(step, 0.0) + time.perf_counter() - started


def _audit(warehouse: Warehouse, dataset: str, spec: SourceSpec, settings: Settings) -> Audit:
    """The source's GX suite run on `<dataset>.<source>`."""
    suite, key = load_suite(spec.name), dg.AssetKey(spec.name)
    return validate_table(warehouse, dataset, spec.name, suite, settings.data_docs_dir, key).audit


def build_source_file_asset(spec: SourceSpec) -> dg.AssetsDefinition:
    """The CSV itself, outside Dagster: observing it records its fingerprint as the data
    version, so the UI shows when the source changed and that its raw table is stale."""
    key = source_file_key(spec)
    description = (
        f"Source: the {spec.name}.csv file ({spec.env_var}), outside Dagster; its data"
        " version is its fingerprint (ETag / Last-Modified / content hash)."
    )

    @dg.multi_observable_source_asset(
        name=f"observe_{key.path[-1]}",
        specs=[
            dg.AssetSpec(
                key,
                description=description,
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
            raise dg.Failure(description=str(error), allow_retries=False) from None
        metadata = {"fingerprint": seen.value, "checked_by": seen.how}
        yield dg.ObserveResult(
            asset_key=key, data_version=dg.DataVersion(seen.value), metadata=metadata
        )

    return observe_source_file


class RawConfig(dg.Config):
    """Per-run choices of the raw step."""

    allow_row_drop: bool = Field(
        default=False,
        description="Publish even if a table lost more rows than MLSTACK_MAX_ROW_DROP_PERCENT"
        " (a deliberate shrink; recorded in the materialization).",
    )


def audit_and_publish(
    context: dg.AssetExecutionContext,
    spec: SourceSpec,
    extracted: Extracted,
    warehouse: Warehouse,
    rules: publish.Policy,
    seconds: dict[str, float],
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    """Stage the extract, audit it with its suite, then the one audited publish; the
    checkpoint's manifest records the outcome. Raises `AuditFailed` when it blocks."""
    key, staging, dataset = dg.AssetKey(spec.name), warehouse.staging_dataset, warehouse.dataset
    run_id, checkpoint = context.run_id, extracted.checkpoint
    with warehouse.session(purpose=f"stage, audit and publish {spec.name}"):
        with _timed(seconds, "extract_load"):
            try:
                if not extracted.staged:
                    warehouse.stage_checkpoint(spec.name, checkpoint)
            except Exception as error:
                context.log.debug(f"error while staging {spec.name}: {error!r}")
                first = next(iter(str(error).strip().splitlines()), "")[:300]
                failed = f"loading the checkpoint into staging failed: {type(error).__name__}"
                raise SourceError(spec, f"{failed}: {first}") from None
        context.log.info(f"synced {extracted.records} records into {staging}.{spec.name}; auditing")
        with _timed(seconds, "audit"):
            audit = _audit(warehouse, staging, spec, rules.settings)
        with _timed(seconds, "publish"):
            candidate = publish.Candidate(key, spec.name, staging, checkpoint=checkpoint)
            try:
                audit, published = publish.publish_audited(
                    f"source '{spec.name}' ({spec.url})",
                    [candidate],
                    audit,
                    warehouse,
                    rules,
                    run_id,
                    context.log.warning,
                )
            except publish.AuditFailed as failed:
                record_audit(checkpoint, False, failed.audit.failed_checks, False, run_id)
                raise
            checkpoint = extracted.checkpoint = record_audit(checkpoint, True, [], True, run_id)
        columns = warehouse.table_columns(dataset, spec.name) or []
        yield dg.MaterializeResult(
            asset_key=key,
            metadata={
                "dagster/row_count": warehouse.row_count(dataset, spec.name),
                "dagster/column_schema": dg.TableSchema(
                    columns=[dg.TableColumn(name=name, type=dtype) for name, dtype in columns]
                ),
                "source_url": _url_metadata(spec),
                "records_synced": extracted.records,
                "checkpoint": path_metadata(checkpoint.uri),
                "checkpoint_id": checkpoint.id,
                "checkpoint_sha256": checkpoint.manifest["sha256"],
                **extracted.metadata,
                **published[key],
                **({"allow_row_drop": True} if rules.allow_row_drop else {}),
                "seconds": dg.MetadataValue.json({k: round(v, 3) for k, v in seconds.items()}),
            },
            check_results=audit.results(),
            data_version=dg.DataVersion(published[key]["version"]),
        )


def checks_on_published(
    context: dg.AssetExecutionContext,
    specs: list[SourceSpec],
    warehouse: Warehouse,
    settings: Settings,
) -> Iterator[dg.AssetCheckResult]:
    """The selected checks run alone (the UI's "Execute" on a check): on the published
    tables, changing nothing. The volume guard compares a table with its current version,
    so it fails only when rows were removed outside mlstack."""
    dataset, lake, rules = warehouse.dataset, warehouse_lake(settings), publish.policy(settings)
    with warehouse.session(purpose="run the selected checks on the published raw tables"):
        for spec in specs:
            key = dg.AssetKey(spec.name)
            wanted = {c.name for c in context.selected_asset_check_keys if c.asset_key == key}
            if wanted:
                rows = warehouse.row_count(dataset, spec.name)
                candidate = publish.Candidate(key, spec.name, dataset)
                volume = publish.volume_outcome(candidate, rows, lake, rules)
                audit = _audit(warehouse, dataset, spec, settings) + Audit([volume])
                yield from (r for r in audit.results() if r.check_name in wanted)


def build_raw_asset(settings: Settings, deployment: WarehouseDeployment) -> dg.AssetsDefinition:
    """Extract-load every source, audit each with its GX suite and the volume guard, publish."""
    specs = source_specs(settings)
    keys = [dg.AssetKey(spec.name) for spec in specs]

    @dg.multi_asset(
        name="airbyte_sync",
        specs=[
            dg.AssetSpec(
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
            check
            for key in keys
            for check in [
                *load_suite(key.path[-1]).check_specs(key),
                publish.volume_check_spec(key),
            ]
        ],
        can_subset=True,
    )
    def airbyte_sync(
        context: dg.AssetExecutionContext,
        config: RawConfig,
        airbyte: AirbyteLoader,
        warehouse: Warehouse,
    ):
        selected = [s for s in specs if dg.AssetKey(s.name) in context.selected_asset_keys]
        if not selected:  # only checks were selected
            yield from checks_on_published(context, specs, warehouse, settings)
            return
        rules, failures = publish.policy(settings, config.allow_row_drop), []
        started = time.perf_counter()
        with closing(airbyte.extract(selected, warehouse, context.run_id, context.log)) as synced:
            import_great_expectations()  # seconds of imports, while the connectors read
            for spec, extracted in synced:
                seconds = {"extract_load": time.perf_counter() - started}
                try:
                    if isinstance(extracted, SourceError):
                        raise extracted
                    yield from audit_and_publish(
                        context, spec, extracted, warehouse, rules, seconds
                    )
                except publish.AuditFailed as failed:
                    yield from failed.audit.results()
                    failures.append(failed.failure)
                except SourceError as error:
                    metadata = {"source": spec.name, "source_url": _url_metadata(spec)}
                    failures.append(dg.Failure(str(error), metadata=metadata, allow_retries=False))
                except TimeoutError as error:  # the warehouse lock was never granted
                    nothing = f"{spec.name}: nothing was staged or published: {error}"
                    failures.append(dg.Failure(nothing))
                started = time.perf_counter()
        if failures:
            joined = "\n\n".join(f.description or "" for f in failures)
            raise failures[0] if len(failures) == 1 else dg.Failure(joined, allow_retries=False)

    return airbyte_sync


def build_airbyte_loader(settings: Settings) -> AirbyteLoader:
    """The connector run by mlstack by default; an Airbyte server or Cloud when
    MLSTACK_AIRBYTE says so."""
    if settings.airbyte != "embedded":
        from mlstack_assets.ingestion.server import build_server_loader

        return build_server_loader(settings)
    from mlstack_assets.ingestion.embedded import EmbeddedAirbyte

    return EmbeddedAirbyte(
        lake=settings.warehouse_lake,
        connector_dir=str(settings.connector_dir),
        source_timeout_seconds=settings.source_timeout_seconds,
        source_retries=settings.source_retries,
        source_deadline_seconds=settings.source_deadline_seconds,
        source_low_speed_bytes_per_second=settings.source_low_speed_bytes_per_second,
        source_low_speed_seconds=settings.source_low_speed_seconds,
        connector_timeout_seconds=settings.connector_timeout_seconds,
        memory_limit=settings.duckdb_memory_limit,
    )


def build_ingestion_definitions(
    settings: Settings, deployment: WarehouseDeployment
) -> dg.Definitions:
    """The source files, the raw multi-asset and the `airbyte` resource."""
    assets = [
        *map(build_source_file_asset, source_specs(settings)),
        build_raw_asset(settings, deployment),
    ]
    return dg.Definitions(
        assets=dg.with_source_code_references(assets),
        resources={"airbyte": build_airbyte_loader(settings)},
    )
