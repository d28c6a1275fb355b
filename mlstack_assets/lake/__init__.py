"""The lake under the warehouse: immutable Parquet files with JSON manifests, through fsspec in a
folder (`MLSTACK_LAKE`, default `.mlstack/lake`) or `gs://bucket/prefix`. An entry exists once its
`manifest.json`, written last, does:

    <lake>/staging/raw_<source>/extracted_at=<UTC>/   data.parquet + manifest.json
    <lake>/production/<table>/version=<UTC>/          manifest.json (+ data.parquet)
    <lake>/production/<table>/current.json
"""

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
from typing import Any, ClassVar

CHUNK = 1 << 20
MANIFEST = "manifest.json"
DATA = "data.parquet"


class LakeError(RuntimeError):
    """The lake could not be read or written, or holds a file that is not what it should."""


def streamed_sha256(chunks: Iterable[bytes]) -> str:
    """The sha256 (hex) of a stream of bytes, never whole in memory."""
    digest = hashlib.sha256()
    for chunk in chunks:
        digest.update(chunk)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    """A local file's sha256, streamed."""
    with Path(path).open("rb") as handle:
        return streamed_sha256(iter(lambda: handle.read(CHUNK), b""))


def utc_label(moment: datetime | None = None) -> str:
    """`20261201T214011.123456Z`: sortable, unique to the microsecond, safe in any path."""
    moment = moment or datetime.now(timezone.utc)
    return moment.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")


class Lake:
    """A lake rooted at a local folder or at `gs://bucket/prefix`."""

    def __init__(self, root: str):
        self.root = str(root).rstrip("/")
        self.is_gcs = self.root.startswith("gs://")

    def __repr__(self) -> str:
        return f"Lake({self.root!r})"

    @cached_property
    def fs(self) -> Any:
        """The fsspec filesystem behind the lake (gcsfs honours STORAGE_EMULATOR_HOST)."""
        import fsspec

        if not self.is_gcs:
            return fsspec.filesystem("file")
        # bounded requests (gcsfs has no bound); no listings cache: others write the lake too
        return fsspec.filesystem("gcs", requests_timeout=120, timeout=120, use_listings_cache=False)

    def uri(self, key: str) -> str:
        """Where `key` is: a local path, or a `gs://` URI (what DuckDB and BigQuery read)."""
        return f"{self.root}/{key}" if key else self.root

    def exists(self, key: str) -> bool:
        return self.fs.exists(self.uri(key))

    def make_new_directory(self, key: str) -> None:
        """Claim `key` for a new entry or raise `LakeError` (Cloud Storage: no object there yet)."""
        try:
            if not self.is_gcs:
                Path(self.uri(key)).mkdir(parents=True)
            elif self.exists(key):
                raise FileExistsError(key)
        except FileExistsError:
            raise LakeError(f"{self.uri(key)} exists already; the lake never overwrites") from None

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
        """Write a small JSON document whole: readers see the old one or the new one."""
        data = (json.dumps(document, indent=2, sort_keys=True, default=str) + "\n").encode()
        target = self.uri(key)
        if self.is_gcs:  # one object write is atomic
            self.fs.pipe_file(target, data)
            return
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        partial = Path(f"{target}.partial-{uuid.uuid4().hex[:8]}")
        partial.write_bytes(data)
        os.replace(partial, target)

    def read_json(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.fs.cat_file(self.uri(key)))
        except FileNotFoundError:
            return None

    def directories(self, key: str) -> list[str]:
        """The names of the directories directly under `key`, sorted ([] when none)."""
        try:
            found = self.fs.ls(self.uri(key), detail=True)
        except FileNotFoundError:
            return []
        paths = [entry["name"].rstrip("/") for entry in found if entry.get("type") == "directory"]
        return sorted(path.rsplit("/", 1)[-1] for path in paths)

    def remove(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.rm(self.uri(key), recursive=True)

    def modified(self, key: str) -> float | None:
        """When `key` was last written (epoch seconds), or None (Cloud Storage: a directory)."""
        try:
            return self.fs.modified(self.uri(key)).timestamp()
        except (FileNotFoundError, KeyError):
            return None

    def sha256(self, uri: str) -> str:
        """The sha256 of the file at `uri` (a key of this lake, or a path or URI it holds)."""
        uri = uri if uri.startswith((self.root, "/")) else self.uri(uri)
        with self.fs.open(uri, "rb") as handle:
            return streamed_sha256(iter(lambda: handle.read(CHUNK), b""))

    def attach(self, conn: Any) -> None:
        """Let DuckDB read `gs://` URIs through gcsfs (its httpfs cannot reach an emulator)."""
        if self.is_gcs:
            conn.register_filesystem(self.fs)


@dataclass(frozen=True)
class Entry:
    """A directory of the lake with a manifest and the Parquet file it describes."""

    error: ClassVar[type[LakeError]] = LakeError  # what `verify` raises
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

    @property
    def columns(self) -> list[tuple[str, str]]:
        """(name, type) of each column, in the types of the warehouse that wrote it."""
        return [(name, dtype) for name, dtype in self.manifest["columns"]]

    def verify(self, what: str) -> None:
        """Raise unless the data file is there and is the one the manifest describes."""
        try:
            found = self.lake.sha256(self.data_uri)
        except FileNotFoundError:
            raise self.error(f"{what}: its data file {self.data_uri} is missing") from None
        if found != self.manifest["sha256"]:
            raise self.error(
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
