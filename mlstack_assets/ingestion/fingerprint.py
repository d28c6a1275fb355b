"""Has a source changed? Answered cheaply from last time's `state` (the sensor's cursor): a local
file is hashed only when its size or mtime moved; a web source gets a conditional GET (ETag /
Last-Modified), its body hashed only when it has neither."""

from dataclasses import dataclass, field
from typing import Any

from mlstack_assets.ingestion.sources import SourceSpec, http_response, local_file
from mlstack_assets.lake import CHUNK, file_sha256, streamed_sha256


@dataclass(frozen=True)
class Fingerprint:
    value: str  # e.g. "sha256:…", "etag:…", "last-modified:…"
    changed: bool
    how: str  # what was checked, for the sensor's skip reason
    state: dict[str, Any] = field(default_factory=dict)


def _checked(value: str, how: str, state: dict[str, Any], previous: dict[str, Any]) -> Fingerprint:
    changed = value != previous.get("fingerprint")
    return Fingerprint(value, changed, how + ("" if changed else " unchanged"), state)


def _local(spec: SourceSpec, previous: dict[str, Any]) -> Fingerprint:
    stat = local_file(spec).stat()
    if previous.get("size") == stat.st_size and previous.get("mtime_ns") == stat.st_mtime_ns:
        return Fingerprint(previous["fingerprint"], False, "size and mtime unchanged", previous)
    value = f"sha256:{file_sha256(spec.local_path)}"
    state = {"fingerprint": value, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return _checked(value, "content hash", state, previous)


def _remote(spec: SourceSpec, previous: dict[str, Any]) -> Fingerprint:
    validators = (("If-None-Match", "etag"), ("If-Modified-Since", "last_modified"))
    conditional = {header: previous[key] for header, key in validators if previous.get(key)}
    with http_response(spec, conditional, accept=(200, 304)) as response:
        if response.status_code == 304:
            return Fingerprint(previous["fingerprint"], False, "304 Not Modified", previous)
        etag, last_modified = response.headers.get("ETag"), response.headers.get("Last-Modified")
        if etag:
            value, how = f"etag:{etag}", "ETag"
        elif last_modified:
            value, how = f"last-modified:{last_modified}", "Last-Modified"
        else:  # no validators: hash the body, streamed
            value, how = f"sha256:{streamed_sha256(response.iter_content(CHUNK))}", "content hash"
    state = {"fingerprint": value, "etag": etag, "last_modified": last_modified}
    return _checked(value, how, state, previous)


def fingerprint(spec: SourceSpec, previous: dict[str, Any] | None = None) -> Fingerprint:
    """Fingerprint `spec`; raises `SourceError` when the source cannot be reached."""
    return (_remote if spec.is_remote else _local)(spec, previous or {})
