"""BigQuery: the production warehouse, through dagster-gcp's resource and IO manager.

Every call that can fail for a passing reason is retried with backoff, bounded and logged
(`transient_retry`); every job wait is bounded (`JOB_TIMEOUT_SECONDS`)."""

import itertools
from typing import Any

from dagster import get_dagster_logger
from dagster_gcp import BigQueryResource
from dagster_gcp_pandas import BigQueryPandasIOManager

from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Exported, TableColumns, Warehouse

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

    def _load_parquet(self, uri: str, lake: Any, dataset: str, table: str, schema=None) -> None:
        """A Parquet load job from `uri` into `<dataset>.<table>` with WRITE_TRUNCATE: the
        table is replaced when the job succeeds."""
        from google.cloud import bigquery

        _needs_cloud_storage(lake)
        retry = transient_retry(f"load {table} into {dataset}")
        with self.bigquery.get_client() as client:
            client.load_table_from_uri(
                uri,
                f"{self.project}.{dataset}.{table}",
                job_config=bigquery.LoadJobConfig(
                    source_format=bigquery.SourceFormat.PARQUET,
                    schema=schema,
                    write_disposition="WRITE_TRUNCATE",
                ),
                retry=retry,
            ).result(retry=retry, timeout=JOB_TIMEOUT_SECONDS)

    def stage_checkpoint(self, table: str, checkpoint: Any) -> None:
        """A load job with the manifest's schema, into a staging table dropped first: a
        source whose columns changed must stage with its own columns (bqemulator keeps the
        old table's schema on WRITE_TRUNCATE and loads by position, so a renamed column would
        arrive under the old name). Staging is read only by the audit that follows."""
        from google.cloud import bigquery

        self.ensure_dataset(self.staging_dataset)
        with self.bigquery.get_client() as client:
            client.delete_table(
                f"{self.project}.{self.staging_dataset}.{table}",
                not_found_ok=True,
                retry=transient_retry("delete table"),
            )
        schema = [
            bigquery.SchemaField(name, BIGQUERY_TYPES.get(dtype, "STRING"))
            for name, dtype in checkpoint.columns
        ]
        self._load_parquet(
            checkpoint.data_uri, checkpoint.lake, self.staging_dataset, table, schema
        )

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
        self._load_parquet(uri, lake, self.dataset, table)

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


def build_bigquery_resources(settings: Settings) -> dict[str, Any]:
    location = settings.bigquery_location
    warehouse = BigQueryWarehouse(
        dataset=settings.dataset,
        bigquery=BigQueryResource(project=settings.bigquery_project, location=location),
    )
    return {
        "warehouse": warehouse,
        # dagster-gcp's pandas IO manager: a published table as a DataFrame
        # (`Definitions.load_asset_value`)
        "io_manager": BigQueryPandasIOManager(
            project=settings.bigquery_project, dataset=settings.dataset, location=location
        ),
    }
