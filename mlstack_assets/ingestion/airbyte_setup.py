"""`make airbyte-setup`: the lesson's Airbyte objects, created or updated through the API.

Two File sources (`mlstack projects`, `mlstack tags`), one destination (BigQuery, or
DuckDB for a local Airbyte), and one connection per source, Full refresh | Overwrite,
writing into `<dataset>_staging` where the raw assets audit it. Objects are found by name,
so running it again updates them instead of creating duplicates. It prints the connection
ids to export. Credentials are sent to Airbyte, never printed.
"""

from pathlib import Path
from typing import Any

import requests
from dagster_airbyte import AirbyteCloudWorkspace, AirbyteWorkspace

from mlstack_assets.ingestion.server import (
    CLIENT_ID_VAR,
    CLIENT_SECRET_VAR,
    WORKSPACE_ID_VAR,
)
from mlstack_assets.ingestion.sources import source_specs
from mlstack_assets.settings import Settings, credential
from mlstack_assets.sources import source as registered


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
    pass


def _required(name: str) -> str:
    value = credential(name)
    if not value:
        raise AirbyteSetupError(f"set {name} first")
    return value


class AirbyteSetup:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.workspace_id = _required(WORKSPACE_ID_VAR)
        credentials = {
            "workspace_id": self.workspace_id,
            "client_id": _required(CLIENT_ID_VAR),
            "client_secret": _required(CLIENT_SECRET_VAR),
        }
        if settings.airbyte == "cloud":
            self.client = AirbyteCloudWorkspace(**credentials).get_client()
        else:
            self.client = AirbyteWorkspace(
                rest_api_base_url=settings.airbyte_api_url,
                configuration_api_base_url=settings.airbyte_config_api_url,
                **credentials,
            ).get_client()

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
            created = self._request("POST", kind, json={"name": name, **body})
            print(f"{kind[:-1]} '{name}': created ({created[id_field]})")
            return created[id_field]
        update = {
            k: v for k, v in body.items() if k not in ("workspaceId", "sourceId", "destinationId")
        }
        self._request("PATCH", f"{kind}/{existing[id_field]}", json={"name": name, **update})
        print(f"{kind[:-1]} '{name}': updated ({existing[id_field]})")
        return existing[id_field]

    def run(self) -> dict[str, str]:
        self._request("GET", f"workspaces/{self.workspace_id}")  # fail early on a wrong id
        destination_id = self.ensure(
            "destinations",
            "destinationId",
            f"mlstack {self.settings.warehouse}",
            {
                "workspaceId": self.workspace_id,
                "configuration": airbyte_destination_configuration(self.settings),
            },
        )
        connection_ids = {}
        for spec in source_specs(self.settings):
            source_id = self.ensure(
                "sources",
                "sourceId",
                f"mlstack {spec.name}",
                {
                    "workspaceId": self.workspace_id,
                    "configuration": {"sourceType": "file", **spec.connector_config()},
                },
            )
            connection_ids[spec.name] = self.ensure(
                "connections",
                "connectionId",
                f"mlstack {spec.name}",
                {
                    "sourceId": source_id,
                    "destinationId": destination_id,
                    "namespaceDefinition": "custom_format",
                    "namespaceFormat": self.settings.staging_dataset,
                    "prefix": "",
                    "schedule": {"scheduleType": "manual"},  # Dagster decides when to sync
                    "configurations": {
                        "streams": [{"name": spec.name, "syncMode": "full_refresh_overwrite"}]
                    },
                },
            )
        print("\nexport these for MLSTACK_AIRBYTE=" + self.settings.airbyte + ":")
        for source, connection_id in connection_ids.items():
            print(f"export {registered(source).connection_variable}={connection_id}")
        return connection_ids
