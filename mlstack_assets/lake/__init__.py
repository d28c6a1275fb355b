"""The lake under the warehouse: immutable Parquet files, each with a JSON manifest.

`MLSTACK_LAKE` is a local folder (default `.mlstack/lake`) or `gs://bucket/prefix`. Both
are reached through fsspec (the local filesystem, or gcsfs), so every operation has one
implementation. Layout:

    <lake>/staging/raw_<source>/extracted_at=<UTC>/   data.parquet + manifest.json
    <lake>/production/<table>/version=<UTC>/          manifest.json (+ data.parquet)
    <lake>/production/<table>/current.json

An entry (a checkpoint or a version) exists once its `manifest.json` does: it is written
last, and readers skip a directory without one (a writer that was killed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
MANIFEST = "manifest.json"
DATA = "data.parquet"
GCS_TIMEOUT_SECONDS = 120  # a bound on every Cloud Storage request (gcsfs has none)


class LakeError(RuntimeError):
    """The lake could not be read or written, or holds a file that is not what it should."""


def streamed_sha256(chunks: Iterable[bytes]) -> str:
    """The sha256 (hex) of a stream of bytes, never whole in memory."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def utc_label(moment: datetime | None = None) -> str:
    """`20261201T214011.123456Z`: sortable, unique to the microsecond, safe in any path."""
    return (
        (moment or datetime.now(timezone.utc))
        .astimezone(timezone.utc)
        .strftime("%Y%m%dT%H%M%S.%fZ")
    )


class Lake:
    """A lake rooted at a local folder or at `gs://bucket/prefix`."""

    def __init__(self, root: str):
        self.root = str(root).rstrip("/")

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    @property
    def is_gcs(self) -> bool:
        return self.root.startswith("gs://")

    @cached_property
    def fs(self) -> Any:
        """The fsspec filesystem behind the lake (gcsfs honours STORAGE_EMULATOR_HOST)."""
        if self.is_gcs:
            import gcsfs

            # no listings cache: other processes (steps, runs, BigQuery's extract jobs) write
            # the lake too, and a cached listing hides what they added since
            return gcsfs.GCSFileSystem(
                requests_timeout=GCS_TIMEOUT_SECONDS,
                timeout=GCS_TIMEOUT_SECONDS,
                use_listings_cache=False,
            )
        import fsspec

        return fsspec.filesystem("file")

    def uri(self, key: str) -> str:
        """Where `key` is: a local path, or a `gs://` URI (what DuckDB and BigQuery read)."""
        return f"{self.root}/{key}" if key else self.root

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.uri(key))

    def make_new_directory(self, key: str) -> None:
        """Claim `key` for a new entry; `LakeError` if it exists. Locally `mkdir` is the
        claim; Cloud Storage has no directories, so the key must hold no object yet."""
        taken = f"{self.uri(key)} exists already; the lake never overwrites"
        if self.is_gcs:
            if self.fs.exists(self.uri(key)):
                raise LakeError(taken)
            return
        try:
            Path(self.uri(key)).mkdir(parents=True)
        except FileExistsError:
            raise LakeError(taken) from None

    def put_file(self, local: Path, key: str) -> None:
        """Move (a local lake) or upload (Cloud Storage) a finished local file to `key`."""
        target = self.uri(key)
        if self.is_gcs:
            self.fs.put_file(str(local), target)
            return
        partial = f"{target}.partial-{uuid.uuid4().hex[:8]}"
        shutil.move(str(local), partial)
        os.replace(partial, target)

    def write_json(self, key: str, document: dict[str, Any]) -> None:
        """Write a small JSON document whole: readers see the old one or the new one (one
        Cloud Storage object write is atomic; locally a temporary file is renamed)."""
        data = (json.dumps(document, indent=2, sort_keys=True, default=str) + "\n").encode()
        target = self.uri(key)
        if self.is_gcs:
            self.fs.pipe_file(target, data)
            return
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        partial = Path(f"{target}.partial-{uuid.uuid4().hex[:8]}")
        partial.write_bytes(data)
        os.replace(partial, target)

    def read_json(self, key: str) -> dict[str, Any] | None:
        try:
            with self.fs.open(self.uri(key), "rb") as handle:
                return json.loads(handle.read())
        except FileNotFoundError:
            return None

    def directories(self, key: str) -> list[str]:
        """The names of the directories directly under `key`, sorted ([] when none)."""
        try:
            entries = self.fs.ls(self.uri(key), detail=True)
        except FileNotFoundError:
            return []
        return sorted(
            entry["name"].rstrip("/").rsplit("/", 1)[-1]
            for entry in entries
            if entry.get("type") == "directory"
        )

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.uri(key), recursive=True)

    def modified(self, key: str) -> float | None:
        """When `key` was last written (epoch seconds), or None."""
        try:
            info = self.fs.info(self.uri(key))
        except FileNotFoundError:
            return None
        for field in ("mtime", "updated", "created"):
            value = info.get(field)
            if isinstance(value, int | float):
                return float(value)
            if value is not None:
                return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
        return None

    def sha256(self, uri: str) -> str:
        """The sha256 of the file at `uri` (a key of this lake, or a path or URI it holds)."""
        uri = uri if uri.startswith((self.root, "/")) else self.uri(uri)
        with self.fs.open(uri, "rb") as handle:
            return streamed_sha256(iter(lambda: handle.read(CHUNK), b""))

    def attach(self, conn: Any) -> None:
        """Let a DuckDB connection read this lake's `gs://` URIs (through gcsfs: DuckDB's
        httpfs cannot reach a Cloud Storage emulator). Nothing to do for a folder."""
        if self.is_gcs:
            conn.register_filesystem(self.fs)


@dataclass(frozen=True)
class Entry:
    """A directory of the lake with a manifest and the Parquet file it describes."""

    lake: Lake
    key: str
    manifest: dict[str, Any]

    @property
    def id(self) -> str:
        """The entry's UTC label, e.g. `20261201T214011.123456Z`."""
        return self.key.rsplit("=", 1)[-1]

    @property
    def data_uri(self) -> str:
        """Its Parquet file: beside the manifest, or (a raw table's version) its checkpoint's."""
        data = self.manifest.get("data", DATA)
        return data if "/" in data else self.lake.uri(f"{self.key}/{data}")

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    def verify(self, what: str) -> None:
        """`LakeError` unless the data file is there and is the one the manifest describes."""
        try:
            found = self.lake.sha256(self.data_uri)
        except FileNotFoundError:
            raise LakeError(f"{what}: its data file {self.data_uri} is missing") from None
        if found != self.manifest["sha256"]:
            raise LakeError(
                f"{what}: {self.data_uri} has sha256 {found}, its manifest says"
                f" {self.manifest['sha256']}: the file was changed after it was written"
            )


def entries(lake: Lake, prefix: str, partition: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, manifest) of every complete entry `<prefix>/<partition><id>`, newest first."""
    for name in reversed(lake.directories(prefix)):
        if name.startswith(partition):
            manifest = lake.read_json(f"{prefix}/{name}/{MANIFEST}")
            if manifest is not None:
                yield f"{prefix}/{name}", manifest


def file_sha256(path: Path) -> str:
    """A local file's sha256, streamed."""
    with Path(path).open("rb") as handle:
        return streamed_sha256(iter(lambda: handle.read(CHUNK), b""))
