"""What changed between two versions of a published table (`mlstack diff`, and every publish's
metadata): rows added, removed and changed, matched by the table's key, counted per column,
with a few examples. DuckDB compares the two Parquet files where they are (one join into a
temporary table of keys and flags, then aggregates and LIMITed lookups): no table in Python."""

from typing import Any

import duckdb

from mlstack_assets.lake import Lake, LakeError
from mlstack_assets.lake.versions import Version, current_version_id, find_version, versions
from mlstack_assets.sources import SOURCES
from mlstack_assets.warehouse.dialect import sql_identifier, sql_string

# the column a row is known by (unique in every published version: the audits check it)
KEYS = {source.name: source.key for source in SOURCES} | {"tag_distribution": "tag"}
LOAD_COLUMNS = "_airbyte_"  # raw tables' load metadata, new on every extract: not compared


def key_of(table: str) -> str:
    return KEYS.get(table, "id")


def versions_to_compare(
    lake: Lake, table: str, old: str | None = None, new: str | None = None
) -> tuple[Version, Version]:
    """(from, to): `new` or the current version, and `old` or the version created before it."""
    new = new or current_version_id(lake, table)
    if new is None:
        raise LakeError(f"{table} has no current version in {lake.root} to compare")
    target = find_version(lake, table, new)
    if old is not None:
        return find_version(lake, table, old), target
    older = [v for v in versions(lake, table) if v.id < target.id]  # newest first
    if not older:
        raise LakeError(f"{table} has only its version {target.id}: nothing to compare it with")
    return older[0], target


def _scan(uri: str) -> str:
    """The Parquet file at `uri` as a relation (its path's `version=` is no column of it)."""
    return f"read_parquet({sql_string(uri)}, hive_partitioning = false)"


def _columns(conn: Any, uri: str) -> dict[str, str]:
    """Name -> type of a Parquet file's columns, load metadata left out."""
    found = conn.execute(f"describe select * from {_scan(uri)}").fetchall()
    return {name: kind for name, kind, *_ in found if not name.startswith(LOAD_COLUMNS)}


def diff_versions(
    lake: Lake, table: str, old: Version, new: Version, examples: int = 5
) -> dict[str, Any]:
    """Rows `new` adds, removes and changes against `old` (both sha256 checked), matched by the
    table's key and compared on the columns both have; up to `examples` keys of each.

    The join carries a 64-bit hash of each value, not the values (a third of the time at 1M
    rows, as data-diff compares checksums): a change hides behind a collision once in 2^64."""
    old.verify()
    new.verify()
    key = key_of(table)
    with duckdb.connect() as conn:
        lake.attach(conn)
        before, after = _columns(conn, old.data_uri), _columns(conn, new.data_uri)
        if key not in before or key not in after:
            raise LakeError(f"{table}: no key column {key!r} in version {old.id} or {new.id}")
        shared = [c for c in after if c in before and c != key]

        def value(column: str) -> str:  # a column retyped is compared as text
            return sql_identifier(column) + ("" if before[column] == after[column] else "::varchar")

        def side(version: Version, where: str = "", values: bool = False) -> str:
            """A version's rows as (_key, one hash or value per shared column, _in)."""
            cells = [value(c) if values else f"hash({value(c)})" for c in shared]
            cells = [f"{cell} as c{i}" for i, cell in enumerate(cells)]
            return f"""(select {value(key)} as _key, {", ".join([*cells, "true as _in"])}
    from {_scan(version.data_uri)} {where})"""

        flags = [f"o.c{i} <> n.c{i} as c{i}" for i in range(len(shared))]  # null: one side
        conn.execute(
            f"""create temp table joined as select coalesce(n._key, o._key) as key,
    o._in is not null as in_old, n._in is not null as in_new, {", ".join([*flags, "1"])}
from {side(old)} o full join {side(new)} n on o._key = n._key"""
        )
        changed = " or ".join(f"c{i}" for i in range(len(shared))) or "false"
        counts = "".join(f", count(*) filter (c{i})" for i in range(len(shared)))
        added, removed, changes, *per_column = conn.execute(
            f"""select count(*) filter (not in_old), count(*) filter (not in_new),
    count(*) filter ({changed}){counts} from joined"""
        ).fetchone()
        found = {
            "table": table,
            "key": key,
            "from": old.id,
            "to": new.id,
            "rows": {"from": old.rows, "to": new.rows},
            "added": added,
            "removed": removed,
            "changed": changes,
            "columns_changed": {c: n for c, n in zip(shared, per_column, strict=True) if n},
            "columns_added": [c for c in after if c not in before],
            "columns_removed": [c for c in before if c not in after],
        }
        if examples <= 0:
            return found

        def keys_where(condition: str) -> list[Any]:
            query = f"select key from joined where {condition} order by key limit {examples}"
            return [row[0] for row in conn.execute(query).fetchall()]

        # the changed rows' values: only the examples' keys are read from the two files
        rows, sample = [], keys_where(changed)
        if sample:
            # literals, pushed into the scans (a list parameter costs DuckDB 0.5 s to convert)
            among = f"where {value(key)} in ({', '.join(sql_string(str(k)) for k in sample)})"
            triples = [
                f"o.c{i} is distinct from n.c{i}, o.c{i}, n.c{i}" for i in range(len(shared))
            ]
            rows = conn.execute(
                f"""select o._key, {", ".join(triples)}
from {side(old, among, True)} o join {side(new, among, True)} n on o._key = n._key
order by o._key"""
            ).fetchall()
        found["examples"] = {
            "added": keys_where("not in_old"),
            "removed": keys_where("not in_new"),
            "changed": [_changed_columns(row, shared) for row in rows],
        }
        return found


def _changed_columns(row: tuple, shared: list[str]) -> dict[str, Any]:
    """{key, columns: {column: [old, new]}} of one changed row (key, then flag, old, new)."""
    triples = [row[i : i + 3] for i in range(1, len(row), 3)]
    pairs = {c: [old, new] for c, (flag, old, new) in zip(shared, triples, strict=True) if flag}
    return {"key": row[0], "columns": pairs}


def changes_against(lake: Lake, replaced: str | None, new: Version) -> dict[str, Any]:
    """A publish's metadata: the rows `new` adds, removes and changes against `replaced`, the
    version the table held ({} for a table's first version). It never raises: it runs once the
    tables are published."""
    if replaced is None or replaced == new.id:
        return {}
    table = new.manifest["table"]
    try:
        found = diff_versions(lake, table, find_version(lake, table, replaced), new, examples=0)
    except (LakeError, duckdb.Error) as error:
        return {"changed_against": replaced, "diff_error": str(error)}
    counts = {f"rows_{kind}": found[kind] for kind in ("added", "removed", "changed")}
    return {**counts, "changed_against": replaced, "columns_changed": found["columns_changed"]}
