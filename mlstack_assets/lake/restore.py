"""Restoring a published table to one of its versions: `mlstack rollback` and the UI's job.

The version's Parquet file is checked against its manifest's sha256, then loaded into the
published table in one atomic step (`Warehouse.restore_table`: one DuckDB transaction, a
BigQuery load job with WRITE_TRUNCATE) and made current, in one warehouse session. Nothing
is written when the version does not exist or its file changed. The restore is recorded
as a materialization of the table (`restored_from`, and the restored version as its data
version), so the UI shows it and what is downstream turns stale.
"""

from dataclasses import dataclass

from dagster import (
    AssetKey,
    AssetMaterialization,
    Config,
    Definitions,
    Failure,
    MetadataValue,
    OpExecutionContext,
    job,
    op,
)
from pydantic import Field

from mlstack_assets.lake import Lake
from mlstack_assets.lake.versions import (
    VERSIONED_TABLES,
    Version,
    VersionError,
    current_version_id,
    find_version,
    make_current,
)
from mlstack_assets.warehouse import Warehouse


def path_metadata(uri: str) -> MetadataValue:
    """A file in the lake as metadata: a link for `gs://`, a path for a folder."""
    return MetadataValue.url(uri) if "://" in uri else MetadataValue.path(uri)


@dataclass(frozen=True)
class Restored:
    table: str
    version: Version
    previous: str | None  # the version the table held before

    def materialization(self) -> AssetMaterialization:
        """What the Dagster instance records of the restore."""
        return AssetMaterialization(
            asset_key=AssetKey(self.table),
            description=f"restored to version {self.version.id}",
            metadata={
                "restored_from": self.version.id,
                "version": self.version.id,
                "previous_version": self.previous or "",
                "dagster/row_count": self.version.rows,
                "version_path": path_metadata(self.version.data_uri),
                "inputs": MetadataValue.json(self.version.inputs),
            },
            tags={"dagster/data_version": self.version.id},
        )


def restore(table: str, version_id: str, lake_root: str, warehouse: Warehouse) -> Restored:
    """Restore `<dataset>.<table>` to `version_id` (an id or a unique prefix). Raises
    `VersionError` naming what is wrong, before writing anything."""
    if table not in VERSIONED_TABLES:
        raise VersionError(
            f"{table!r} has no versions; the versioned tables are {', '.join(VERSIONED_TABLES)}"
        )
    lake = Lake(lake_root)
    version = find_version(lake, table, version_id)
    with warehouse.session(purpose=f"restore {table} to version {version.id}"):
        previous = current_version_id(lake, table)
        try:  # inside the session: what is checked is what is loaded
            version.verify()
        except VersionError as error:
            raise VersionError(f"{error}; nothing was restored") from None
        warehouse.restore_table(table, version.data_uri, lake)
        # in the same session: whoever reads which version a table holds sees the restored
        # rows and their version together
        make_current(lake, table, version.id, restored_from=version.id, previous=previous)
    return Restored(table, version, previous)


class RollbackConfig(Config):
    """Which table to restore, to which of its versions."""

    table: str = Field(description=f"The published table: one of {', '.join(VERSIONED_TABLES)}.")
    version: str = Field(
        description="The version id (or a unique prefix), as `mlstack versions <table>` lists them."
    )


def build_rollback_definitions(lake_root: str) -> Definitions:
    @op
    def restore_version(
        context: OpExecutionContext, config: RollbackConfig, warehouse: Warehouse
    ) -> None:
        """Restore the table to the version (sha256 checked first), atomically; record it as
        the table's materialization (`restored_from`)."""
        try:
            restored = restore(config.table, config.version, lake_root, warehouse)
        except VersionError as error:
            raise Failure(description=str(error), allow_retries=False) from None
        context.log.info(
            f"{config.table}: restored version {restored.version.id}"
            f" ({restored.version.rows} rows; it held {restored.previous or 'no version'})"
        )
        context.log_event(restored.materialization())

    @job(
        name="rollback",
        description="Restore a published table to one of its versions in the lake (config:"
        " table, version); what is downstream turns stale.",
    )
    def rollback() -> None:
        restore_version()

    return Definitions(jobs=[rollback])
