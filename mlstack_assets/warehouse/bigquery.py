"""BigQuery, the production warehouse, through dagster-gcp's resource and IO manager. Every call
that can fail for a passing reason is retried with backoff, bounded and logged
(`transient_retry`); every job wait is bounded (`JOB_TIMEOUT_SECONDS`)."""

import itertools
from typing import Any, ClassVar

import requests
from dagster import get_dagster_logger
from dagster_gcp import BigQueryResource
from dagster_gcp_pandas import BigQueryPandasIOManager
from google.api_core import exceptions
from google.api_core import retry as retries
from google.cloud import bigquery

from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Exported, Hook, TableColumns, Views, Warehouse

RETRY_INITIAL_SECONDS = 1.0  # then 2, 4, 8, 8, ... until RETRY_TIMEOUT_SECONDS in all
RETRY_MAXIMUM_SECONDS = 8.0
RETRY_TIMEOUT_SECONDS = 60.0
JOB_TIMEOUT_SECONDS = 900.0  # a bound on waiting for one load, copy or extract job
# DuckDB's types in a checkpoint's manifest, as BigQuery columns
BIGQUERY_TYPES = {"VARCHAR": "STRING", "TIMESTAMP": "TIMESTAMP", "JSON": "JSON", "BIGINT": "INT64"}
# what BigQuery calls its own types (a version exported from BigQuery lists these)
_BIGQUERY_NAMES = {"STRING", "INTEGER", "INT64", "FLOAT", "FLOAT64", "NUMERIC", "BOOLEAN", "BOOL"}
_BIGQUERY_NAMES |= {"TIMESTAMP", "DATE", "DATETIME", "TIME", "JSON", "BYTES"}


def transient_retry(what: str) -> Any:
    """Transient errors only, each retry logged: the client's default retries 400s too, silently."""
    logger = get_dagster_logger("mlstack.bigquery")
    attempts = itertools.count(1)
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
        on_error=lambda error: logger.warning(
            f"BigQuery {what}: {type(error).__name__}: {str(error)[:200]}; retry"
            f" {next(attempts)} (backoff {RETRY_INITIAL_SECONDS:g} s to"
            f" {RETRY_MAXIMUM_SECONDS:g} s, for at most {RETRY_TIMEOUT_SECONDS:g} s in all)"
        ),
    )


