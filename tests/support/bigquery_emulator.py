"""BigQuery and Cloud Storage on loopback for the tests and the local demo: bqemulator
behind a small gateway, and gcp-storage-emulator for the lake.

Only the environment differs from production. Every client (google-cloud-bigquery in
Dagster's resource and IO manager, dbt-bigquery, sqlalchemy-bigquery under GX, gcsfs
for the lake) runs its production code path:

- `BIGQUERY_EMULATOR_HOST` points google-cloud-bigquery's `Client` at the gateway; every
  client above builds its own `Client` without an explicit endpoint, so each picks it up.
- `GOOGLE_APPLICATION_CREDENTIALS` is a throwaway service-account key (a fresh RSA key,
  never written to the repo) whose `token_uri` is the gateway's `/token`: google-auth signs
  a JWT with the key and exchanges it there for a dummy access token, exactly as it would
  with Google. The gateway refuses any API call without that bearer token.

- `STORAGE_EMULATOR_HOST` points gcsfs at gcp-storage-emulator, and `MLSTACK_LAKE` is a
  `gs://` bucket there: checkpoints are written to it as to Cloud Storage, and BigQuery's
  load jobs read them by their `gs://` URIs. bqemulator resolves a `gs://` URI to a local
  folder (`BQEMU_GCS_LOCAL_ROOT`), which is set to the folder the storage emulator keeps
  its objects in (`<data dir>/.cloudstorage/<bucket>/<object>`): the two emulators see
  the same bytes, as BigQuery and Cloud Storage do.

The gateway forwards everything to the emulator unchanged, except where the emulator
diverges from BigQuery (docs/production.md, "What ran for real"):

- resumable uploads are gathered until the last chunk and passed on as one.
- load jobs from `gs://` Parquet files in a folder named `key=value` (the lake's
  `extracted_at=<UTC>/`): bqemulator reads them with DuckDB's `read_parquet`, which takes
  such a folder for a Hive partition and adds its key as a column (BigQuery does not,
  unless the load asks for Hive partitioning); the gateway links each file under a plain
  name in the same folder tree and loads that link instead: the same bytes.
- `jobs.query` (`POST .../queries`, what `Client.query_and_wait` and so the DB-API under
  sqlalchemy-bigquery and GX call): bqemulator ignores the request's `defaultDataset`
  (unqualified tables are "not found") and reports a failed query as HTTP 200 with an
  `errors` list and no rows, which the client reads as an empty result. BigQuery defines
  `jobs.query` as `jobs.insert` + `getQueryResults` and answers a failed query with an
  HTTP error; the gateway makes exactly those two calls, which bqemulator implements as
  BigQuery does, and turns a failed job into BigQuery's HTTP error.
- extract jobs to `gs://`: bqemulator writes the file into `BQEMU_GCS_LOCAL_ROOT` without
  creating its folders, and behind the storage emulator's back (which would not list it);
  the gateway has it write into a folder of its own and uploads the file through the
  storage emulator's API to the URI the job named, as BigQuery writes to Cloud Storage.
- dbt's DDL for a model with an enforced contract, `CREATE OR REPLACE TABLE t (column
  definitions) OPTIONS() AS (select)`: DuckDB (under bqemulator) cannot parse a column list
  before `AS`; the gateway drops the list. dbt has already compared the query's columns
  and types with the contract (its own query before the DDL), so the contract is still
  checked; only the NOT NULL constraint is not applied on the emulator.
- multipart uploads whose media part is `Content-Type: */*` (what google-cloud-bigquery
  sends for `load_table_from_dataframe`, i.e. Dagster's BigQuery pandas IO manager):
  bqemulator only accepts a list of concrete types, so the gateway says
  `application/octet-stream`.

`python -m tests.support.bigquery_emulator --port 9050` runs the same set-up in the foreground for
`make run` against the emulator, and writes the variables to `.mlstack/bqemulator/env`.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from mlstack_assets.settings import REPO_ROOT
from tests.support.make import make_target

EMULATOR_VENV = REPO_ROOT / ".mlstack" / "bqemulator-venv"
EMULATOR = EMULATOR_VENV / "bin" / "bqemulator"
PROJECT = "mlstack-emulator"
READY_TIMEOUT = 90.0
LAKE_BUCKET = "mlstack-lake"
QUERIES_PATH = re.compile(r"/bigquery/v2/projects/[^/]+/queries")
JOBS_PATH = re.compile(r"/bigquery/v2/projects/[^/]+/jobs")


def ensure_installed() -> Path:
    """The emulator from the project's own Makefile target (idempotent, a no-op when done)."""
    make_target("bigquery-emulator")
    if not EMULATOR.exists():
        raise RuntimeError(f"`make bigquery-emulator` succeeded but left no {EMULATOR}")
    return EMULATOR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_service_account_key(path: Path, project: str, token_uri: str) -> Path:
    """A service-account key shaped like Google's, with a fresh key and a loopback token_uri."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": project,
                "private_key_id": secrets.token_hex(8),
                "private_key": pem,
                "client_email": f"emulator@{project}.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": token_uri,
            }
        )
    )
    path.chmod(0o600)
    return path


# ---------------------------------------------------------------------------------------
# The gateway: a token endpoint, and a pass-through to the emulator with two upload fixes
# ---------------------------------------------------------------------------------------


@dataclass
class GatewayState:
    emulator_port: int
    access_token: str = field(default_factory=lambda: secrets.token_urlsafe(24), repr=False)
    tokens_issued: int = 0
    uploads_retyped: int = 0
    # where bqemulator reads gs:// objects (BQEMU_GCS_LOCAL_ROOT); None: no lake
    storage_root: Path | None = None
    storage_endpoint: str = ""  # the storage emulator, where extract jobs' files are uploaded
    extracts_uploaded: int = 0
    load_uris_linked: int = 0
    contract_tables_created: int = 0  # tables made by dbt's contract DDL, column list dropped
    # every load job asked for: (destination dataset, table, source format, source URIs)
    loads: list[tuple[str, str, str, list[str]]] = field(default_factory=list)
    resumable: dict[str, bytearray] = field(default_factory=dict)
    # (method, path, seconds) of every API call, for the tests and for profiling
    calls: list[tuple[str, str, float]] = field(default_factory=list, repr=False)
    # (method, path prefix) -> HTTP statuses the next such calls get instead of an answer
    faults: dict[tuple[str, str], list[int]] = field(default_factory=dict, repr=False)
    lock: threading.Lock = field(default_factory=threading.Lock)


CONTRACT_DDL = re.compile(r"create\s+or\s+replace\s+table\s+(?:`[^`]+`\.?)+\s*\(", re.I)


def without_contract_columns(sql: str) -> str | None:
    """`sql` without the column list after `CREATE OR REPLACE TABLE <name>`, or None when it
    has none (a plain `CREATE TABLE ... AS`)."""
    match = CONTRACT_DDL.search(sql)
    if match is None:
        return None
    depth, end = 0, match.end() - 1
    for end in range(match.end() - 1, len(sql)):
        depth += {"(": 1, ")": -1}.get(sql[end], 0)
        if depth == 0:
            break
    return sql[: match.end() - 1] + sql[end + 1 :]


def _fix_multipart(body: bytes, content_type: str, state: GatewayState) -> bytes:
    """Give a `*/*` media part a concrete type."""
    match = re.search(r'boundary="?([^";]+)"?', content_type)
    if not match:
        return body
    delimiter = b"--" + match.group(1).encode()
    parts = body.split(delimiter)
    # ['', json part, media part, '--' + epilogue]
    if len(parts) != 4:
        return body
    head, sep, payload = parts[2].partition(b"\r\n\r\n")
    if not sep or not payload.endswith(b"\r\n"):
        return body
    media = payload[:-2]
    if re.search(rb"(?im)^content-type:\s*\*/\*\s*$", head):
        head = re.sub(
            rb"(?im)^content-type:\s*\*/\*\s*$", b"content-type: application/octet-stream", head
        )
        with state.lock:
            state.uploads_retyped += 1
    parts[2] = head + sep + media + b"\r\n"
    return delimiter.join(parts)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _GatewayServer

    def log_message(self, format: str, *args) -> None:  # quiet
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return bytes(data)
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None):
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _token(self, body: bytes) -> None:
        form = parse_qs(body.decode())
        grant = form.get("grant_type", [""])[0]
        assertion = form.get("assertion", [""])[0]
        if grant != "urn:ietf:params:oauth:grant-type:jwt-bearer" or assertion.count(".") != 2:
            self._reply(400, b'{"error": "invalid_grant"}', {"Content-Type": "application/json"})
            return
        state = self.server.state
        with state.lock:
            state.tokens_issued += 1
        token = {"access_token": state.access_token, "expires_in": 3600, "token_type": "Bearer"}
        self._reply(200, json.dumps(token).encode(), {"Content-Type": "application/json"})

    def _handle(self) -> None:
        # recorded as it arrives, not after the answer: a client that has its answer must find
        # its call counted (under load the handler thread appended after the test had counted)
        started, state, path = time.monotonic(), self.server.state, urlsplit(self.path).path
        with state.lock:
            index = len(state.calls)
            state.calls.append((self.command, path, 0.0))
        try:
            self._handle_call()
        finally:
            with state.lock:
                state.calls[index] = (self.command, path, time.monotonic() - started)

    def _handle_call(self) -> None:
        body = self._body()
        url = urlsplit(self.path)
        if url.path == "/token" and self.command == "POST":
            self._token(body)
            return
        state = self.server.state
        if self.headers.get("Authorization") != f"Bearer {state.access_token}":
            self._reply(401, b'{"error": {"code": 401, "message": "no valid bearer token"}}')
            return
        with state.lock:
            queue = next(
                (
                    q
                    for (method, prefix), q in state.faults.items()
                    if method == self.command and url.path.startswith(prefix) and q
                ),
                None,
            )
            fault = queue.pop(0) if queue else None
        if fault is not None:  # BigQuery's error shape, as the client parses it
            error = {"code": fault, "message": "injected by the test", "errors": []}
            self._reply(
                fault, json.dumps({"error": error}).encode(), {"Content-Type": "application/json"}
            )
            return
        headers = {k: v for k, v in self.headers.items() if k.lower() != "transfer-encoding"}
        query = parse_qs(url.query)
        if url.path.startswith("/upload/"):
            if query.get("uploadType") == ["multipart"]:
                body = _fix_multipart(body, self.headers.get("Content-Type", ""), state)
            elif self.command == "PUT" and query.get("upload_id"):
                gathered = self._gather_resumable(query["upload_id"][0], body, headers)
                if gathered is None:
                    return
                body = gathered
        if self.command == "POST" and JOBS_PATH.fullmatch(url.path):
            body = self._without_contract_columns(self._without_hive_folders(body))
            job = json.loads(body or b"{}")
            if (job.get("configuration") or {}).get("extract"):
                self._extract_through_storage(job, headers)
                return
        if self.command == "POST" and QUERIES_PATH.fullmatch(url.path):
            self._query_as_job(url.path.split("/")[4], json.loads(body or b"{}"), headers)
            return
        headers["Content-Length"] = str(len(body))
        self._forward(body, headers)

    def _without_hive_folders(self, body: bytes) -> bytes:
        """A load job's `gs://.../key=value/...` source URIs, as links to the same files
        under names DuckDB does not read as Hive partitions."""
        state = self.server.state
        job = json.loads(body or b"{}")
        load = (job.get("configuration") or {}).get("load") or {}
        uris = load.get("sourceUris") or []
        if load:
            table = load.get("destinationTable") or {}
            with state.lock:
                state.loads.append(
                    (table.get("datasetId"), table.get("tableId"), load.get("sourceFormat"), uris)
                )
        if state.storage_root is None or not any("=" in uri for uri in uris):
            return body
        linked = []
        for uri in uris:
            if not uri.startswith("gs://") or "=" not in uri:
                linked.append(uri)
                continue
            name = hashlib.sha256(uri.encode()).hexdigest()[:16]
            link = state.storage_root / "_gateway_links" / name / uri.rsplit("/", 1)[-1]
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                os.link(state.storage_root / uri.removeprefix("gs://"), link)
            linked.append(f"gs://_gateway_links/{name}/{link.name}")
            with state.lock:
                state.load_uris_linked += 1
        load["sourceUris"] = linked
        return json.dumps(job).encode()

    def _without_contract_columns(self, body: bytes) -> bytes:
        """A query job's `CREATE OR REPLACE TABLE t (columns) ... AS (select)` (dbt's DDL for a
        model with an enforced contract) without its column list, which bqemulator's DuckDB
        cannot parse. dbt has compared the query's columns with the contract before."""
        job = json.loads(body or b"{}")
        query = (job.get("configuration") or {}).get("query") or {}
        if "query" not in query:
            return body
        rewritten = self._contract_columns_dropped(query["query"])
        if rewritten == query["query"]:
            return body
        query["query"] = rewritten
        return json.dumps(job).encode()

    def _contract_columns_dropped(self, sql: str) -> str:
        """`without_contract_columns(sql)`, counted; `sql` itself when it has no list."""
        rewritten = without_contract_columns(sql)
        if rewritten is None:
            return sql
        with self.server.state.lock:
            self.server.state.contract_tables_created += 1
        return rewritten

    def _extract_through_storage(self, job: dict, headers: dict[str, str]) -> None:
        """An extract job to `gs://` as Cloud Storage would receive it: bqemulator writes the
        file into a local folder of its own, and the gateway uploads it through the storage
        emulator's API to the URI the job named."""
        state = self.server.state
        extract = job["configuration"]["extract"]
        wanted = extract.get("destinationUris") or [extract.get("destinationUri")]
        if state.storage_root is None or not all(u and u.startswith("gs://") for u in wanted):
            body = json.dumps(job).encode()
            self._forward(body, {**headers, "Content-Length": str(len(body))})
            return
        local = []
        for uri in wanted:
            name = hashlib.sha256(uri.encode()).hexdigest()[:16]
            path = state.storage_root / "_gateway_extracts" / name / uri.rsplit("/", 1)[-1]
            path.parent.mkdir(parents=True, exist_ok=True)
            local.append((uri, path, f"gs://_gateway_extracts/{name}/{path.name}"))
        extract.pop("destinationUri", None)
        extract["destinationUris"] = [written for _, _, written in local]
        status, answer = self._call("POST", self.path, job, headers)
        if status == 200 and not (answer.get("status") or {}).get("errorResult"):
            for uri, path, _ in local:
                bucket, _, key = uri.removeprefix("gs://").partition("/")
                upload = urlsplit(state.storage_endpoint)
                connection = http.client.HTTPConnection(upload.hostname, upload.port, timeout=120)
                try:
                    name = quote(key, safe="")
                    connection.request(
                        "POST",
                        f"/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}",
                        body=path.read_bytes(),
                        headers={"Content-Type": "application/octet-stream"},
                    )
                    response = connection.getresponse()
                    response.read()
                    if response.status != 200:
                        raise RuntimeError(f"upload of {uri} answered HTTP {response.status}")
                finally:
                    connection.close()
                path.unlink()
                with state.lock:
                    state.extracts_uploaded += 1
            extract["destinationUris"] = wanted  # what the client asked for, as BigQuery says
        self._reply(status, json.dumps(answer).encode(), {"Content-Type": "application/json"})

    def _query_as_job(self, project: str, request: dict, headers: dict[str, str]) -> None:
        """`jobs.query` as BigQuery defines it: `jobs.insert`, then `getQueryResults`."""
        if request.get("dryRun"):  # not used by mlstack; bqemulator's own answer
            body = json.dumps(request).encode()
            self._forward(body, {**headers, "Content-Length": str(len(body))})
            return
        job_id = f"gateway_{secrets.token_hex(8)}"
        request = {**request, "query": self._contract_columns_dropped(request.get("query") or "")}
        query_fields = (
            "query", "defaultDataset", "useLegacySql", "useQueryCache", "parameterMode",
            "queryParameters", "connectionProperties", "maximumBytesBilled", "createSession",
        )  # fmt: skip
        job = {
            "jobReference": {"projectId": project, "jobId": job_id},
            "configuration": {
                "query": {k: request[k] for k in query_fields if k in request},
                **({"labels": request["labels"]} if "labels" in request else {}),
            },
        }
        if request.get("location"):
            job["jobReference"]["location"] = request["location"]
        status, inserted = self._call("POST", f"/bigquery/v2/projects/{project}/jobs", job, headers)
        if status != 200:
            self._reply(status, json.dumps(inserted).encode(), {"Content-Type": "application/json"})
            return
        error = (inserted.get("status") or {}).get("errorResult")
        if error:
            code = 404 if error.get("reason") == "notFound" else 400
            envelope = {
                "error": {
                    "code": code,
                    "message": error.get("message", ""),
                    "errors": [{"domain": "global", **error}],
                    "status": "NOT_FOUND" if code == 404 else "INVALID_ARGUMENT",
                }
            }
            self._reply(code, json.dumps(envelope).encode(), {"Content-Type": "application/json"})
            return
        max_results = request.get("maxResults")
        path = f"/bigquery/v2/projects/{project}/queries/{job_id}"
        status, results = self._call(
            "GET", path + (f"?maxResults={max_results}" if max_results else ""), None, headers
        )
        if status == 404:  # a statement without a result set (DDL, DML)
            results = {"schema": {"fields": []}, "rows": [], "totalRows": "0"}
        elif status != 200:
            self._reply(status, json.dumps(results).encode(), {"Content-Type": "application/json"})
            return
        statistics = (inserted.get("statistics") or {}).get("query") or {}
        response = {
            **results,
            "kind": "bigquery#queryResponse",
            "jobReference": inserted["jobReference"],
            "jobComplete": True,
            **{
                key: statistics[key]
                for key in ("statementType", "numDmlAffectedRows", "cacheHit")
                if key in statistics
            },
        }
        self._reply(200, json.dumps(response).encode(), {"Content-Type": "application/json"})

    def _call(self, method: str, path: str, payload, headers: dict[str, str]):
        forwarded = {
            k: v for k, v in headers.items() if k.lower() not in ("content-length", "content-type")
        }
        body = b"" if payload is None else json.dumps(payload).encode()
        forwarded |= {"Content-Type": "application/json", "Content-Length": str(len(body))}
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.server.state.emulator_port, timeout=600
        )
        try:
            connection.request(method, path, body=body or None, headers=forwarded)
            response = connection.getresponse()
            data = response.read()
            return response.status, json.loads(data or b"{}")
        finally:
            connection.close()

    def _gather_resumable(self, upload_id: str, body: bytes, headers: dict[str, str]):
        """Collect the chunks of a resumable upload; on the last one, return it whole."""
        state = self.server.state
        content_range = headers.pop("Content-Range", None) or headers.pop("content-range", "")
        match = re.match(r"bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)", content_range.strip())
        if not match:
            self._reply(400, b'{"error": {"code": 400, "message": "bad Content-Range"}}')
            return None
        with state.lock:
            buffer = state.resumable.setdefault(upload_id, bytearray())
            buffer += body
            received = len(buffer)
        total = match.group(3)
        if total == "*" or int(total) != received:
            range_header = {"Range": f"bytes=0-{received - 1}"} if received else {}
            self._reply(308, b"", range_header)
            return None
        with state.lock:
            data = bytes(state.resumable.pop(upload_id))
        headers["Content-Range"] = f"bytes 0-{len(data) - 1}/{len(data)}" if data else "bytes */0"
        return data

    def _forward(self, body: bytes, headers: dict[str, str]) -> None:
        connection = http.client.HTTPConnection(
            "127.0.0.1", self.server.state.emulator_port, timeout=600
        )
        try:
            connection.request(self.command, self.path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            passed = {
                name: value
                for name, value in response.getheaders()
                if name.lower() not in ("content-length", "transfer-encoding", "connection")
            }
            self._reply(response.status, data, passed)
        finally:
            connection.close()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle


class _GatewayServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, state: GatewayState):
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = state


