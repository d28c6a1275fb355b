"""Versions of the published tables, each restorable or readable: a manifest (run, rows, columns,
checks passed, sha256, `inputs`: what it was built from, transitively) and its data;
`current.json` names the one the table holds."""

import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from mlstack_assets.lake import DATA, MANIFEST, Entry, Lake, LakeError, entries
from mlstack_assets.settings import load_settings
from mlstack_assets.sources import source_names

_ML_TABLES = ("ml_dataset", "ml_splits", "tag_distribution")
VERSIONED_TABLES = (*source_names(), "labeled_projects", *_ML_TABLES)  # raw, dbt's mart, ML
PARTITION = "version="
CURRENT = "current.json"
VIEW = "view.json"
PRODUCTION = "production"


class VersionError(LakeError):
    """A version that does not exist, or whose file does not match its manifest."""


_NOTICED: set[str] = set()  # lakes whose old layout this process has reported


def warehouse_lake(settings: Any, log: Callable[[str], None] | None = None) -> Lake:
    """The configured warehouse's part of the lake (`Settings.warehouse_lake`); once per process
    and lake, says when the lake also holds entries from before each warehouse had its own part,
    which no warehouse reads, and what to do with them."""
    lake, root = Lake(settings.warehouse_lake), Lake(settings.lake)
    if settings.lake not in _NOTICED:
        _NOTICED.add(settings.lake)
        if old := [name for name in ("production", "staging") if root.exists(name)]:
            found = " and ".join(f"{root.uri(name)}/" for name in old)
            (log or _stderr)(
                f"lake: {found} are from before each warehouse kept its own versions, and no"
                f" warehouse reads them: this one ({settings.warehouse_id}) reads {lake.root}/."
                f" If they are this warehouse's, move them there ({', '.join(old)}); if not,"
                " move them to their warehouse's folder or delete them."
            )
    return lake


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def table_key(table: str) -> str:
    return f"{PRODUCTION}/{table}"


class Version(Entry):
    """One published version of a table, as its manifest describes it."""

    error = VersionError

    @property
    def inputs(self) -> dict[str, str]:
        return dict(self.manifest.get("inputs") or {})

    def verify(self, what: str = "") -> None:
        super().verify(what or f"{self.manifest['table']} version {self.id}")


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
    exact = [v for v in every if v.id == version_id]
    matching = exact or [v for v in every if v.id.startswith(version_id)]
    if not matching:
        known = ", ".join(v.id for v in every[:5]) or "none yet"
        raise VersionError(f"{table} has no version {version_id!r} (newest: {known})")
    if len(matching) > 1:
        raise VersionError(
            f"{version_id!r} matches {len(matching)} versions of {table}:"
            f" {', '.join(v.id for v in matching[:5])}; give more of the id"
        )
    return matching[0]


def lineage(lake: Lake, inputs: dict[str, str]) -> dict[str, str]:
    """`inputs` (table -> version) and, transitively, the versions those were built from."""
    found = dict(inputs)
    for table, version_id in inputs.items():
        try:
            upstream = find_version(lake, table, version_id)
        except VersionError:
            continue
        found |= {k: v for k, v in lineage(lake, upstream.inputs).items() if k not in found}
    return found


def current_versions(lake: Lake, tables: list[str]) -> dict[str, str]:
    """The current version of each of `tables`, and what each was built from."""
    return lineage(lake, {t: v for t in tables if (v := current_version_id(lake, t)) is not None})


def claim_version(lake: Lake, table: str, version_id: str) -> str:
    """A new version's directory key (never an existing one)."""
    key = f"{table_key(table)}/{PARTITION}{version_id}"
    lake.make_new_directory(key)
    return key


def record_version(
    lake: Lake, key: str, table: str, sha256: str, manifest: dict[str, Any], data: str = DATA
) -> Version:
    """Write the manifest once the data (`data`: beside it, or a checkpoint) is in place."""
    created_at = datetime.now(timezone.utc).isoformat()
    document = {**manifest, "version": key.rsplit(PARTITION, 1)[-1], "table": table}
    document |= {"created_at": created_at, "data": data, "sha256": sha256}
    lake.write_json(f"{key}/{MANIFEST}", document)
    return Version(lake, key, document)


def make_current(lake: Lake, table: str, version_id: str | None, **details: Any) -> None:
    """The published table now holds `version_id` (after a publish or a restore; None: no
    version, as before its first publish)."""
    if version_id is None:
        lake.remove(f"{table_key(table)}/{CURRENT}")
        return
    pointer = {"version": version_id, "since": datetime.now(timezone.utc).isoformat(), **details}
    lake.write_json(f"{table_key(table)}/{CURRENT}", pointer)


def record_view(lake: Lake, name: str, sql: str, run_id: str) -> None:
    """A published view's SELECT, kept so that `mlstack restore` can recreate it."""
    lake.write_json(f"{table_key(name)}/{VIEW}", {"view": name, "sql": sql, "run_id": run_id})


def recorded_views(lake: Lake) -> dict[str, str]:
    """Every published view's SELECT, by name, as its last publish recorded it."""
    documents = (
        lake.read_json(f"{table_key(name)}/{VIEW}") for name in lake.directories(PRODUCTION)
    )
    return {document["view"]: document["sql"] for document in documents if document}


def prune_versions(lake: Lake, table: str, keep: int, log: Callable[[str], None]) -> list[str]:
    """Remove all but the newest `keep`, the current one and those a current one was built from."""
    must_keep = {current_versions(lake, [other]).get(table) for other in VERSIONED_TABLES}
    removed = [v.id for v in versions(lake, table)[keep:] if v.id not in must_keep]
    for version_id in removed:
        lake.remove(f"{table_key(table)}/{PARTITION}{version_id}")
    if removed:
        log(f"lake: removed {len(removed)} old versions of {table} (keeping the newest {keep})")
    return removed


def read_version(table: str, version: str | None = None, lake: str | None = None) -> Any:
    """A version of `table` (id or unique prefix; None: the current one) as a pandas DataFrame,
    sha256 checked, from the lake without Dagster or the warehouse (`lake`: a warehouse's part of
    it, as `mlstack versions` prints; default the configured warehouse's): how training code gets
    a run's exact data, e.g. `read_version("ml_splits", "20261201T214011")`."""
    import duckdb

    store = warehouse_lake(load_settings()) if lake is None else Lake(lake)
    chosen = find_version(store, table, version) if version else current_version(store, table)
    if chosen is None:
        raise VersionError(f"{table} has no current version in {store.root}")
    chosen.verify()
    with duckdb.connect() as conn:
        store.attach(conn)
        query = "select * from read_parquet(?, hive_partitioning = false)"
        return conn.execute(query, [chosen.data_uri]).df()
