"""BigQuery: the production warehouse, through dagster-gcp's resource and IO manager."""

import itertools
from collections.abc import Sequence
from typing import Any

from dagster import get_dagster_logger
from dagster_gcp import BigQueryResource
from dagster_gcp.bigquery.io_manager import BigQueryClient
from dagster_gcp_pandas import BigQueryPandasIOManager, BigQueryPandasTypeHandler

from mlstack_assets.compat.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Exported, TableColumns, Warehouse
from mlstack_assets.warehouse.relations import RelationTypeHandler, ReplacingDbIOManager

RETRY_INITIAL_SECONDS = 1.0  # then 2, 4, 8, 8, ... until RETRY_TIMEOUT_SECONDS in all
RETRY_MAXIMUM_SECONDS = 8.0
RETRY_TIMEOUT_SECONDS = 60.0


# a bound on waiting for one load, copy or extract job
JOB_TIMEOUT_SECONDS = 900.0
# DuckDB's types in a checkpoint's manifest, as BigQuery columns
BIGQUERY_TYPES = {"VARCHAR": "STRING", "TIMESTAMP": "TIMESTAMP", "JSON": "JSON", "BIGINT": "INT64"}


def _needs_cloud_storage(lake: Any) -> None:
    if not lake.is_gcs:
        raise ValueError(
            f"BigQuery loads and exports checkpoints through Cloud Storage, and the lake is"
            f" {lake.root}: set MLSTACK_LAKE=gs://bucket/prefix"
        )


def transient_retry(what: str) -> Any:
    """google-api-core's `Retry` for mlstack's BigQuery API calls: transient errors only
    (connection errors, 429, 500, 502, 503, 504), exponential backoff, at most
    RETRY_TIMEOUT_SECONDS in all, each retry logged (the client's default retries silently,
    and retries other errors too). A bad query (400), a missing table (404) or a denied
    call (403) fails at once."""
    import requests
    from google.api_core import exceptions
    from google.api_core import retry as retries

    logger = get_dagster_logger("mlstack.bigquery")
    attempts = itertools.count(1)

    def log_retry(error: Exception) -> None:
        logger.warning(
            f"BigQuery {what}: {type(error).__name__}: {str(error)[:200]}; retry"
            f" {next(attempts)} (backoff {RETRY_INITIAL_SECONDS:g} s to"
            f" {RETRY_MAXIMUM_SECONDS:g} s, for at most {RETRY_TIMEOUT_SECONDS:g} s in all)"
        )

    return retries.Retry(
        predicate=retries.if_exception_type(
            exceptions.TooManyRequests,
            exceptions.InternalServerError,
            exceptions.BadGateway,
            exceptions.ServiceUnavailable,
            exceptions.GatewayTimeout,
            requests.exceptions.ConnectionError,
            ConnectionError,
        ),
        initial=RETRY_INITIAL_SECONDS,
        maximum=RETRY_MAXIMUM_SECONDS,
        multiplier=2.0,
        timeout=RETRY_TIMEOUT_SECONDS,
        on_error=log_retry,
    )