# ---------------------------------------------------------------------------------------
# The emulator process
# ---------------------------------------------------------------------------------------


@dataclass
class BigQueryEmulator:
    """A running emulator and gateway: what a client needs to reach it."""

    endpoint: str
    project: str
    credentials: Path
    gateway: GatewayState
    log: Path
    storage_endpoint: str = ""
    storage_root: Path | None = None  # where the storage emulator keeps its objects

    @property
    def lake(self) -> str:
        return f"gs://{LAKE_BUCKET}/lake"

    @property
    def environment(self) -> dict[str, str]:
        return {
            "BIGQUERY_EMULATOR_HOST": self.endpoint,
            "GOOGLE_APPLICATION_CREDENTIALS": str(self.credentials),
            "MLSTACK_BQ_PROJECT": self.project,
            "STORAGE_EMULATOR_HOST": self.storage_endpoint,
            "MLSTACK_LAKE": self.lake,
        }

    def client(self):
        """google-cloud-bigquery's client, through the same key and endpoint as mlstack."""
        from google.cloud import bigquery
        from google.oauth2 import service_account

        credentials = service_account.Credentials.from_service_account_file(
            str(self.credentials), scopes=["https://www.googleapis.com/auth/bigquery"]
        )
        return bigquery.Client(
            project=self.project,
            credentials=credentials,
            client_options={"api_endpoint": self.endpoint},
        )


