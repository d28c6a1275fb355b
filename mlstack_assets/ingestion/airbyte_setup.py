"""`make airbyte-setup`: the lesson's Airbyte objects, created or updated through the API.

Two File sources, one destination (BigQuery, or DuckDB for a local Airbyte) and one Full
refresh | Overwrite connection per source into `<dataset>_staging`, where the raw assets
audit it. Objects are found by name, so a rerun updates them instead of duplicating them.
Prints the connection ids to export; credentials go to Airbyte, never to the output.
"""

from pathlib import Path
from typing import Any

import requests

from mlstack_assets.ingestion.server import CREDENTIAL_VARIABLES, airbyte_workspace
from mlstack_assets.ingestion.sources import source_specs
from mlstack_assets.settings import Settings, credential
from mlstack_assets.sources import source as registered

_FIXED_FIELDS = ("workspaceId", "sourceId", "destinationId")  # set on create, never updated


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


class AirbyteSetupError(RuntimeError):
    """A credential is missing or the Airbyte API refused a request."""


def _required(name: str) -> str:
    if not (value := credential(name)):
        raise AirbyteSetupError(f"set {name} first")
    return value


class AirbyteSetup:
    """Creates or updates the destination, the sources and their connections."""

    def __init__(self, settings: Settings):
        self.settings = settings
        fields = {field: _required(name) for field, name in CREDENTIAL_VARIABLES.items()}
        self.workspace_id = fields["workspace_id"]
        self.client = airbyte_workspace(settings, **fields).get_client()

    def _request(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        url = f"{self.client.rest_api_base_url}/{path}"
        response = requests.request(
            method, url, headers=self.client.all_additional_request_headers, timeout=30, **kwargs
        )
        if not response.ok:  # the body explains; it never holds our credentials
            raise AirbyteSetupError(f"{method} {url}: HTTP {response.status_code} {response.text}")
        return response.json() if response.content else {}

    def _find(self, kind: str, name: str) -> dict[str, Any] | None:
        params: dict[str, Any] = {"workspaceIds": self.workspace_id, "limit": 100}
        while True:
            page = self._request("GET", kind, params=params)
            for item in page.get("data", []):
                if item.get("name") == name:
                    return item
            if not page.get("next"):
                return None
            params["offset"] = params.get("offset", 0) + params["limit"]

    def ensure(self, kind: str, id_field: str, name: str, body: dict[str, Any]) -> str:
        """Create `name`, or update the object that already has that name; return its id."""
        existing = self._find(kind, name)
        if existing is None:
            object_id = self._request("POST", kind, json={"name": name, **body})[id_field]
        else:
            object_id, update = existing[id_field], {"name": name}
            update |= {k: v for k, v in body.items() if k not in _FIXED_FIELDS}
            self._request("PATCH", f"{kind}/{object_id}", json=update)
        print(f"{kind[:-1]} '{name}': {'updated' if existing else 'created'} ({object_id})")
        return object_id

    def run(self) -> dict[str, str]:
        """Create or update every object; return the connection id of each source."""
        settings, workspace = self.settings, {"workspaceId": self.workspace_id}
        self._request("GET", f"workspaces/{self.workspace_id}")  # fail early on a wrong id
        destination = {**workspace, "configuration": airbyte_destination_configuration(settings)}
        destination_id = self.ensure(
            "destinations", "destinationId", f"mlstack {settings.warehouse}", destination
        )
        connection_ids = {}
        for spec in source_specs(settings):
            name = f"mlstack {spec.name}"
            configuration = {"sourceType": "file", **spec.connector_config()}
            source_id = self.ensure(
                "sources", "sourceId", name, {**workspace, "configuration": configuration}
            )
            connection_ids[spec.name] = self.ensure(
                "connections",
                "connectionId",
                name,
                {
                    "sourceId": source_id,
                    "destinationId": destination_id,
                    "namespaceDefinition": "custom_format",
                    "namespaceFormat": settings.staging_dataset,
                    "prefix": "",
                    "schedule": {"scheduleType": "manual"},  # Dagster decides when to sync
                    "configurations": {
                        "streams": [{"name": spec.name, "syncMode": "full_refresh_overwrite"}]
                    },
                },
            )
        print(f"\nexport these for MLSTACK_AIRBYTE={settings.airbyte}:")
        for source, connection_id in connection_ids.items():
            print(f"export {registered(source).connection_variable}={connection_id}")
        return connection_ids