class BigQueryWarehouse(Warehouse):
    """A BigQuery dataset; publishing is a table copy job with WRITE_TRUNCATE (atomic)."""

    kind: ClassVar[str] = "bigquery"
    bigquery: BigQueryResource

    @property
    def project(self) -> str:
        return self.bigquery.project or ""

    def qualified(self, schema: str, table: str) -> str:
        return f"`{self._id(schema, table)}`"

    def _id(self, dataset: str, table: str) -> str:
        return f"{self.project}.{dataset}.{table}"

    def query(self, sql: str) -> list[tuple]:
        """A job failed for a retryable reason is rerun by the client's own `job_retry`."""
        retry = transient_retry("query")
        with self.bigquery.get_client() as client:
            rows = client.query(sql, retry=retry).result(retry=retry)
            return [tuple(row.values()) for row in rows]

    def table_columns(self, schema: str, table: str) -> TableColumns | None:
        with self.bigquery.get_client() as client:
            try:
                info = client.get_table(self._id(schema, table), retry=transient_retry("get table"))
            except exceptions.NotFound:
                return None
        return [(field.name, field.field_type) for field in info.schema]

    def ensure_dataset(self, dataset: str) -> None:
        created = bigquery.Dataset(f"{self.project}.{dataset}")
        created.location = self.bigquery.location
        with self.bigquery.get_client() as client:
            client.create_dataset(created, exists_ok=True, retry=transient_retry("create dataset"))

    def load_parquet(
        self, dataset: str, table: str, uri: str, lake: Any, schema: Any = None
    ) -> None:
        """A load job with WRITE_TRUNCATE: the table is replaced when it succeeds."""
        _needs_cloud_storage(lake)
        retry = transient_retry(f"load {table} into {dataset}")
        config = bigquery.LoadJobConfig(
            source_format="PARQUET", schema=schema, write_disposition="WRITE_TRUNCATE"
        )
        with self.bigquery.get_client() as client:
            target = self._id(dataset, table)
            job = client.load_table_from_uri(uri, target, job_config=config, retry=retry)
            job.result(retry=retry, timeout=JOB_TIMEOUT_SECONDS)

    def stage_parquet(self, table: str, uri: str, lake: Any, columns: TableColumns) -> None:
        """Dropped first: bqemulator keeps the old schema on WRITE_TRUNCATE, loading by position
        (and with no schema given, it cannot load into a table that does not exist)."""
        self.ensure_dataset(self.staging_dataset)
        with self.bigquery.get_client() as client:
            staged = self._id(self.staging_dataset, table)
            client.delete_table(staged, not_found_ok=True, retry=transient_retry("delete table"))
        schema = [
            bigquery.SchemaField(
                name, BIGQUERY_TYPES.get(dtype) or (dtype if dtype in _BIGQUERY_NAMES else "STRING")
            )
            for name, dtype in columns
        ]
        self.load_parquet(self.staging_dataset, table, uri, lake, schema)

    def export_relation(self, schema: str, table: str, lake: Any, data_key: str) -> Exported:
        _needs_cloud_storage(lake)
        retry = transient_retry(f"export {schema}.{table}")
        config = bigquery.ExtractJobConfig(destination_format="PARQUET")
        with self.bigquery.get_client() as client:
            source = self._id(schema, table)
            job = client.extract_table(source, lake.uri(data_key), job_config=config, retry=retry)
            job.result(retry=retry, timeout=JOB_TIMEOUT_SECONDS)
        columns = [list(column) for column in self.table_columns(schema, table) or []]
        rows = self.row_count(schema, table)
        return Exported(rows=rows, columns=columns, sha256=lake.sha256(data_key))

    def publish_relations(
        self, source_schema: str, tables: list[str], views: Views = None, before_commit: Hook = None
    ) -> None:
        """Each relation replaced atomically, as BigQuery has no transaction across tables;
        `before_commit` after the last."""
        self.ensure_dataset(self.dataset)
        for name, sql in (views or {}).items():
            self.query(f"create or replace view {self.qualified(self.dataset, name)} as {sql}")
        config = bigquery.CopyJobConfig(write_disposition="WRITE_TRUNCATE")
        with self.bigquery.get_client() as client:
            for table in tables:
                retry = transient_retry(f"copy {table} into {self.dataset}")
                source, target = self._id(source_schema, table), self._id(self.dataset, table)
                job = client.copy_table(source, target, job_config=config, retry=retry)
                job.result(retry=retry, timeout=JOB_TIMEOUT_SECONDS)
        if before_commit is not None:
            before_commit()

    def sqlalchemy_url(self, schema: str) -> str:
        return f"bigquery://{self.project}/{schema}"


def _needs_cloud_storage(lake: Any) -> None:
    if not lake.is_gcs:
        raise ValueError(
            f"BigQuery loads and exports checkpoints through Cloud Storage, and the lake is"
            f" {lake.root}: set MLSTACK_LAKE=gs://bucket/prefix"
        )


def build_bigquery_resources(settings: Settings) -> dict[str, Any]:
    """The warehouse, and dagster-gcp's IO manager for a published table as a DataFrame."""
    project, location = settings.bigquery_project, settings.bigquery_location
    dataset = settings.dataset
    resource = BigQueryResource(project=project, location=location)
    return {
        "warehouse": BigQueryWarehouse(dataset=dataset, bigquery=resource),
        "io_manager": BigQueryPandasIOManager(project=project, dataset=dataset, location=location),
    }
