"""Versions of the published tables: every publish kept, any one restorable or readable.

`<lake>/production/<table>/version=<id>/manifest.json` records each publish of `projects`,
`tags`, `labeled_projects`, `ml_dataset`, `ml_splits` and `tag_distribution`: the version
id (a UTC timestamp label), when, the run, the rows and columns, the checks that passed,
the sha256 of its Parquet file, and the versions of the tables it was built from
(`inputs`, transitively: an ML table names the labeled_projects and raw versions behind
it). A derived table's data is `data.parquet` beside its manifest; a raw table's version
is the checkpoint it was published from (`data` points at the checkpoint's file, nothing
is copied). `current.json` names the version the published table holds.

`read_version` is how training code reads the exact data of any version, from the lake,
without Dagster. Retention keeps the newest `keep` versions of a table, its current one,
and every version a current table was built from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from mlstack_assets.lake import MANIFEST, Lake, LakeError
from mlstack_assets.lake.checkpoints import Checkpoint, extracted_at_label

VERSIONED_TABLES = (
    "projects",
    "tags",
    "labeled_projects",
    "ml_dataset",
    "ml_splits",
    "tag_distribution",
)
DATA = "data.parquet"
PARTITION = "version="
CURRENT = "current.json"


class VersionError(LakeError):
    """A version that does not exist, or whose file does not match its manifest."""


def table_key(table: str) -> str:
    return f"production/{table}"


def new_version_id(moment: datetime | None = None) -> str:
    """A version id: the UTC time to the microsecond, e.g. `20261201T214011.123456Z`."""
    return extracted_at_label(moment or datetime.now(timezone.utc))


@dataclass(frozen=True)
class Version:
    """One published version of a table, as its manifest describes it."""

    lake: Lake
    table: str
    manifest: dict[str, Any]

    @property
    def id(self) -> str:
        return self.manifest["version"]

    @property
    def key(self) -> str:
        return f"{table_key(self.table)}/{PARTITION}{self.id}"

    @property
    def data_uri(self) -> str:
        """The version's Parquet file: beside the manifest, or a raw table's checkpoint."""
        data = self.manifest["data"]
        return data if "/" in data else self.lake.uri(f"{self.key}/{data}")

    @property
    def rows(self) -> int:
        return int(self.manifest["rows"])

    @property
    def inputs(self) -> dict[str, str]:
        return dict(self.manifest.get("inputs") or {})

    def verify(self) -> None:
        """Raise `VersionError` unless the data file is the one the manifest describes."""
        try:
            with self.lake.fs.open(self.data_uri, "rb") as handle:
                import hashlib

                digest = hashlib.sha256()
                while chunk := handle.read(1 << 20):
                    digest.update(chunk)
        except FileNotFoundError:
            raise VersionError(
                f"{self.table} version {self.id}: its data file {self.data_uri} is missing"
            ) from None
        if digest.hexdigest() != self.manifest["sha256"]:
            raise VersionError(
                f"{self.table} version {self.id}: {self.data_uri} has sha256"
                f" {digest.hexdigest()}, its manifest says {self.manifest['sha256']}: the file"
                " was changed after it was written; nothing was restored"
            )


def versions(lake: Lake, table: str) -> list[Version]:
    """Every version of `table`, newest first."""
    found = []
    for name in reversed(lake.directories(table_key(table))):
        if name.startswith(PARTITION):
            manifest = lake.read_json(f"{table_key(table)}/{name}/{MANIFEST}")
            if manifest is not None:
                found.append(Version(lake, table, manifest))
    return found


def current_version_id(lake: Lake, table: str) -> str | None:
    pointer = lake.read_json(f"{table_key(table)}/{CURRENT}")
    return pointer["version"] if pointer else None


def current_version(lake: Lake, table: str) -> Version | None:
    current = current_version_id(lake, table)
    return find_version(lake, table, current) if current else None


def find_version(lake: Lake, table: str, version_id: str) -> Version:
    """The version with this id, or the one whose id starts with it (a unique prefix)."""
    every = versions(lake, table)
    exact = [v for v in every if v.id == version_id]
    matching = exact or [v for v in every if v.id.startswith(version_id)]
    if len(matching) == 1:
        return matching[0]
    if not matching:
        known = ", ".join(v.id for v in every[:5]) or "none yet"
        raise VersionError(f"{table} has no version {version_id!r} (newest: {known})")
    raise VersionError(
        f"{version_id!r} matches {len(matching)} versions of {table}:"
        f" {', '.join(v.id for v in matching[:5])}; give more of the id"
    )


def lineage(lake: Lake, inputs: dict[str, str]) -> dict[str, str]:
    """`inputs` (table -> version) and, transitively, the versions those were built from."""
    found = dict(inputs)
    for table, version_id in inputs.items():
        try:
            upstream = find_version(lake, table, version_id)
        except VersionError:
            continue
        for name, value in lineage(lake, upstream.inputs).items():
            found.setdefault(name, value)
    return found


def _write_manifest(
    lake: Lake, key: str, table: str, version_id: str, data: str, sha256: str, manifest: dict
) -> Version:
    document = {
        **manifest,
        "version": version_id,
        "table": table,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "data": data,
        "sha256": sha256,
    }
    lake.write_json(f"{key}/{MANIFEST}", document)  # last: the version exists from now on
    return Version(lake, table, document)


def record_raw_version(
    lake: Lake, table: str, checkpoint: Checkpoint, manifest: dict[str, Any]
) -> Version:
    """A raw table's version: the checkpoint it was published from (nothing is copied)."""
    key = claim_version(lake, table, checkpoint.id)
    sha256 = checkpoint.manifest["sha256"]
    return _write_manifest(lake, key, table, checkpoint.id, checkpoint.data_uri, sha256, manifest)


