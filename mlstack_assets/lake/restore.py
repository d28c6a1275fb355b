"""Restoring a published table to one of its versions: `mlstack rollback` and the UI's job.

The version's Parquet file is checked against its manifest's sha256, then loaded into
the published table in one atomic step (`Warehouse.restore_table`: one DuckDB
transaction, a BigQuery load job with WRITE_TRUNCATE), and made current. Nothing is
written when the version does not exist or its file changed. The restore is recorded as
a materialization of the table in the Dagster instance (`restored_from`, and the data
version of the restored version), so the UI shows it and what is downstream turns stale.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from dagster import AssetKey, AssetMaterialization, MetadataValue

from mlstack_assets.lake import Lake
from mlstack_assets.lake.versions import (
    VERSIONED_TABLES,
    Version,
    VersionError,
    current_version_id,
    find_version,
    make_current,
)

DATA_VERSION_TAG = "dagster/data_version"


@dataclass(frozen=True)
class Restored:
    table: str
    version: Version
    previous: str | None  # the version the table held before

    def materialization(self) -> AssetMaterialization:
        """What the Dagster instance records of the restore."""
        uri = self.version.data_uri
        return AssetMaterialization(
            asset_key=AssetKey(self.table),
            description=f"restored to version {self.version.id}",
            metadata={
                "restored_from": self.version.id,
                "version": self.version.id,
                "previous_version": self.previous or "",
                "dagster/row_count": self.version.rows,
                "version_path": MetadataValue.url(uri) if "://" in uri else MetadataValue.path(uri),
                "inputs": MetadataValue.json(self.version.inputs),
            },
            tags={DATA_VERSION_TAG: self.version.id},
        )


def restore(table: str, version_id: str, lake_root: str, warehouse: Any) -> Restored:
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
        version.verify()  # under the lock: what is checked is what is loaded
        warehouse.restore_table(table, version.data_uri, lake)
        # in the same session: a step reading which version a table holds (the lineage of what
        # it builds) sees the restored rows and their version together, never one alone
        make_current(lake, table, version.id, restored_from=version.id, previous=previous)
    return Restored(table, version, previous)
