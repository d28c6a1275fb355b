"""Restoring a published table to a version (`mlstack rollback`, the UI's job): in one warehouse
session, sha256 checked, loaded atomically and made current (nothing written if the version is
missing or changed), then recorded as a materialization (`restored_from`): downstream is stale."""

from dataclasses import dataclass
from functools import partial

import dagster as dg
from pydantic import Field

from mlstack_assets.lake import Lake, versions
from mlstack_assets.lake.versions import VERSIONED_TABLES, VersionError
from mlstack_assets.warehouse import Warehouse


def path_metadata(uri: str) -> dg.MetadataValue:
    """A file in the lake as metadata: a link for `gs://`, a path for a folder."""
    return dg.MetadataValue.url(uri) if "://" in uri else dg.MetadataValue.path(uri)


@dataclass(frozen=True)
class Restored:
    table: str
    version: versions.Version
    previous: str | None  # the version the table held before

    def materialization(self) -> dg.AssetMaterialization:
        """What the Dagster instance records of the restore."""
        return dg.AssetMaterialization(
            asset_key=dg.AssetKey(self.table),
            description=f"restored to version {self.version.id}",
            metadata={
                "restored_from": self.version.id,
                "version": self.version.id,
                "previous_version": self.previous or "",
                "dagster/row_count": self.version.rows,
                "version_path": path_metadata(self.version.data_uri),
                "inputs": dg.MetadataValue.json(self.version.inputs),
            },
            tags={"dagster/data_version": self.version.id},
        )


def restore(table: str, version_id: str, lake_root: str, warehouse: Warehouse) -> Restored:
    """Restore `<dataset>.<table>` to `version_id` (or a unique prefix), or raise `VersionError`."""
    if table not in VERSIONED_TABLES:
        known = ", ".join(VERSIONED_TABLES)
        raise VersionError(f"{table!r} has no versions; the versioned tables are {known}")
    lake = Lake(lake_root)
    version = versions.find_version(lake, table, version_id)
    with warehouse.session(purpose=f"restore {table} to version {version.id}"):
        _verify(version)  # inside the session: what is checked is what is loaded
        return _load(version, lake, warehouse, versions.current_version_id(lake, table))


def restore_warehouse(lake: Lake, warehouse: Warehouse) -> tuple[list[Restored], list[str]]:
    """`mlstack restore`: every published table made what its current version says, then every
    view recreated as its last publish recorded it; no source is read. Every file's sha256 is
    checked first: one damaged version and nothing is restored. Returns the tables and views."""
    chosen = [v for t in VERSIONED_TABLES if (v := versions.current_version(lake, t)) is not None]
    if not chosen:
        raise VersionError(f"{lake.root} holds no current version of any table: nothing to restore")
    views = versions.recorded_views(lake)
    with warehouse.session(purpose="restore every published table from the lake"):
        for version in chosen:
            _verify(version)
        # raw first, then what is built from it (the order of `VERSIONED_TABLES`), then views
        restored = [_load(version, lake, warehouse, version.id) for version in chosen]
        warehouse.publish_relations(warehouse.dataset, tables=[], views=views)
    return restored, sorted(views)


def _verify(version: versions.Version) -> None:
    try:
        version.verify()
    except VersionError as error:
        raise VersionError(f"{error}; nothing was restored") from None


def _load(
    version: versions.Version, lake: Lake, warehouse: Warehouse, previous: str | None
) -> Restored:
    """Load the version into its table; made current in the same publish (a kill leaves the
    table and its pointer agreeing)."""
    table = version.manifest["table"]
    current = partial(versions.make_current, lake, table, version.id, restored_from=version.id)
    warehouse.restore_table(version, partial(current, previous=previous))
    return Restored(table, version, previous)


class RollbackConfig(dg.Config):
    """Which table to restore, to which of its versions."""

    table: str = Field(description=f"The published table: one of {', '.join(VERSIONED_TABLES)}.")
    version: str = Field(
        description="The version id (or a unique prefix), as `mlstack versions <table>` lists them."
    )


def build_rollback_definitions(lake_root: str) -> dg.Definitions:
    @dg.op
    def restore_version(
        context: dg.OpExecutionContext, config: RollbackConfig, warehouse: Warehouse
    ) -> None:
        """Restore the table to the version, sha256 checked, and record it as a materialization."""
        try:
            restored = restore(config.table, config.version, lake_root, warehouse)
        except VersionError as error:
            raise dg.Failure(description=str(error), allow_retries=False) from None
        context.log.info(
            f"{config.table}: restored version {restored.version.id}"
            f" ({restored.version.rows} rows; it held {restored.previous or 'no version'})"
        )
        context.log_event(restored.materialization())

    @dg.job(
        description="Restore a published table to one of its versions in the lake (config:"
        " table, version); what is downstream turns stale.",
    )
    def rollback() -> None:
        restore_version()

    return dg.Definitions(jobs=[rollback])