def _wait_ready(
    name: str, port: int, path: str, process: subprocess.Popen, log: Path, timeout: float
) -> None:
    """Until `GET path` on 127.0.0.1:port answers 200; fails with the log's tail when
    `name`'s process exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}:\n{_tail(log)}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            connection.request("GET", path)
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise RuntimeError(
        f"{name} did not answer on 127.0.0.1:{port} in {timeout:.0f} s:\n{_tail(log)}"
    )


def _tail(log: Path, lines: int = 30) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def _stop(process: subprocess.Popen) -> None:
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=20)


@contextmanager
def running_storage_emulator(workdir: Path) -> Iterator[tuple[str, Path]]:
    """gcp-storage-emulator on loopback with the lake's bucket; its endpoint and the folder
    it keeps objects in (`<bucket>/<object>` below it)."""
    import sys

    data = workdir / "storage"
    port = free_port()
    log = workdir / "storage-emulator.log"
    with log.open("w") as log_handle:
        command = [sys.executable, "-m", "gcp_storage_emulator", "--data-dir", str(data)]
        command += ["start", "--host", "127.0.0.1", "--port", str(port), "--quiet"]
        command += ["--default-bucket", LAKE_BUCKET]
        process = subprocess.Popen(
            command,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_ready(
            "gcp-storage-emulator",
            port,
            f"/storage/v1/b/{LAKE_BUCKET}",
            process,
            log,
            READY_TIMEOUT,
        )
        yield f"http://127.0.0.1:{port}", data / ".cloudstorage"
    finally:
        _stop(process)


@contextmanager
def running_emulator(workdir: Path, port: int | None = None) -> Iterator[BigQueryEmulator]:
    """Start bqemulator, the gateway and the storage emulator on loopback; stop them on exit."""
    executable = ensure_installed()
    workdir.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        storage_endpoint, storage_root = stack.enter_context(running_storage_emulator(workdir))
        emulator = stack.enter_context(
            _running_bigquery(executable, workdir, port, storage_root, storage_endpoint)
        )
        emulator.storage_endpoint = storage_endpoint
        emulator.storage_root = storage_root
        yield emulator


@contextmanager
def _running_bigquery(
    executable: Path, workdir: Path, port: int | None, storage_root: Path, storage_endpoint: str
) -> Iterator[BigQueryEmulator]:
    rest_port, grpc_port = free_port(), free_port()
    log = workdir / "bqemulator.log"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("BQEMU_", "VIRTUAL_ENV"))},
        # DuckDB looks for the spatial extension under $HOME/.duckdb (installed there by make)
        "HOME": str(EMULATOR_VENV / "home"),
        # the avro extension would be fetched from DuckDB's site, which is not reachable
        "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false",
        "BQEMU_LOG_LEVEL": "warning",
        # gs://<bucket>/<object> is read from here: where the storage emulator keeps them
        "BQEMU_GCS_LOCAL_ROOT": str(storage_root),
    }
    with log.open("w") as log_handle:
        process = subprocess.Popen(
            [
                str(executable),
                "start",
                "--rest-host",
                "127.0.0.1",
                "--rest-port",
                str(rest_port),
                "--grpc-host",
                "127.0.0.1",
                "--grpc-port",
                str(grpc_port),
                "--project",
                PROJECT,
            ],
            cwd=workdir,
            env=env,
            stdout=log_handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = None
    try:
        _wait_ready(
            "bqemulator",
            rest_port,
            f"/bigquery/v2/projects/{PROJECT}/datasets",
            process,
            log,
            READY_TIMEOUT,
        )
        state = GatewayState(
            emulator_port=rest_port, storage_root=storage_root, storage_endpoint=storage_endpoint
        )
        server = _GatewayServer(port or 0, state)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        credentials = write_service_account_key(
            workdir / "service-account.json", PROJECT, f"{endpoint}/token"
        )
        yield BigQueryEmulator(endpoint, PROJECT, credentials, state, log)
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
        _stop(process)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9050, help="gateway port (clients use it)")
    parser.add_argument(
        "--workdir",
        type=Path,
        default=REPO_ROOT / ".mlstack" / "bqemulator",
        help="where the key file, the log and `env` are written",
    )
    args = parser.parse_args()
    workdir = args.workdir.resolve()
    shutil.rmtree(workdir, ignore_errors=True)
    with running_emulator(workdir, port=args.port) as emulator:
        env_file = workdir / "env"
        exports = {"MLSTACK_WAREHOUSE": "bigquery", **emulator.environment}
        partial = workdir / "env.partial"
        partial.write_text("".join(f"export {k}={shlex.quote(v)}\n" for k, v in exports.items()))
        partial.rename(env_file)  # appears whole, once the emulator answers
        print(f"BigQuery emulator (bqemulator) on {emulator.endpoint}, project {PROJECT}")
        print(f"Cloud Storage emulator on {emulator.storage_endpoint}, lake {emulator.lake}")
        print(f"In another shell: . {env_file} && make run")
        print("Ctrl-C stops them (BigQuery's data lives in memory).", flush=True)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        with suppress(KeyboardInterrupt):
            threading.Event().wait()


if __name__ == "__main__":
    main()
