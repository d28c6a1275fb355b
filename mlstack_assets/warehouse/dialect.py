"""The SQL spellings that differ between DuckDB and BigQuery (`Warehouse.dialect`), and quoting."""

from dataclasses import dataclass


def sql_string(value: str) -> str:
    """A SQL string literal (the same on both warehouses)."""
    return "'" + value.replace("'", "''") + "'"


def sql_identifier(name: str) -> str:
    """A double-quoted identifier (DuckDB)."""
    return '"' + name.replace('"', '""') + '"'


@dataclass(frozen=True)
class SqlDialect:
    try_cast: str  # the function that casts, or gives NULL when the value does not cast
    collapse_whitespace: str  # format with {expr}
    md5_hex: str  # format with {expr}
    string_type: str
    whitespace: str  # a string literal of RE2's `\s`: space, \t, \n, \f, \r
    seconds_since: str  # seconds from timestamp {expr} to now


DIALECTS = {
    "duckdb": SqlDialect(
        try_cast="try_cast",
        collapse_whitespace="regexp_replace({expr}, '\\s+', ' ', 'g')",
        md5_hex="md5({expr})",
        string_type="varchar",
        whitespace="E' \\t\\n\\f\\r'",
        seconds_since="epoch(current_timestamp) - epoch({expr})",
    ),
    "bigquery": SqlDialect(
        try_cast="safe_cast",
        collapse_whitespace="regexp_replace({expr}, r'\\s+', ' ')",
        md5_hex="to_hex(md5({expr}))",
        string_type="string",
        whitespace="' \\t\\n\\f\\r'",
        seconds_since="timestamp_diff(current_timestamp(), {expr}, millisecond) / 1000",
    ),
}


def sql_dialect(kind: str) -> SqlDialect:
    """The spellings of the warehouse `kind` ("duckdb" or "bigquery")."""
    return DIALECTS[kind]
