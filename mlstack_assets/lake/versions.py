"""Versions of the published tables: every publish kept, any one restorable or readable.

`<lake>/production/<table>/version=<id>/manifest.json` records each publish: the version
id (a UTC label), when, the run, the rows and columns, the checks that passed, the sha256
of its Parquet file and the versions of the tables it was built from (`inputs`,
transitively: an ML table names the labeled_projects and raw versions behind it). A
derived table's data is `data.parquet` beside its manifest; a raw table's version is the
checkpoint it was published from (nothing is copied). `current.json` names the version
the published table holds. Retention keeps the newest versions of a table, its current
one, and every version a current table was built from.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from mlstack_assets.lake import DATA, MANIFEST, Entry, Lake, LakeError, entries
from mlstack_assets.sources import source_names

# every table with versions: the raw tables, dbt's mart and the ML tables
VERSIONED_TABLES = (
    *source_names(),
    "labeled_projects",
    "ml_dataset",
    "ml_splits",
    "tag_distribution",
)
PARTITION = "version="
CURRENT = "current.json"


class VersionError(LakeError):
    """A version that does not exist, or whose file does not match its manifest."""


def table_key(table: str) -> str:
    return f"production/{table}"


class Version(Entry):
    """One published version of a table, as its manifest describes it."""

    @property
    def table(self) -> str:
        return self.manifest["table"]

    @property
    def inputs(self) -> dict[str, str]:
        return dict(self.manifest.get("inputs") or {})

    def verify(self, what: str = "") -> None:
        try:
            super().verify(what or f"{self.table} version {self.id}")
        except VersionError:
            raise
        except LakeError as error:
            raise VersionError(str(error)) from None


def versions(lake: Lake, table: str) -> list[Version]:
    """Every version of `table`, newest first."""
    return [Version(lake, k, m) for k, m in entries(lake, table_key(table), PARTITION)]


def current_version_id(lake: Lake, table: str) -> str | None:
    pointer = lake.read_json(f"{table_key(table)}/{CURRENT}")
    return pointer["version"] if pointer else None


def current_version(lake: Lake, table: str) -> Version | None:
    current = current_version_id(lake, table)
    return find_version(lake, table, current) if current else None


def find_version(lake: Lake, table: str, version_id: str) -> Version:
    """The version with this id, or the one whose id starts with it (a unique prefix)."""
    every = versions(lake, table)
    matching = [v for v in every if v.id == version_id] or [
        v for v in every if v.id.startswith(version_id)
    ]
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


def current_versions(lake: Lake, tables: list[str]) -> dict[str, str]:
    """The current version of each of `tables`, and what each was built from."""
    found = {t: v for t in tables if (v := current_version_id(lake, t)) is not None}
    return lineage(lake, found)


def claim_version(lake: Lake, table: str, version_id: str) -> str:
    """A new version's directory key (never an existing one)."""
    key = f"{table_key(table)}/{PARTITION}{version_id}"
    lake.make_new_directory(key)
    return key


def record_version(
    lake: Lake, key: str, table: str, sha256: str, manifest: dict[str, Any], data: str = DATA
) -> Version:
    """Write the manifest of the version at `key`, whose data is in place: from now on the
    version exists. `data`: its Parquet file beside the manifest, or a checkpoint's URI."""
    document = {
        **manifest,
        "version": key.rsplit(PARTITION, 1)[-1],
        "table": table,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "data": data,
        "sha256": sha256,
    }
    lake.write_json(f"{key}/{MANIFEST}", document)
    return Version(lake, key, document)


def make_current(lake: Lake, table: str, version_id: str, **details: Any) -> None:
    """The published table now holds `version_id` (after a publish or a restore)."""
    lake.write_json(
        f"{table_key(table)}/{CURRENT}",
        {"version": version_id, "since": datetime.now(timezone.utc).isoformat(), **details},
    )


def protected(lake: Lake) -> dict[str, set[str]]:
    """Per table, the versions retention keeps whatever their age: each table's current one
    and every version a current one was built from."""
    keep: dict[str, set[str]] = {}
    for table in VERSIONED_TABLES:
        current = current_version_id(lake, table)
        if current is not None:
            for name, version_id in current_versions(lake, [table]).items():
                keep.setdefault(name, set()).add(version_id)
    return keep


def prune_versions(lake: Lake, table: str, keep: int, log: Callable[[str], None]) -> list[str]:
    """Keep the newest `keep` versions of `table` and every protected one; remove the rest."""
    must_keep = protected(lake).get(table, set())
    removed = [v.id for v in versions(lake, table)[keep:] if v.id not in must_keep]
    for version_id in removed:
        lake.remove(f"{table_key(table)}/{PARTITION}{version_id}")
    if removed:
        log(f"lake: removed {len(removed)} old versions of {table} (keeping the newest {keep})")
    return removed


def read_version(table: str, version: str | None = None, lake: str | None = None) -> Any:
    """A published version of `table` as a pandas DataFrame, read from the lake.

    `version`: an id (or a unique prefix) as `mlstack versions` lists them; None for the
    current one. `lake`: the lake's root (default: `MLSTACK_LAKE`). Needs neither Dagster
    nor the warehouse: this is how training code gets the exact data a run was built from.
    The file is checked against its manifest's sha256 first.

        from mlstack_assets.lake.versions import read_version
        splits = read_version("ml_splits", "20261201T214011")
    """
    import duckdb

    if lake is None:
        from mlstack_assets.settings import load_settings

        lake = load_settings().lake
    store = Lake(lake)
    chosen = find_version(store, table, version) if version else current_version(store, table)
    if chosen is None:
        raise VersionError(f"{table} has no current version in {store.root}")
    chosen.verify()
    with duckdb.connect() as conn:
        store.attach(conn)
        return conn.execute(
            "select * from read_parquet(?, hive_partitioning = false)", [chosen.data_uri]
        ).df()
