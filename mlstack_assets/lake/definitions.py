"""The lake in the UI: the `rollback` job, launched from the Launchpad with its config."""

from dagster import Config, Definitions, Failure, OpExecutionContext, job, op
from pydantic import Field

from mlstack_assets.lake.restore import restore
from mlstack_assets.lake.versions import VERSIONED_TABLES, VersionError
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Warehouse
from mlstack_assets.warehouse.deployment import WarehouseDeployment


class RollbackConfig(Config):
    """Which table to restore, to which of its versions."""

    table: str = Field(description=f"The published table: one of {', '.join(VERSIONED_TABLES)}.")
    version: str = Field(
        description="The version id (or a unique prefix of it), as `mlstack versions <table>`"
        " lists them."
    )


def build_lake_definitions(settings: Settings, deployment: WarehouseDeployment) -> Definitions:
    @op(pool=deployment.pool)
    def restore_version(
        context: OpExecutionContext, config: RollbackConfig, warehouse: Warehouse
    ) -> None:
        """Restore the table to the version (sha256 checked first), atomically; record it as
        the table's materialization (`restored_from`)."""
        try:
            restored = restore(config.table, config.version, settings.lake, warehouse)
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
