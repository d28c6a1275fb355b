"""The warehouse behind every asset: DuckDB by default, BigQuery in production.

`Warehouse` is everything the pipeline asks of a warehouse: the SQL operations it needs
(inspect a table, load a lake checkpoint into staging, build an audit table, publish
atomically), its SQL spellings (`dialect`), the GX datasource that audits a table
(`gx_table_asset`) and what to do after dbt ran (`after_dbt`). Each
implementation wraps Dagster's own DuckDB / BigQuery resource, and Python assets store
their outputs through the matching Dagster IO manager. Only this package knows which
warehouse it is: `build_warehouse_resources` is the one switch between the two; the
BigQuery module is imported only when it is chosen (its client libraries are slow to load).
"""

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource

from mlstack_assets.settings import Settings
from mlstack_assets.warehouse.dialect import SqlDialect, sql_dialect

if TYPE_CHECKING:
    from mlstack_assets.lake import Lake
    from mlstack_assets.lake.checkpoints import Checkpoint

TableColumns = list[tuple[str, str]]


@dataclass(frozen=True)
class Exported:
    """A relation written to the lake as one Parquet file."""

    rows: int
    columns: list[list[str]]
    sha256: str


class Warehouse(ConfigurableResource):
    """What the pipeline asks of a warehouse, whichever it is."""

    dataset: str

    @property
    def kind(self) -> str:
        raise NotImplementedError

    @property
    def dialect(self) -> SqlDialect:
        return sql_dialect(self.kind)

    @property
    def staging_dataset(self) -> str:
        return f"{self.dataset}_staging"

    @property
    def audit_dataset(self) -> str:
        """Where tables are built and checked before they replace the published ones (the
        ML tables here, dbt's models with `+schema: audit`): readers never look there."""
        return f"{self.dataset}_audit"

    @contextmanager
    def exclusive(self, purpose: str = "") -> Iterator[None]:
        """Hold while reading or writing the warehouse from this process (DuckDB needs it).

        `purpose` (e.g. "publish tags") is what a process waiting for it is told.
        """
        yield

    def qualified(self, schema: str, table: str) -> str:
        raise NotImplementedError

    def query(self, sql: str) -> list[tuple]:
        """Run a query in the warehouse; for small results (counts, aggregates) only."""
        raise NotImplementedError

    def table_columns(self, schema: str, table: str) -> TableColumns | None:
        """Column names and types, or None when the table does not exist."""
        raise NotImplementedError

    def row_count(self, schema: str, table: str) -> int:
        return self.query(f"select count(*) from {self.qualified(schema, table)}")[0][0]

    def drop_staged(self, table: str) -> None:
        """Remove `<staging>.<table>`, so what the next sync stages is only what it read."""
        raise NotImplementedError

    def publish(self, table: str) -> None:
        """Replace `<dataset>.<table>` by `<staging>.<table>` in one atomic step."""
        self.publish_relations(self.staging_dataset, tables=[table])

    def publish_relations(
        self, source_schema: str, tables: list[str], views: dict[str, str] | None = None
    ) -> None:
        """Replace `<dataset>.<table>` by `<source_schema>.<table>` for each table, and
        (re)create each view in `<dataset>` from its SQL, as atomically as the warehouse can:
        DuckDB in one transaction, BigQuery one atomic job per relation."""
        raise NotImplementedError

    def ensure_dataset(self, dataset: str) -> None:
        """Create the schema / dataset when it does not exist yet."""
        raise NotImplementedError

    def stage_checkpoint(self, table: str, checkpoint: "Checkpoint") -> None:
        """Replace `<staging>.<table>` by the checkpoint's Parquet file, in one step."""
        raise NotImplementedError

    def export_relation(self, schema: str, table: str, lake: "Lake", data_key: str) -> Exported:
        """Write `<schema>.<table>` to the lake as the Parquet file `data_key` (a new key);
        return its rows, columns and sha256. DuckDB: COPY to a local file, then into the
        lake; BigQuery: an extract job straight to its `gs://` URI."""
        raise NotImplementedError

    def restore_table(self, table: str, uri: str, lake: "Lake") -> None:
        """Replace `<dataset>.<table>` by the Parquet file at `uri`, atomically (a rollback)."""
        raise NotImplementedError

    def gx_table_asset(self, context: Any, schema: str, table: str) -> tuple[Any, Any]:
        """A GX SQL datasource on this warehouse in GX `context`, and its table asset for
        `<schema>.<table>`. The caller closes the datasource's engine when done."""
        raise NotImplementedError

    def after_dbt(self) -> None:
        """Release what dagster-dbt's in-process dbt adapter holds, once dbt's metadata is
        fetched (nothing, unless the warehouse needs it)."""

    def build_audit_table(self, table: str, sql: str) -> str:
        """Build `<audit>.<table>` from `sql`, replacing any earlier one; return its SQL name.

        The same statement on both warehouses; nothing published is touched.
        """
        self.ensure_dataset(self.audit_dataset)
        name = self.qualified(self.audit_dataset, table)
        self.query(f"create or replace table {name} as\n{sql}")
        return name


def build_warehouse_resources(settings: Settings) -> dict[str, Any]:
    """`warehouse` and `io_manager` for the configured warehouse."""
    if settings.warehouse == "bigquery":
        from mlstack_assets.warehouse.bigquery import build_bigquery_resources

        return build_bigquery_resources(settings)
    from mlstack_assets.warehouse.duckdb import build_duckdb_resources

    return build_duckdb_resources(settings)


def airbyte_destination_configuration(settings: Settings) -> dict[str, Any]:
    """The Airbyte server's destination for the configured warehouse (`make airbyte-setup`):
    BigQuery's staging dataset, or a DuckDB file on the Airbyte host."""
    if settings.warehouse == "bigquery":
        configuration: dict[str, Any] = {
            "destinationType": "bigquery",
            "project_id": settings.bigquery_project,
            "dataset_location": settings.bigquery_location,
            "dataset_id": settings.staging_dataset,
            "loading_method": {"method": "Standard"},
        }
        if settings.google_credentials_path:  # the key goes to Airbyte, never to a log
            configuration["credentials_json"] = Path(settings.google_credentials_path).read_text()
        return configuration
    # A DuckDB destination writes a file on the Airbyte host: it must be the file
    # MLSTACK_DUCKDB_PATH names here (Airbyte OSS mounts /tmp/airbyte_local as /local).
    return {"destinationType": "duckdb", "destination_path": settings.airbyte_duckdb_destination}
