"""BigQuery: the production warehouse, through dagster-gcp's resource and IO manager."""

from collections.abc import Sequence
from typing import Any

from dagster._core.storage.db_io_manager import DbIOManager, DbTypeHandler, TableSlice
from dagster_gcp import BigQueryResource
from dagster_gcp.bigquery.io_manager import BigQueryClient
from dagster_gcp_pandas import BigQueryPandasIOManager, BigQueryPandasTypeHandler

from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import TableColumns, Warehouse
from mlstack_assets.warehouse.relations import RelationTypeHandler, ReplacingDbIOManager


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

    def ensure_dataset(self, dataset: str) -> None:
        from google.cloud import bigquery

        created = bigquery.Dataset(f"{self.project}.{dataset}")
        created.location = self.bigquery.location
        with self.bigquery.get_client() as client:
            client.create_dataset(created, exists_ok=True)

    def publish_relations(
        self, source_schema: str, tables: list[str], views: dict[str, str] | None = None
    ) -> None:
        """Views by `CREATE OR REPLACE VIEW`, tables by a copy job with WRITE_TRUNCATE: each
        replaces its relation atomically (BigQuery has no transaction across tables)."""
        from google.cloud import bigquery

        self.ensure_dataset(self.dataset)
        with self.bigquery.get_client() as client:
            for name, sql in (views or {}).items():
                client.query(
                    f"create or replace view {self.qualified(self.dataset, name)} as {sql}"
                ).result()
            for table in tables:
                client.copy_table(
                    f"{self.project}.{source_schema}.{table}",
                    f"{self.project}.{self.dataset}.{table}",
                    job_config=bigquery.CopyJobConfig(write_disposition="WRITE_TRUNCATE"),
                ).result()


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
    """`BigQueryPandasIOManager` that also materializes `WarehouseQuery` outputs in BigQuery,
    with one `CREATE OR REPLACE TABLE ... AS` and no TRUNCATE first (`ReplacingDbIOManager`)."""

    @staticmethod
    def type_handlers() -> Sequence[DbTypeHandler]:
        return [BigQueryPandasTypeHandler(), BigQueryRelationTypeHandler()]

    def create_io_manager(self, context) -> DbIOManager:
        return ReplacingDbIOManager(
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
    return {
        "warehouse": BigQueryWarehouse(
            dataset=settings.dataset,
            bigquery=BigQueryResource(project=settings.bigquery_project, location=location),
        ),
        "io_manager": WarehouseBigQueryIOManager(
            project=settings.bigquery_project, dataset=settings.dataset, location=location
        ),
    }
