"""Raw `projects` and `tags`: an Airbyte sync into staging, then an atomic publish.

Each raw asset writes to `<dataset>_staging.<source>` first and publishes to
`<dataset>.<source>` only at the end, so a failed sync never touches the published table.
"""

from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)

from mlstack_assets.ingestion.connector import CONNECTOR_NAME, CONNECTOR_VERSION
from mlstack_assets.ingestion.embedded import sync_to_staging
from mlstack_assets.ingestion.preflight import preflight
from mlstack_assets.ingestion.sources import SourceError, SourceSpec
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Warehouse

INGESTION_GROUP = "ingestion"
OWNER = "team:mlstack"


def _url_metadata(spec: SourceSpec) -> MetadataValue:
    return MetadataValue.url(spec.url) if spec.is_remote else MetadataValue.path(spec.url)


def source_file_key(spec: SourceSpec) -> AssetKey:
    return AssetKey(f"{spec.name}_csv")


def build_source_file_spec(spec: SourceSpec) -> AssetSpec:
    """The CSV itself, outside Dagster's control: the first node of the lineage."""
    return AssetSpec(
        key=source_file_key(spec),
        description=f"The {spec.name}.csv source file ({spec.env_var}).",
        group_name=INGESTION_GROUP,
        kinds={"csv"},
        owners=[OWNER],
        metadata={"url": _url_metadata(spec)},
    )


def published_metadata(spec: SourceSpec, warehouse: Warehouse, records: int) -> dict:
    columns = warehouse.table_columns(warehouse.dataset, spec.name) or []
    return {
        "dagster/row_count": warehouse.row_count(warehouse.dataset, spec.name),
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name=name, type=dtype) for name, dtype in columns]
        ),
        "dagster/table_name": f"{warehouse.dataset}.{spec.name}",
        "source_url": _url_metadata(spec),
        "connector": f"airbyte/{CONNECTOR_NAME} {CONNECTOR_VERSION}",
        "records_synced": records,
        "staging_table": f"{warehouse.staging_dataset}.{spec.name}",
    }


def build_raw_asset(spec: SourceSpec, settings: Settings, pool: str | None) -> AssetsDefinition:
    @asset(
        name=spec.name,
        deps=[source_file_key(spec)],
        description=(
            f"Raw {spec.name}: the Airbyte File source syncs {spec.name}.csv into staging"
            " (Full refresh | Overwrite), then the table is published atomically."
        ),
        group_name=INGESTION_GROUP,
        kinds={"airbyte", settings.warehouse},
        owners=[OWNER],
        pool=pool,
    )
    def raw_asset(context: AssetExecutionContext, warehouse: Warehouse) -> MaterializeResult:
        with warehouse.exclusive():
            try:
                preflight(spec)
                records = sync_to_staging(spec, warehouse, settings)
            except SourceError as error:
                raise Failure(
                    description=str(error),
                    metadata={"source": spec.name, "source_url": _url_metadata(spec)},
                    allow_retries=False,
                ) from None
            context.log.info(
                f"synced {records} records into {warehouse.staging_dataset}.{spec.name}"
            )
            warehouse.publish(spec.name)
            return MaterializeResult(metadata=published_metadata(spec, warehouse, records))

    return raw_asset
