"""Airbyte OSS or Cloud, driven by dagster-airbyte: one connection per source, as in the lesson.

Nothing here calls Airbyte when the definitions load (fixed asset keys, connection ids from
configuration), so the UI and CLI start while the Airbyte API is down. At run time the sync
is triggered and polled with dagster-airbyte's client; a running sync is waited for, never
duplicated.
"""

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from dagster import EnvVar, Failure
from dagster_airbyte import AirbyteCloudWorkspace, AirbyteWorkspace
from dagster_airbyte.resources import BaseAirbyteWorkspace
from dagster_airbyte.translator import AirbyteJob
from dagster_airbyte.utils import get_airbyte_connection_table_name

from mlstack_assets.compat import retrying_airbyte_client
from mlstack_assets.ingestion.download import backoff_seconds, transient_status
from mlstack_assets.ingestion.loader import AirbyteLoader, Extracted
from mlstack_assets.ingestion.sources import SourceError, SourceSpec
from mlstack_assets.lake import DATA
from mlstack_assets.lake.checkpoints import claim_checkpoint, complete_checkpoint
from mlstack_assets.settings import Settings
from mlstack_assets.sources import SOURCES, source
from mlstack_assets.warehouse import Warehouse

# the workspace's credentials, by field: the loader reads them as EnvVar (at run time, never
# shown in the UI), `make airbyte-setup` directly
CREDENTIAL_VARIABLES = {
    "workspace_id": "MLSTACK_AIRBYTE_WORKSPACE_ID",
    "client_id": "MLSTACK_AIRBYTE_CLIENT_ID",
    "client_secret": "MLSTACK_AIRBYTE_CLIENT_SECRET",
}


def airbyte_workspace(settings: Settings, **fields: Any) -> BaseAirbyteWorkspace:
    """The Airbyte Cloud or OSS workspace MLSTACK_AIRBYTE names, with these fields."""
    if settings.airbyte == "cloud":
        return AirbyteCloudWorkspace(**fields)
    return AirbyteWorkspace(
        rest_api_base_url=settings.airbyte_api_url,
        configuration_api_base_url=settings.airbyte_config_api_url,
        **fields,
    )


def _check_connection(spec: SourceSpec, staging: str, details: dict[str, Any]) -> None:
    """The connection must sync this source's stream, under its asset key, into staging."""
    connection_id = details.get("connectionId")
    streams = details.get("syncCatalog", {}).get("streams", [])
    selected = {s["stream"]["name"] for s in streams if s.get("config", {}).get("selected")}
    if spec.name not in selected:
        raise SourceError(
            spec,
            f"Airbyte connection {connection_id} does not sync a stream named '{spec.name}'"
            f" (it syncs {sorted(selected)})",
        )
    # dagster-airbyte's asset key (and table) for the stream: the prefix, then its name
    table = get_airbyte_connection_table_name(details.get("prefix") or None, spec.name)
    custom = details.get("namespaceDefinition") == "customformat"
    namespace = details.get("namespaceFormat") if custom else None
    if table != spec.name or namespace != staging:
        raise SourceError(
            spec,
            f"Airbyte connection {connection_id} writes table '{table}' in"
            f" namespace {namespace!r}; mlstack audits '{staging}.{spec.name}'. Set the"
            f" connection's destination namespace to the custom format '{staging}' with no"
            " stream prefix (`make airbyte-setup` does).",
        )


def _describe_failure(client: Any, connection_id: str, since: datetime, failure: Failure) -> str:
    """Name the Airbyte job and its final status, when Airbyte can still tell us."""
    try:
        jobs = client.get_jobs_for_connection(connection_id, created_after=since)
    except Failure:
        jobs = []
    if not jobs:
        return f"Airbyte sync on connection {connection_id} failed: {failure.description}"
    job = max(jobs, key=lambda j: j.id)
    return (
        f"Airbyte job {job.id} on connection {connection_id} ended with status"
        f" {str(job.status).upper()} ({failure.description})"
    )


class AirbyteServer(AirbyteLoader):
    """Syncs through an Airbyte workspace (OSS `AirbyteWorkspace` or `AirbyteCloudWorkspace`)."""

    workspace: BaseAirbyteWorkspace
    connection_ids: dict[str, str]
    api_retries: int = 3  # for transient API errors: connection, time-out, 429, 5xx

    def extract(
        self, specs: Sequence[SourceSpec], warehouse: Warehouse, run_id: str, log: Any
    ) -> Iterator[tuple[SourceSpec, Extracted | SourceError]]:
        for spec in specs:
            try:
                yield spec, self._sync(spec, warehouse, run_id, log)
            except SourceError as error:
                yield spec, error

    def _sync(self, spec: SourceSpec, warehouse: Warehouse, run_id: str, log: Any) -> Extracted:
        """The sync writes the staging table itself, so it runs in a warehouse session (on
        DuckDB the destination writes the very file the steps open); the staged table is then
        checkpointed in the lake, as an embedded extract is."""
        connection_id = self.connection_ids.get(spec.name, "")
        if not connection_id:
            raise SourceError(
                spec,
                f"no Airbyte connection configured: set {source(spec.name).connection_variable}"
                " (`make airbyte-setup` creates the connections and prints their ids)",
            )
        client = retrying_airbyte_client(
            self.workspace.get_client(),
            self.api_retries,
            log.warning,
            transient_status,
            backoff_seconds,
        )
        with warehouse.session(purpose=f"sync {spec.name} through Airbyte"):
            extracted_at = datetime.now(timezone.utc)
            since = datetime.now() - timedelta(minutes=1)  # dagster-airbyte's clock convention
            try:
                details = client.get_connection_details(connection_id)
                _check_connection(spec, warehouse.staging_dataset, details)
                output = client.sync_and_poll(connection_id=connection_id)
            except Failure as failure:
                cause = _describe_failure(client, connection_id, since, failure)
                raise SourceError(spec, cause) from None
            job = AirbyteJob.from_job_details(output.job_details)
            log.info(f"Airbyte job {job.id} on connection {connection_id}: {job.status}")
            lake, connector = self.lake_store, "Airbyte server (dagster-airbyte)"
            key = claim_checkpoint(lake, spec.name, extracted_at)
            exported = warehouse.export_relation(
                warehouse.staging_dataset, spec.name, lake, f"{key}/{DATA}"
            )
            manifest = {
                "source": spec.name,
                "source_url": spec.url,
                "connector": connector,
                "airbyte_job_id": job.id,
                "run_id": run_id,
                "rows": exported.rows,
                "columns": exported.columns,
            }
            checkpoint = complete_checkpoint(lake, key, extracted_at, exported.sha256, manifest)
        metadata = {
            "connector": connector,
            "airbyte_connection_id": connection_id,
            "airbyte_job_id": job.id,
            "airbyte_job_status": job.status,
        }
        return Extracted(checkpoint, job.rows_synced, metadata, staged=True)


def build_server_loader(settings: Settings) -> AirbyteServer:
    """The `airbyte` resource for MLSTACK_AIRBYTE=server or cloud."""
    workspace = airbyte_workspace(
        settings,
        **{name: EnvVar(variable) for name, variable in CREDENTIAL_VARIABLES.items()},
        poll_interval=settings.airbyte_poll_interval,
        poll_previous_running_sync=True,  # wait for a running sync, never start a second
        request_timeout=30,
    )
    return AirbyteServer(
        lake=settings.warehouse_lake,
        workspace=workspace,
        connection_ids={s.name: settings.airbyte_connection_id(s.name) for s in SOURCES},
        api_retries=settings.source_retries,
    )
