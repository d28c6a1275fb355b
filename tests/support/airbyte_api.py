"""A loopback stand-in for the Airbyte API, held to Airbyte's own client models.

It answers the endpoints dagster-airbyte and `make airbyte-setup` call: the public REST
API (`/api/public/v1`: token, workspaces, sources, destinations, connections, jobs) and
the configuration API's `connections/get` (`/api/v1`). Every request must carry the
bearer token it issued. On the REST API every query and body must be one the `airbyte-api`
client's models accept, and every answer must parse as the client's model for it
(`airbyte_contract.py`); ids, job types and the lesson's settings are checked too. A wrong
request is answered with a 4xx, a wrong answer of the stand-in's own with a 500, and both
are recorded in `violations`, so either fails the test.

When a sync job is created, `on_sync(connection_name, stream)` plays the destination: the
test writes the staged table there, as Airbyte's destination would.
"""

import json
import secrets
import socket
import struct
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.support.airbyte_contract import (
    Endpoint,
    body_problems,
    endpoint,
    field_names,
    query_problems,
)

REST = "/api/public/v1"
CONFIG = "/api/v1"
TERMINAL = ("succeeded", "failed", "cancelled")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _definition_id(connector: str) -> str:
    """Stands for the connector definition's id (a real server has its registry's)."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"airbyte/{connector}"))


@dataclass
class FakeAirbyte:
    workspace_id: str
    client_id: str
    client_secret: str
    base_url: str = ""
    token: str = field(default_factory=lambda: f"token-{secrets.token_hex(8)}")
    sources: dict[str, dict] = field(default_factory=dict)
    destinations: dict[str, dict] = field(default_factory=dict)
    connections: dict[str, dict] = field(default_factory=dict)
    jobs: dict[int, dict] = field(default_factory=dict)
    # statuses a new job goes through, one per poll; the last one sticks
    job_script: list[str] = field(default_factory=lambda: ["running", "succeeded"])
    on_sync: Callable[[dict, str], None] | None = None
    requests: list[tuple[str, str]] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    # path prefix -> failures for the next requests to it, one each: "reset" (the
    # connection drops, TCP RST) or an HTTP status; later requests are answered normally
    faults: dict[str, list[str | int]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def rest_url(self) -> str:
        return self.base_url + REST

    @property
    def config_url(self) -> str:
        return self.base_url + CONFIG

    def calls(self, method: str, prefix: str) -> int:
        return sum(1 for m, p in self.requests if m == method and p.startswith(prefix))

    def add_running_job(self, connection_id: str, script: list[str]) -> int:
        """A sync somebody else started (the Airbyte UI, a schedule)."""
        return self._new_job(connection_id, script)

    def _new_job(self, connection_id: str, script: list[str]) -> int:
        job_id = len(self.jobs) + 1
        self.jobs[job_id] = {
            "jobId": job_id,
            "status": "running",
            "jobType": "sync",
            "connectionId": connection_id,
            "startTime": _now(),
            "lastUpdatedAt": _now(),
            "duration": "PT0S",
            "rowsSynced": 0,
            "bytesSynced": 0,
            "_script": list(script),
        }
        connection = self.connections[connection_id]
        if self.on_sync:
            for stream in connection["configurations"]["streams"]:
                self.on_sync(connection, stream["name"])
        return job_id

    def public_job(self, job_id: int) -> dict[str, Any]:
        return {k: v for k, v in self.jobs[job_id].items() if not k.startswith("_")}

    def config_connection(self, connection_id: str) -> dict[str, Any]:
        """A connection as the configuration API's `connections/get` returns it."""
        c = self.connections[connection_id]
        spelled = {"custom_format": "customformat"}.get(
            c["namespaceDefinition"], c["namespaceDefinition"]
        )
        return {
            "connectionId": connection_id,
            "name": c["name"],
            "sourceId": c["sourceId"],
            "destinationId": c["destinationId"],
            "namespaceDefinition": spelled,
            "namespaceFormat": c.get("namespaceFormat"),
            "prefix": c.get("prefix", ""),
            "status": "active",
            "syncCatalog": {
                "streams": [
                    {
                        "stream": {
                            "name": s["name"],
                            "jsonSchema": {"type": "object", "properties": {}},
                            "supportedSyncModes": ["full_refresh"],
                        },
                        "config": {
                            "selected": True,
                            "syncMode": "full_refresh",
                            "destinationSyncMode": "overwrite",
                            "aliasName": s["name"],
                        },
                    }
                    for s in c["configurations"]["streams"]
                ]
            },
        }


