"""A loopback stand-in for the Slack Web API (`chat.postMessage`) and a generic webhook.

It answers the way Slack does (`{"ok": true, ...}` or `{"ok": false, "error": ...}`),
requires the bearer token it was given and a channel, and records every message; the
webhook route (whose path holds a secret, as real webhook URLs do) records JSON bodies.
Anything else is answered with an error and recorded in `violations`.
"""

import json
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs


@dataclass
class AlertApi:
    token: str = field(default_factory=lambda: f"xoxb-{secrets.token_hex(8)}")
    webhook_path: str = field(default_factory=lambda: f"/hooks/{secrets.token_hex(8)}")
    base_url: str = ""
    slack_messages: list[dict] = field(default_factory=list)
    webhook_messages: list[dict] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def slack_api_url(self) -> str:
        return f"{self.base_url}/api/"

    @property
    def webhook_url(self) -> str:
        return self.base_url + self.webhook_path


def _handler(api: AlertApi) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *_: object) -> None:
            pass

        def _answer(self, status: int, body: dict) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _refuse(self, status: int, why: str) -> None:
            with api.lock:
                api.violations.append(f"{self.command} {self.path}: {why}")
            self._answer(status, {"ok": False, "error": why})

        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            if self.path == api.webhook_path:
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._refuse(400, "not json")
                with api.lock:
                    api.webhook_messages.append(body)
                return self._answer(200, {"ok": True})
            if self.path != "/api/chat.postMessage":
                return self._refuse(404, "unknown_method")
            if self.headers.get("Authorization") != f"Bearer {api.token}":
                return self._refuse(200, "invalid_auth")  # Slack answers 200 with ok=false
            if "json" in (self.headers.get("Content-Type") or ""):
                body = json.loads(raw)
            else:
                body = {key: values[0] for key, values in parse_qs(raw).items()}
            if not body.get("channel") or not body.get("text"):
                return self._refuse(200, "no_text_or_channel")
            with api.lock:
                api.slack_messages.append(body)
            self._answer(200, {"ok": True, "channel": body["channel"], "ts": "1.000001"})

        def do_GET(self) -> None:
            self._refuse(405, "method_not_allowed")

    return Handler


@contextmanager
def alert_api() -> Iterator[AlertApi]:
    api = AlertApi()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(api))
    api.base_url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield api
    finally:
        server.shutdown()
        server.server_close()
