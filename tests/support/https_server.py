"""A real HTTPS server on 127.0.0.1, with a throwaway certificate authority.

The Airbyte File source reads web sources over HTTPS only, so tests serve their CSVs over
TLS. The test points `REQUESTS_CA_BUNDLE` at the certificate, which the connector's own
process inherits. Routes can return any status, ETag / Last-Modified headers, stream a
body slowly (to kill a sync in the middle), at a set rate or one byte at a time, or fail their first
requests with a connection reset in the middle of the body or an HTTP error (retries).
"""

import contextlib
import datetime
import ipaddress
import socket
import ssl
import struct
import threading
import time
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


@dataclass
class Route:
    body: bytes = b""
    status: int = 200
    etag: str | None = None
    last_modified: float | None = None  # epoch seconds
    slow_after: int | None = None  # send this many bytes, then stall until released
    trickle_seconds: float | None = None  # send one byte, wait this long, and so on
    bytes_per_second: int | None = None  # send the body at about this rate, 20 writes a second
    # the first requests fail, one item each: "reset" (half the body, then a TCP reset)
    # or an HTTP status; later requests are answered normally
    failures: list[str | int] = field(default_factory=list)


@dataclass
class HTTPSServer:
    base_url: str
    ca_bundle: Path
    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[tuple[str, str, dict]] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def count(self, path: str, method: str = "GET") -> int:
        return sum(1 for m, p, _ in self.requests if p == path and m == method)


def _handler(server: HTTPSServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def _respond(self, include_body: bool) -> None:
            server.requests.append((self.command, self.path, dict(self.headers)))
            route = server.routes.get(self.path)
            if route is None:
                self.send_error(404, "Not Found")
                return
            since = self.headers.get("If-Modified-Since")
            if (route.etag and self.headers.get("If-None-Match") == route.etag) or (
                route.last_modified is not None
                and since
                and parsedate_to_datetime(since).timestamp() >= int(route.last_modified)
            ):
                self.send_response(304)
                self.end_headers()
                return
            if route.failures:
                failure = route.failures.pop(0)
                if failure != "reset":
                    self.send_error(int(failure))
                    return
                self._reset_midway(route.body)
                return
            self.send_response(route.status)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(route.body)))
            if route.etag:
                self.send_header("ETag", route.etag)
            if route.last_modified is not None:
                self.send_header("Last-Modified", formatdate(route.last_modified, usegmt=True))
            self.end_headers()
            if not include_body:
                return
            if route.trickle_seconds is not None:
                for position in range(len(route.body)):
                    self.wfile.write(route.body[position : position + 1])
                    self.wfile.flush()
                    if server.release.wait(timeout=route.trickle_seconds):
                        break
                return
            if route.bytes_per_second is not None:
                step = max(route.bytes_per_second // 20, 1)
                for position in range(0, len(route.body), step):
                    self.wfile.write(route.body[position : position + step])
                    self.wfile.flush()
                    time.sleep(step / route.bytes_per_second)
                return
            if route.slow_after is None:
                self.wfile.write(route.body)
                return
            self.wfile.write(route.body[: route.slow_after])
            self.wfile.flush()
            server.release.wait(timeout=120)
            self.wfile.write(route.body[route.slow_after :])

        def _reset_midway(self, body: bytes) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/csv")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            # SO_LINGER 0: closing sends a TCP RST, as a dropped connection does
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()
            self.close_connection = True

        def finish(self) -> None:
            with contextlib.suppress(OSError, ValueError):  # after a deliberate reset
                super().finish()

        def do_GET(self) -> None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self._respond(include_body=True)

        def do_HEAD(self) -> None:
            self._respond(include_body=False)

    return Handler


def start_https_server(directory: Path) -> tuple[HTTPSServer, ThreadingHTTPServer]:
    cert, key = write_self_signed_certificate(directory)
    state = HTTPSServer(base_url="", ca_bundle=cert)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    httpd.daemon_threads = True
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    httpd.socket = context.wrap_socket(httpd.socket, server_side=True)
    state.base_url = f"https://127.0.0.1:{httpd.server_address[1]}"
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return state, httpd
