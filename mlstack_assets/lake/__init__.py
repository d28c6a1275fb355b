"""The lake under the warehouse: immutable Parquet files with JSON manifests.

`MLSTACK_LAKE` is a local folder (default `.mlstack/lake`) or `gs://bucket/prefix` in
production. Both are reached through fsspec (the local filesystem, or gcsfs), so every
operation below has one implementation; the two places where a local folder needs care
that Cloud Storage gives for free (an atomic write of one object) say so.

Layout (the design documents' staging and production lakes):

    <lake>/staging/raw_<source>/extracted_at=<UTC>/data.parquet + manifest.json
    <lake>/production/<table>/...

A directory is complete once its `manifest.json` exists (written last); readers skip
directories without one (a write that was killed).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from functools import cached_property
from pathlib import Path
from typing import Any

CHUNK = 1 << 20
MANIFEST = "manifest.json"
# a bound on every Cloud Storage request (gcsfs' default is none)
GCS_TIMEOUT_SECONDS = 120


class LakeError(RuntimeError):
    """The lake could not be read or written; the message names the path."""


class Lake:
    """A lake rooted at a local folder or at `gs://bucket/prefix`."""

    def __init__(self, root: str):
        self.root = root.rstrip("/")

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

            # No listings cache: other processes (steps, runs, BigQuery's extract jobs) write
            # the lake too, and a cached listing of a folder hides what they added since.
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
        """Claim `key` for a new set of files; raise `LakeError` if it exists already.

        Local: `mkdir` without `exist_ok` is the claim. Cloud Storage has no directories:
        the key must hold no object yet (its name carries a timestamp and a random suffix,
        so two writers never pick the same one).
        """
        if self.is_gcs:
            if self.fs.exists(self.uri(key)):
                raise LakeError(f"{self.uri(key)} exists already; the lake never overwrites")
            return
        try:
            Path(self.uri(key)).mkdir(parents=True)
        except FileExistsError:
            raise LakeError(f"{self.uri(key)} exists already; the lake never overwrites") from None

    def put_file(self, local: Path, key: str) -> None:
        """Move (local lake) or upload (Cloud Storage) a finished local file to `key`."""
        target = self.uri(key)
        if self.is_gcs:
            self.fs.put_file(str(local), target)
            return
        partial = f"{target}.partial-{uuid.uuid4().hex[:8]}"
        shutil.move(str(local), partial)
        os.replace(partial, target)

    def write_json(self, key: str, document: dict[str, Any]) -> None:
        """Write a small JSON document whole: readers see the old one or the new one.

        One Cloud Storage object write is atomic; locally, a temporary file is renamed.
        """
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
        """The JSON document at `key`, or None when there is none."""
        try:
            with self.fs.open(self.uri(key), "rb") as handle:
                return json.loads(handle.read())
        except FileNotFoundError:
            return None

    def directories(self, key: str) -> list[str]:
        """The names of the directories directly under `key` (sorted; [] when none)."""
        try:
            entries = self.fs.ls(self.uri(key), detail=True)
        except FileNotFoundError:
            return []
        names = [
            entry["name"].rstrip("/").rsplit("/", 1)[-1]
            for entry in entries
            if entry.get("type") == "directory"
        ]
        return sorted(names)

    def remove(self, key: str) -> None:
        """Delete `key` and everything under it."""
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.uri(key), recursive=True)

    def modified(self, key: str) -> float | None:
        """When the file at `key` was last written (epoch seconds), or None."""
        try:
            info = self.fs.info(self.uri(key))
        except FileNotFoundError:
            return None
        for field in ("mtime", "updated", "created"):
            value = info.get(field)
            if isinstance(value, int | float):
                return float(value)
            if value is not None:
                from datetime import datetime

                return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
        return None

    def sha256(self, key: str) -> str:
        """The file's sha256, streamed from the lake (never whole in memory)."""
        digest = hashlib.sha256()
        with self.fs.open(self.uri(key), "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def attach(self, conn: Any) -> None:
        """Let a DuckDB connection read `gs://` URIs of this lake (through gcsfs; DuckDB's
        own httpfs cannot reach a Cloud Storage emulator). Nothing to do for a folder."""
        if self.is_gcs:
            conn.register_filesystem(self.fs)


def file_sha256(path: Path) -> str:
    """A local file's sha256, streamed."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
