"""BigQuery: the production warehouse, through dagster-gcp's resource and IO manager."""

from collections.abc import Sequence
from typing import Any

from dagster._core.storage.db_io_manager import DbTypeHandler, TableSlice
from dagster_gcp import BigQueryResource
from dagster_gcp_pandas import BigQueryPandasIOManager, BigQueryPandasTypeHandler

from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import TableColumns, Warehouse
from mlstack_assets.warehouse.relations import RelationTypeHandler


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
                bq_table = client.get_table(f"{self.project}.{schema}.{table}")
            except NotFound:
                return None
        return [(field.name, field.field_type) for field in bq_table.schema]

    def query(self, sql: str) -> list[tuple]:
        with self.bigquery.get_client() as client:
            return [tuple(row.values()) for row in client.query(sql).result()]

    def row_count(self, schema: str, table: str) -> int:
        return self.query(f"select count(*) from {self.qualified(schema, table)}")[0][0]

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


class BigQueryRelationTypeHandler(RelationTypeHandler):
    def sql_name(self, table_slice: TableSlice) -> str:
        return f"`{table_slice.database}.{table_slice.schema}.{table_slice.table}`"

    def execute(self, connection: Any, sql: str) -> list[tuple]:
        return [tuple(row.values()) for row in connection.query(sql).result()]

    def columns(self, connection: Any, table_slice: TableSlice) -> list[tuple[str, str]]:
        table = connection.get_table(
            f"{table_slice.database}.{table_slice.schema}.{table_slice.table}"
        )
        return [(field.name, field.field_type) for field in table.schema]


class WarehouseBigQueryIOManager(BigQueryPandasIOManager):
    """`BigQueryPandasIOManager` that also materializes `WarehouseQuery` outputs in BigQuery."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [BigQueryPandasTypeHandler(), BigQueryRelationTypeHandler()]


def build_bigquery_resources(settings: Settings) -> dict[str, Any]:
    location = settings.bigquery_location
    return {
        "warehouse": BigQueryWarehouse(
            dataset=settings.dataset,
            bigquery=BigQueryResource(project=settings.bigquery_project, location=location),
        ),
        "io_manager": WarehouseBigQueryIOManager(
            project=settings.bigquery_project, dataset=settings.dataset, location=location
        ),
    }
