"""BigQuery: the production warehouse, through dagster-gcp's resource and IO manager."""

from typing import Any

from dagster_gcp import BigQueryResource
from dagster_gcp_pandas import BigQueryPandasIOManager

from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import TableColumns, Warehouse


class BigQueryWarehouse(Warehouse):
    """A BigQuery dataset; publishing is a table copy job with WRITE_TRUNCATE (atomic)."""

    bigquery: BigQueryResource

    @property
    def kind(self) -> str:
        return "bigquery"

    @property
    def project(self) -> str:
        return self.bigquery.project or ""

    def qualified(self, schema: str, table: str) -> str:
        return f"`{self.project}.{schema}.{table}`"

    def table_columns(self, schema: str, table: str) -> TableColumns | None:
        from google.api_core.exceptions import NotFound

        with self.bigquery.get_client() as client:
            try:
                bq_table = client.get_table(f"{self.project}.{schema}.{table}")
            except NotFound:
                return None
        return [(field.name, field.field_type) for field in bq_table.schema]

    def row_count(self, schema: str, table: str) -> int:
        with self.bigquery.get_client() as client:
            job = client.query(f"select count(*) from {self.qualified(schema, table)}")
            return next(iter(job.result()))[0]

    def drop_staged(self, table: str) -> None:
        with self.bigquery.get_client() as client:
            client.delete_table(f"{self.project}.{self.staging_dataset}.{table}", not_found_ok=True)

    def publish(self, table: str) -> None:
        from google.cloud import bigquery

        with self.bigquery.get_client() as client:
            client.create_dataset(f"{self.project}.{self.dataset}", exists_ok=True)
            job = client.copy_table(
                f"{self.project}.{self.staging_dataset}.{table}",
                f"{self.project}.{self.dataset}.{table}",
                job_config=bigquery.CopyJobConfig(write_disposition="WRITE_TRUNCATE"),
            )
            job.result()


def build_bigquery_resources(settings: Settings) -> dict[str, Any]:
    location = settings.bigquery_location
    return {
        "warehouse": BigQueryWarehouse(
            dataset=settings.dataset,
            bigquery=BigQueryResource(project=settings.bigquery_project, location=location),
        ),
        "io_manager": BigQueryPandasIOManager(
            project=settings.bigquery_project, dataset=settings.dataset, location=location
        ),
    }
