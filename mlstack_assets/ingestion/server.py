"""Airbyte OSS or Cloud, driven by dagster-airbyte: one connection per source, as in the lesson.

Nothing here talks to Airbyte when the definitions load (the asset keys are fixed and the
connection ids come from configuration), so the UI and the CLI start even when the
Airbyte API is down. At run time the sync is triggered and polled with dagster-airbyte's
client; a sync already running for the connection is waited for instead of duplicated.
"""

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from dagster import AssetKey, EnvVar, Failure
from dagster_airbyte import (
    AirbyteCloudWorkspace,
    AirbyteWorkspace,
    DagsterAirbyteTranslator,
)
from dagster_airbyte.resources import BaseAirbyteWorkspace
from dagster_airbyte.translator import AirbyteConnectionTableProps, AirbyteJob
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

# Secrets are handed to the resources as EnvVar: resolved at run time, never shown in the UI.
WORKSPACE_ID_VAR = "MLSTACK_AIRBYTE_WORKSPACE_ID"
CLIENT_ID_VAR = "MLSTACK_AIRBYTE_CLIENT_ID"
CLIENT_SECRET_VAR = "MLSTACK_AIRBYTE_CLIENT_SECRET"


class AirbyteServer(AirbyteLoader):
    """Syncs through an Airbyte workspace (OSS `AirbyteWorkspace` or `AirbyteCloudWorkspace`)."""

    workspace: BaseAirbyteWorkspace
    connection_ids: dict[str, str]
    # transient API errors (connection, time-out, 429, 5xx) are retried this many times
    api_retries: int = 3

    def _connection_id(self, spec: SourceSpec) -> str:
        connection_id = self.connection_ids.get(spec.name, "")
        if not connection_id:
            raise SourceError(
                spec,
                f"no Airbyte connection configured: set {source(spec.name).connection_variable}"
                " (`make airbyte-setup` creates the connections and prints their ids)",
            )
        return connection_id

    @staticmethod
    def _check_connection(spec: SourceSpec, staging: str, details: dict[str, Any]) -> None:
        """The connection must sync this source's stream, under its asset key, into staging."""
        connection_id = details.get("connectionId")
        prefix = details.get("prefix") or None
        selected = {
            s["stream"]["name"]: s
            for s in details.get("syncCatalog", {}).get("streams", [])
            if s.get("config", {}).get("selected")
        }
        if spec.name not in selected:
            raise SourceError(
                spec,
                f"Airbyte connection {connection_id} does not sync a stream named '{spec.name}'"
                f" (it syncs {sorted(selected)})",
            )
        key = (
            DagsterAirbyteTranslator()
            .get_asset_spec(
                AirbyteConnectionTableProps(
                    table_name=get_airbyte_connection_table_name(prefix, spec.name),
                    stream_prefix=prefix,
                    stream_name=spec.name,
                    json_schema=selected[spec.name]["stream"].get("jsonSchema", {}),
                    connection_id=connection_id or "",
                    connection_name=details.get("name", ""),
                    destination_type=None,
                    database=None,
                    schema=None,
                )
            )
            .key
        )
        namespace = (
            details.get("namespaceFormat")
            if details.get("namespaceDefinition") == "customformat"
            else None
        )
        if key != AssetKey(spec.name) or namespace != staging:
            raise SourceError(
                spec,
                f"Airbyte connection {connection_id} writes table '{key.to_user_string()}' in"
                f" namespace {namespace!r}; mlstack audits '{staging}.{spec.name}'. Set the"
                f" connection's destination namespace to the custom format '{staging}' with no"
                " stream prefix (`make airbyte-setup` does).",
            )

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
        with warehouse.session(purpose=f"sync {spec.name} through Airbyte"):
            extracted_at = datetime.now(timezone.utc)
            records, metadata = self.sync_to_staging(spec, warehouse, log)
            lake = self.lake_store
            key = claim_checkpoint(lake, spec.name, extracted_at)
            exported = warehouse.export_relation(
                warehouse.staging_dataset, spec.name, lake, f"{key}/{DATA}"
            )
            manifest = {
                "source": spec.name,
                "source_url": spec.url,
                "connector": metadata["connector"],
                "airbyte_job_id": metadata["airbyte_job_id"],
                "run_id": run_id,
                "rows": exported.rows,
                "columns": exported.columns,
            }
            checkpoint = complete_checkpoint(lake, key, extracted_at, exported.sha256, manifest)
        return Extracted(checkpoint, records, metadata, staged=True)

    def sync_to_staging(
        self, spec: SourceSpec, warehouse: Warehouse, log: Any
    ) -> tuple[int | None, dict[str, Any]]:
        """Trigger the connection's sync and wait for it: the records it synced, and what
        the materialization says of the job."""
        connection_id = self._connection_id(spec)
        client = retrying_airbyte_client(
            self.workspace.get_client(),
            self.api_retries,
            log.warning,
            transient_status,
            backoff_seconds,
        )
        started = datetime.now() - timedelta(minutes=1)  # dagster-airbyte's clock convention
        try:
            self._check_connection(
                spec, warehouse.staging_dataset, client.get_connection_details(connection_id)
            )
            output = client.sync_and_poll(connection_id=connection_id)
        except Failure as failure:
            cause = self._describe_failure(client, connection_id, started, failure)
            raise SourceError(spec, cause) from None
        job = AirbyteJob.from_job_details(output.job_details)
        log.info(f"Airbyte job {job.id} on connection {connection_id}: {job.status}")
        return job.rows_synced, {
            "connector": "Airbyte server (dagster-airbyte)",
            "airbyte_connection_id": connection_id,
            "airbyte_job_id": job.id,
            "airbyte_job_status": job.status,
        }

    @staticmethod
    def _describe_failure(
        client: Any, connection_id: str, started: datetime, failure: Failure
    ) -> str:
        """Name the Airbyte job and its final status, when Airbyte can still tell us."""
        try:
            jobs = client.get_jobs_for_connection(connection_id, created_after=started)
        except Failure:
            jobs = []
        if not jobs:
            return f"Airbyte sync on connection {connection_id} failed: {failure.description}"
        job = max(jobs, key=lambda j: j.id)
        return (
            f"Airbyte job {job.id} on connection {connection_id} ended with status"
            f" {str(job.status).upper()} ({failure.description})"
        )


def build_server_loader(settings: Settings) -> AirbyteServer:
    credentials = {
        "workspace_id": EnvVar(WORKSPACE_ID_VAR),
        "client_id": EnvVar(CLIENT_ID_VAR),
        "client_secret": EnvVar(CLIENT_SECRET_VAR),
    }
    common = {
        "poll_interval": settings.airbyte_poll_interval,
        "poll_previous_running_sync": True,  # wait for a running sync, never start a second
        "request_timeout": 30,
    }
    if settings.airbyte == "cloud":
        workspace: BaseAirbyteWorkspace = AirbyteCloudWorkspace(**credentials, **common)
    else:
        workspace = AirbyteWorkspace(
            rest_api_base_url=settings.airbyte_api_url,
            configuration_api_base_url=settings.airbyte_config_api_url,
            **credentials,
            **common,
        )
    return AirbyteServer(
        lake=settings.lake,
        workspace=workspace,
        connection_ids={s.name: settings.airbyte_connection_id(s.name) for s in SOURCES},
        api_retries=settings.source_retries,
    )