def record_exported_version(
    lake: Lake, key: str, table: str, version_id: str, sha256: str, manifest: dict[str, Any]
) -> Version:
    """A derived table's version, whose `data.parquet` the warehouse wrote under `key`."""
    return _write_manifest(lake, key, table, version_id, DATA, sha256, manifest)


def version_data_key(key: str) -> str:
    return f"{key}/{DATA}"


def claim_version(lake: Lake, table: str, version_id: str) -> str:
    """A new version's directory key (never an existing one)."""
    key = f"{table_key(table)}/{PARTITION}{version_id}"
    lake.make_new_directory(key)
    return key


def make_current(lake: Lake, table: str, version_id: str, **details: Any) -> None:
    """The published table now holds `version_id` (after a publish or a restore)."""
    lake.write_json(
        f"{table_key(table)}/{CURRENT}",
        {"version": version_id, "since": datetime.now(timezone.utc).isoformat(), **details},
    )


def protected(lake: Lake, tables: Iterable[str] = VERSIONED_TABLES) -> dict[str, set[str]]:
    """Per table, the versions retention must keep whatever their age: each table's
    current one, and every version a current one was built from."""
    keep: dict[str, set[str]] = {}
    for table in tables:
        current = current_version(lake, table)
        if current is None:
            continue
        keep.setdefault(table, set()).add(current.id)
        for upstream, version_id in lineage(lake, current.inputs).items():
            keep.setdefault(upstream, set()).add(version_id)
    return keep


def prune_versions(lake: Lake, table: str, keep: int, log: Callable[[str], None]) -> list[str]:
    """Keep the newest `keep` versions of `table` and every protected one; remove the rest."""
    must_keep = protected(lake).get(table, set())
    removed = [
        version.id
        for position, version in enumerate(versions(lake, table))
        if position >= keep and version.id not in must_keep
    ]
    for version_id in removed:
        lake.remove(f"{table_key(table)}/{PARTITION}{version_id}")
    if removed:
        log(f"lake: removed {len(removed)} old versions of {table} (keeping the newest {keep})")
    return removed


def read_version(table: str, version: str | None = None, lake: str | None = None) -> Any:
    """A published version of `table` as a pandas DataFrame, read from the lake.

    `version`: a version id (or a unique prefix of one) as `mlstack versions` lists them;
    None for the current one. `lake`: the lake's root (default: `MLSTACK_LAKE`). Needs
    neither Dagster nor the warehouse: this is how training code gets the exact data an
    earlier run was built from. The file is checked against its manifest's sha256 first.

        from mlstack_assets.lake.versions import read_version
        splits = read_version("ml_splits", "20261201T214011")
    """
    import duckdb

    if lake is None:
        from mlstack_assets.settings import load_settings

        lake = load_settings().lake
    store = Lake(lake)
    if version is None:
        chosen = current_version(store, table)
        if chosen is None:
            raise VersionError(f"{table} has no current version in {store.root}")
    else:
        chosen = find_version(store, table, version)
    chosen.verify()
    with duckdb.connect() as conn:
        store.attach(conn)
        return conn.execute(
            "select * from read_parquet(?, hive_partitioning = false)", [chosen.data_uri]
        ).df()
