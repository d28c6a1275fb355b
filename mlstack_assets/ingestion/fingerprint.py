"""Has a source changed? Answered cheaply, from what was seen last time.

- Local file: size and mtime first; only when they moved is the content hashed, so a
  file that was touched but not changed is not a change.
- HTTP(S): a conditional GET with the last ETag / Last-Modified (a 304 ends it); a server
  that sends neither is fingerprinted by a hash of the body.

The fingerprint string is the source asset's data version; `state` is what the sensor
keeps in its cursor for the next check.
"""

from dataclasses import dataclass, field
from typing import Any

from mlstack_assets.ingestion.sources import SourceSpec, http_response, local_file
from mlstack_assets.lake import streamed_sha256

CHUNK = 1 << 20


@dataclass(frozen=True)
class Fingerprint:
    value: str  # e.g. "sha256:…", "etag:…", "last-modified:…"
    changed: bool
    how: str  # what was checked, for the sensor's skip reason
    state: dict[str, Any] = field(default_factory=dict)


def _local(spec: SourceSpec, previous: dict[str, Any]) -> Fingerprint:
    stat = local_file(spec).stat()
    if previous.get("size") == stat.st_size and previous.get("mtime_ns") == stat.st_mtime_ns:
        return Fingerprint(previous["fingerprint"], False, "size and mtime unchanged", previous)
    with spec.local_path.open("rb") as handle:
        value = f"sha256:{streamed_sha256(iter(lambda: handle.read(CHUNK), b''))}"
    state = {"fingerprint": value, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    changed = value != previous.get("fingerprint")
    return Fingerprint(value, changed, "content hash" + ("" if changed else " unchanged"), state)


def _remote(spec: SourceSpec, previous: dict[str, Any]) -> Fingerprint:
    conditional = {}
    if previous.get("etag"):
        conditional["If-None-Match"] = previous["etag"]
    if previous.get("last_modified"):
        conditional["If-Modified-Since"] = previous["last_modified"]
    with http_response(spec, conditional, accept=(200, 304)) as response:
        if response.status_code == 304:
            return Fingerprint(previous["fingerprint"], False, "304 Not Modified", previous)
        etag = response.headers.get("ETag")
        last_modified = response.headers.get("Last-Modified")
        if etag:
            value, how = f"etag:{etag}", "ETag"
        elif last_modified:
            value, how = f"last-modified:{last_modified}", "Last-Modified"
        else:  # no validators: read the body (streamed) and hash it
            value = f"sha256:{streamed_sha256(response.iter_content(CHUNK))}"
            how = "content hash"
    state = {"fingerprint": value, "etag": etag, "last_modified": last_modified}
    changed = value != previous.get("fingerprint")
    return Fingerprint(value, changed, how + ("" if changed else " unchanged"), state)


def fingerprint(spec: SourceSpec, previous: dict[str, Any] | None = None) -> Fingerprint:
    """Fingerprint `spec`; raises `SourceError` when the source cannot be reached."""
    return (_remote if spec.is_remote else _local)(spec, previous or {})