class BigQueryWarehouse(Warehouse):
    """A BigQuery dataset; publishing is a table copy job with WRITE_TRUNCATE (atomic)."""

    bigquery: BigQueryResource

    @property
    def kind(self) -> str:
        return "bigquery"

    @property
    def project(self) -> str:
        return self.bigquery.project or ""

    @property
    def location(self) -> str:
        return self.bigquery.location or "US"

    def qualified(self, schema: str, table: str) -> str:
        return f"`{self.project}.{schema}.{table}`"

    def table_columns(self, schema: str, table: str) -> TableColumns | None:
        from google.api_core.exceptions import NotFound

        with self.bigquery.get_client() as client:
            try:
                bq_table = client.get_table(
                    f"{self.project}.{schema}.{table}", retry=transient_retry("get table")
                )
            except NotFound:
                return None
        return [(field.name, field.field_type) for field in bq_table.schema]

    def query(self, sql: str) -> list[tuple]:
        with self.bigquery.get_client() as client:
            return [tuple(row.values()) for row in _run(client, sql)]

    def drop_staged(self, table: str) -> None:
        with self.bigquery.get_client() as client:
            client.delete_table(
                f"{self.project}.{self.staging_dataset}.{table}",
                not_found_ok=True,
                retry=transient_retry("delete table"),
            )

    def stage_checkpoint(self, table: str, checkpoint: Any) -> None:
        """A Parquet load job from the checkpoint's `gs://` file with the manifest's schema.

        The staged table is dropped first: a source whose columns changed must stage with
        its own columns (bqemulator keeps the old table's schema on WRITE_TRUNCATE and
        loads by position, so a renamed column would arrive under the old name). Staging
        is mlstack's own dataset, read only by the audit that follows."""
        from google.cloud import bigquery

        _needs_cloud_storage(checkpoint.lake)
        self.ensure_dataset(self.staging_dataset)
        self.drop_staged(table)
        schema = [
            bigquery.SchemaField(name, BIGQUERY_TYPES.get(dtype, "STRING"))
            for name, dtype in checkpoint.columns
        ]
        retry = transient_retry(f"load {table} into {self.staging_dataset}")
        with self.bigquery.get_client() as client:
            client.load_table_from_uri(
                checkpoint.data_uri,
                f"{self.project}.{self.staging_dataset}.{table}",
                job_config=bigquery.LoadJobConfig(
                    source_format=bigquery.SourceFormat.PARQUET,
                    schema=schema,
                    write_disposition="WRITE_TRUNCATE",
                ),
                retry=retry,
            ).result(retry=retry, timeout=JOB_TIMEOUT_SECONDS)

    def export_relation(self, schema: str, table: str, lake: Any, data_key: str) -> Exported:
        from google.cloud import bigquery

        _needs_cloud_storage(lake)
        retry = transient_retry(f"export {schema}.{table}")
        with self.bigquery.get_client() as client:
            client.extract_table(
                f"{self.project}.{schema}.{table}",
                lake.uri(data_key),
                job_config=bigquery.ExtractJobConfig(destination_format="PARQUET"),
                retry=retry,
            ).result(retry=retry, timeout=JOB_TIMEOUT_SECONDS)
        columns = [list(column) for column in self.table_columns(schema, table) or []]
        return Exported(
            rows=self.row_count(schema, table), columns=columns, sha256=lake.sha256(data_key)
        )

    def restore_table(self, table: str, uri: str, lake: Any) -> None:
        """A Parquet load job with WRITE_TRUNCATE: the table is replaced when it succeeds."""
        from google.cloud import bigquery

        _needs_cloud_storage(lake)
        retry = transient_retry(f"restore {self.dataset}.{table}")
        with self.bigquery.get_client() as client:
            client.load_table_from_uri(
                uri,
                f"{self.project}.{self.dataset}.{table}",
                job_config=bigquery.LoadJobConfig(
                    source_format=bigquery.SourceFormat.PARQUET,
                    write_disposition="WRITE_TRUNCATE",
                ),
                retry=retry,
            ).result(retry=retry, timeout=JOB_TIMEOUT_SECONDS)

    def sqlalchemy_url(self, schema: str) -> str:
        return f"bigquery://{self.project}/{schema}"

    def ensure_dataset(self, dataset: str) -> None:
        from google.cloud import bigquery

        created = bigquery.Dataset(f"{self.project}.{dataset}")
        created.location = self.bigquery.location
        with self.bigquery.get_client() as client:
            client.create_dataset(created, exists_ok=True, retry=transient_retry("create dataset"))

    def publish_relations(
        self, source_schema: str, tables: list[str], views: dict[str, str] | None = None
    ) -> None:
        """Views by `CREATE OR REPLACE VIEW`, tables by a copy job with WRITE_TRUNCATE: each
        replaces its relation atomically (BigQuery has no transaction across tables)."""
        from google.cloud import bigquery

        self.ensure_dataset(self.dataset)
        with self.bigquery.get_client() as client:
            for name, sql in (views or {}).items():
                _run(
                    client, f"create or replace view {self.qualified(self.dataset, name)} as {sql}"
                )
            for table in tables:
                retry = transient_retry(f"copy {table} into {self.dataset}")
                client.copy_table(
                    f"{self.project}.{source_schema}.{table}",
                    f"{self.project}.{self.dataset}.{table}",
                    job_config=bigquery.CopyJobConfig(write_disposition="WRITE_TRUNCATE"),
                    retry=retry,
                ).result(retry=retry)


def _run(client: Any, sql: str) -> Any:
    """A query job's rows; its API calls retried on transient errors (`transient_retry`).
    A job that BigQuery itself fails with a retryable reason is rerun by the client's own
    `job_retry`, as BigQuery documents."""
    retry = transient_retry("query")
    return client.query(sql, retry=retry).result(retry=retry)


class BigQueryRelationTypeHandler(RelationTypeHandler):
    def sql_name(self, table_slice: TableSlice) -> str:
        return f"`{table_slice.database}.{table_slice.schema}.{table_slice.table}`"

    def execute(self, connection: Any, sql: str) -> list[tuple]:
        return [tuple(row.values()) for row in _run(connection, sql)]

    def columns(self, connection: Any, table_slice: TableSlice) -> list[tuple[str, str]]:
        table = connection.get_table(
            f"{table_slice.database}.{table_slice.schema}.{table_slice.table}"
        )
        return [(field.name, field.field_type) for field in table.schema]


class WarehouseBigQueryIOManager(BigQueryPandasIOManager):
    """`BigQueryPandasIOManager` that also materializes `WarehouseQuery` outputs in BigQuery,
    with one `CREATE OR REPLACE TABLE ... AS` and no TRUNCATE first (`ReplacingDbIOManager`)."""

    warehouse: BigQueryWarehouse  # publishes `AuditedTable` outputs (the one audited publish)

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [BigQueryPandasTypeHandler(), BigQueryRelationTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return ReplacingDbIOManager(
            warehouse=self.warehouse,
            db_client=BigQueryClient(
                write_mode=self.write_mode, gcp_credentials=self.gcp_credentials
            ),
            io_manager_name="WarehouseBigQueryIOManager",
            database=self.project,
            schema=self.dataset,
            type_handlers=self.type_handlers(),
            default_load_type=self.default_load_type(),
        )


def build_bigquery_resources(settings: Settings) -> dict[str, Any]:
    location = settings.bigquery_location
    warehouse = BigQueryWarehouse(
        dataset=settings.dataset,
        bigquery=BigQueryResource(project=settings.bigquery_project, location=location),
    )
    return {
        "warehouse": warehouse,
        "io_manager": WarehouseBigQueryIOManager(
            project=settings.bigquery_project,
            dataset=settings.dataset,
            location=location,
            warehouse=warehouse,
        ),
    }