class _Handler(BaseHTTPRequestHandler):
    api: FakeAirbyte
    contract: Endpoint | None = None  # the REST endpoint being answered
    _json: Any = None

    def log_message(self, *args: Any) -> None:
        pass

    # -- plumbing -------------------------------------------------------------------------
    def _send(self, status: int, body: Any = None) -> None:
        body = body if body is not None else {}
        if status == 200 and self.contract:
            problems = body_problems(body, self.contract.response)
            if problems:
                return self._reject(500, f"the stand-in's answer breaks the API: {problems}")
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _reject(self, status: int, why: str) -> None:
        self.api.violations.append(f"{self.command} {self.path}: {why}")
        self._send(status, {"status": status, "title": why})

    def _body(self) -> dict[str, Any]:
        if self._json is None:  # read once: the contract check and the endpoint both need it
            length = int(self.headers.get("Content-Length") or 0)
            self._json = json.loads(self.rfile.read(length) or b"{}")
        return self._json

    def _dispatch(self) -> None:
        api, self.contract, self._json = self.api, None, None
        url = urlparse(self.path)
        path, query = url.path, parse_qs(url.query)
        with api.lock:
            api.requests.append((self.command, path))
        if path == f"{REST}/applications/token" and self.command == "POST":
            body = self._body()
            if (body.get("client_id"), body.get("client_secret")) != (
                api.client_id,
                api.client_secret,
            ):
                return self._reject(401, "wrong client credentials")
            return self._send(
                200, {"access_token": api.token, "token_type": "Bearer", "expires_in": 180}
            )
        if self.headers.get("Authorization") != f"Bearer {api.token}":
            return self._reject(401, "missing or wrong bearer token")
        with api.lock:
            queue = next((q for p, q in api.faults.items() if path.startswith(p) and q), None)
            fault = queue.pop(0) if queue else None
        if fault == "reset":
            # SO_LINGER 0: closing sends a TCP RST, as a dropped connection does
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True
            return None
        if fault is not None:
            return self._send(int(fault), {"status": fault, "title": "injected by the test"})
        with api.lock:
            if path.startswith(CONFIG + "/"):
                return self._config_api(path[len(CONFIG) :])
            self.contract = endpoint(self.command, path[len(REST) :])
            if self.contract is None:
                return self._reject(404, "no such REST endpoint")
            problems = query_problems(query, self.contract.query) if self.contract.query else []
            if problems or (query and not self.contract.query):
                return self._reject(400, f"query: {problems or 'this endpoint takes none'}")
            if self.contract.request and (
                problems := body_problems(self._body(), self.contract.request)
            ):
                return self._reject(400, f"body: {problems}")
            return self._rest_api(path[len(REST) :], query)

    do_GET = do_POST = do_PATCH = do_DELETE = _dispatch

    # -- configuration API ----------------------------------------------------------------
    def _config_api(self, path: str) -> None:
        if path == "/connections/get" and self.command == "POST":
            connection_id = self._body().get("connectionId")
            if connection_id not in self.api.connections:
                return self._reject(404, f"unknown connectionId {connection_id!r}")
            return self._send(200, self.api.config_connection(connection_id))
        return self._reject(404, "no such configuration API endpoint")

    # -- public REST API ------------------------------------------------------------------
    def _rest_api(self, path: str, query: dict[str, list[str]]) -> None:
        api, parts = self.api, [p for p in path.split("/") if p]
        if parts[:1] == ["workspaces"] and self.command == "GET" and len(parts) == 2:
            if parts[1] != api.workspace_id:
                return self._reject(404, "unknown workspace")
            workspace = {"workspaceId": api.workspace_id, "name": "mlstack"}
            return self._send(200, {**workspace, "dataResidency": "auto", "notifications": {}})
        if parts[:1] == ["jobs"]:
            return self._jobs(parts, query)
        kinds = {
            "sources": (api.sources, "sourceId"),
            "destinations": (api.destinations, "destinationId"),
            "connections": (api.connections, "connectionId"),
        }
        if parts and parts[0] in kinds:
            store, id_field = kinds[parts[0]]
            return self._crud(parts, query, store, id_field)
        return self._reject(404, "no such REST endpoint")

    def _crud(self, parts: list[str], query: dict, store: dict, id_field: str) -> None:
        api, kind = self.api, parts[0]
        if self.command == "GET" and len(parts) == 1:
            if query.get("workspaceIds") != [api.workspace_id]:
                return self._reject(400, "workspaceIds must name the workspace")
            return self._send(200, {"data": list(store.values()), "next": "", "previous": ""})
        if self.command == "GET" and len(parts) == 2:
            if parts[1] not in store:
                return self._reject(404, f"unknown {kind[:-1]}")
            return self._send(200, store[parts[1]])
        body = self._body()
        problem = self._invalid(kind, body, creating=self.command == "POST")
        if problem:
            return self._reject(400, problem)
        # the server keeps what the resource has (a request may carry more, e.g. secretId)
        kept = {k: v for k, v in body.items() if k in field_names(self.contract.response)}
        if self.command == "POST" and len(parts) == 1:
            if any(item["name"] == body["name"] for item in store.values()):
                return self._reject(409, f"a {kind[:-1]} named {body['name']!r} exists already")
            item_id = str(uuid.uuid4())
            store[item_id] = {id_field: item_id, "createdAt": int(datetime.now().timestamp())}
            store[item_id] |= kept | self._server_fields(kind, body)
            return self._send(200, store[item_id])
        if self.command == "PATCH" and len(parts) == 2 and parts[1] in store:
            store[parts[1]].update(kept)
            return self._send(200, store[parts[1]])
        return self._reject(405, "unsupported")

    def _server_fields(self, kind: str, body: dict) -> dict[str, Any]:
        """What the server adds to a new source, destination or connection."""
        if kind == "connections":
            schedule = body.get("schedule") or {"scheduleType": "manual"}
            workspace = self.api.sources[body["sourceId"]]["workspaceId"]
            return {"workspaceId": workspace, "schedule": schedule, "status": "active", "tags": []}
        connector = body["configuration"][f"{kind[:-1]}Type"]
        return {f"{kind[:-1]}Type": connector, "definitionId": _definition_id(connector)}

    def _invalid(self, kind: str, body: dict, creating: bool) -> str | None:
        api = self.api
        if not body.get("name"):  # optional for a connection; mlstack finds objects by name
            return "name is required"
        if (
            kind in ("sources", "destinations")
            and creating
            and body.get("workspaceId") != api.workspace_id
        ):
            return "workspaceId must be the workspace"
        if kind == "sources" and body.get("configuration", {}).get("sourceType") != "file":
            return "mlstack's sources are File sources (sourceType=file)"
        if kind == "destinations" and body.get("configuration", {}).get("destinationType") not in (
            "bigquery",
            "duckdb",
        ):
            return "unexpected destinationType"
        if kind == "connections":
            if creating and (
                body.get("sourceId") not in api.sources
                or body.get("destinationId") not in api.destinations
            ):
                return "sourceId and destinationId must exist"
            streams = body.get("configurations", {}).get("streams", [])
            if not streams or any(s.get("syncMode") != "full_refresh_overwrite" for s in streams):
                return "streams must be full_refresh_overwrite"
        return None

    def _jobs(self, parts: list[str], query: dict) -> None:
        api = self.api
        if self.command == "POST" and len(parts) == 1:
            body = self._body()
            if body.get("jobType") != "sync":
                return self._reject(400, f"jobType must be 'sync', got {body.get('jobType')!r}")
            if body.get("connectionId") not in api.connections:
                return self._reject(404, f"unknown connectionId {body.get('connectionId')!r}")
            job_id = api._new_job(body["connectionId"], api.job_script)
            return self._send(200, api.public_job(job_id))
        if self.command == "GET" and len(parts) == 1:
            connection_id = (query.get("connectionId") or [""])[0]
            if connection_id not in api.connections or query.get("workspaceIds") != [
                api.workspace_id
            ]:
                return self._reject(400, "jobs are listed per known connection and workspace")
            jobs = [
                api.public_job(j)
                for j, job in api.jobs.items()
                if job["connectionId"] == connection_id
            ]
            return self._send(200, {"data": jobs, "next": "", "previous": ""})
        if len(parts) != 2 or not parts[1].isdigit() or int(parts[1]) not in api.jobs:
            return self._reject(404, "unknown job")
        job = api.jobs[int(parts[1])]
        if self.command == "GET":
            if job["status"] not in TERMINAL and job["_script"]:
                job["status"] = (
                    job["_script"].pop(0) if len(job["_script"]) > 1 else job["_script"][0]
                )
                job["lastUpdatedAt"] = _now()
                if job["status"] == "succeeded":
                    job["rowsSynced"] = 8
            return self._send(200, api.public_job(job["jobId"]))
        if self.command == "DELETE":
            job["status"] = "cancelled"
            return self._send(200, api.public_job(job["jobId"]))
        return self._reject(405, "unsupported")


def start_fake_airbyte(api: FakeAirbyte) -> ThreadingHTTPServer:
    handler = type("Handler", (_Handler,), {"api": api})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    api.base_url = f"http://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd
