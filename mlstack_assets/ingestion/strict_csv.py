"""DuckDB's own strict reading of a source CSV, and its comparison with the connector's.

The Airbyte File source reads CSV with pandas, which shifts every column when a row has
one field too many, cuts a field at a NUL byte, and drops lines it cannot make sense of,
all without an error. So mlstack reads the same bytes once more, with DuckDB, strictly
(the dialect and the columns given, nothing guessed, every bad line kept as a reject
with its line number and error), and compares the result with what the connector
produced, record for record (by position) and field for field. Any difference fails the
extract, naming the record, its id, the column and both values.

Where the two readers differ by design on benign input, both sides are normalized the
same way before they are compared:
- line breaks inside a quoted field: pandas turns CRLF and a lone CR into LF; DuckDB
  keeps them. Compared with every CRLF and CR as LF (the connector's value is staged).
- mixed line ends (CRLF lines and LF lines in one file, e.g. a line added by hand):
  pandas reads them; DuckDB's strict mode cannot ("the CSV Parser state machine reached
  an invalid state"). Such a file is read with strict mode off, which also lets a row
  with too many fields or a broken quote through: those are still caught, because pandas
  then fails (its error names the line) or produces different values, and the
  comparison fails on them.
What DuckDB and pandas both do, and so needs nothing: a UTF-8 byte-order mark is not
part of the first column's name; CRLF line ends; blank lines are skipped; an empty
field, quoted or not, is NULL; quotes are doubled to escape them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlstack_assets.warehouse.dialect import sql_identifier, sql_string

# the longest CSV line DuckDB accepts (its default is 2 MB); its read buffer must be larger
MAX_LINE_BYTES = 8 << 20
BUFFER_BYTES = 16 << 20
HEADER_COLUMN_BUDGET = 512  # a header with more columns is refused (each costs memory)
EXAMPLES = 3
NOT_NULL = "\x01mlstack-no-null\x01"  # an empty header field stays '' (padding is NULL)

_DIALECT = "delim = ',', quote = '\"', escape = '\"', auto_detect = false"
_FOUND = re.compile(r"Found: (\d+)")
_ERROR_LINE = re.compile(r"CSV Error on Line: (\d+)")


class CsvError(ValueError):
    """The file is not the CSV the connector would read correctly; says where and why."""


def _columns(names: Sequence[str]) -> str:
    return "{" + ", ".join(f"{sql_string(name)}: 'VARCHAR'" for name in names) + "}"


def read_header(conn: Any, path: Path) -> list[str]:
    """The header row's fields, exactly as written (a BOM is not part of them).

    DuckDB's sniffer is not used: on a file whose first records are ragged it takes a
    data row for the header. The first row is read with room for many columns instead.
    """
    if path.stat().st_size == 0:
        raise CsvError("the file is empty (no header row)")
    budget = [f"c{i}" for i in range(HEADER_COLUMN_BUDGET)]
    # the path as a literal, not a parameter: DuckDB imports pandas (0.3 s) to bind a
    # Python value, and the connector cannot start before the header is known
    query = f"""select * from read_csv({sql_string(str(path))}, {_DIALECT}, header = false,
    columns = {_columns(budget)}, null_padding = true, parallel = false,
    nullstr = {sql_string(NOT_NULL)}, ignore_errors = IGNORE, strict_mode = false,
    max_line_size = {MAX_LINE_BYTES}, buffer_size = {BUFFER_BYTES}) limit 1"""
    try:
        row = conn.execute(query.replace("IGNORE", "false")).fetchone()
    except Exception as error:  # duckdb.Error
        line = _ERROR_LINE.search(str(error))
        if line is None or int(line.group(1)) <= 1:
            raise CsvError(f"the header row cannot be read: {_first_line(error)}") from None
        # the reader reads ahead: a bad line further down is not the header's problem (the
        # strict read of the whole file reports it); read the first line past it
        row = conn.execute(query.replace("IGNORE", "true")).fetchone()
    header = []
    for value in row or ():
        if value is None:
            break
        header.append(value)
    if len(header) == HEADER_COLUMN_BUDGET:
        raise CsvError(f"the header has more than {HEADER_COLUMN_BUDGET - 1} columns")
    if not header or not any(name.strip() for name in header):
        raise CsvError("the file is empty (no header row)")
    blank = [str(position) for position, name in enumerate(header, 1) if not name.strip()]
    if blank:
        raise CsvError(f"the header has columns without a name (column {', '.join(blank)})")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise CsvError(f"the header names a column more than once: {', '.join(repeated)}")
    return header


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    skipped = ("CSV Error on Line", "Original Line")
    detail = next((line for line in lines if not any(s in line for s in skipped)), "")
    if "not utf-8 encoded" in detail:
        return "not UTF-8 text"
    detail = detail or (lines[0] if lines else "")
    return detail[:300]


@dataclass(frozen=True)
class Reject:
    """A line DuckDB could not read as a record of the header's columns."""

    line: int
    column: str | None
    error_type: str
    message: str
    text: str | None

    def describe(self, header: Sequence[str]) -> str:
        where = f"line {self.line}"
        shown = f" ({_short(self.text.strip(chr(13) + chr(10)))})" if self.text is not None else ""
        found = _FOUND.search(self.message)
        fields = f"{found.group(1)} field{'' if found.group(1) == '1' else 's'}" if found else ""
        if self.error_type == "TOO MANY COLUMNS" and found:
            return (
                f"{where} has {fields} but the header has {len(header)}"
                f" ({', '.join(header)}){shown}; refusing it, because the connector's reader"
                " would shift every column by one"
            )
        if self.error_type == "MISSING COLUMNS" and found:
            return (
                f"{where} has {fields} but the header has {len(header)}"
                f" ({', '.join(header)}){shown}; the connector's reader would fill or drop"
                " the missing ones without a word"
            )
        column = f", column {self.column}" if self.column else ""
        if self.error_type == "INVALID ENCODING":
            return f"{where}{column}: not UTF-8 text ({self.message.split('. ')[0]})"
        if self.error_type == "UNQUOTED VALUE":
            return (
                f"{where}{column}: unterminated quote: a quoted field is not closed, or text"
                f" follows its closing quote{shown}"
            )
        if self.error_type == "LINE SIZE OVER MAXIMUM":
            return f"{where} is longer than {MAX_LINE_BYTES >> 20} MiB, the longest line read"
        return f"{where}{column}: {self.message}{shown}"


def _short(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[: limit - 3] + "...")


@dataclass(frozen=True)
class Difference:
    """A record on which the two readers disagree (None: the record is not on that side)."""

    record: int
    in_file: list[str | None] | None
    synced: list[str | None] | None


@dataclass
class Comparison:
    records_in_file: int
    records_synced: int
    differing: int
    differences: list[Difference] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    reject_count: int = 0
    strict: bool = True  # False: read with strict mode off (mixed line ends)


def _mixed_line_ends(error: BaseException) -> bool:
    return "state machine reached an invalid state" in str(error)


def _normalized(expression: str) -> str:
    return f"replace(replace({expression}, chr(13) || chr(10), chr(10)), chr(13), chr(10))"


def _csv_scan(path: Path, header: Sequence[str], strict: bool = True) -> str:
    return f"""read_csv({sql_string(str(path))}, {_DIALECT}, header = true,
    columns = {_columns(header)}, strict_mode = {str(strict).lower()}, null_padding = false,
    store_rejects = true, rejects_table = 'csv_rejects', rejects_scan = 'csv_scans',
    max_line_size = {MAX_LINE_BYTES}, buffer_size = {BUFFER_BYTES})"""


def rejects(conn: Any) -> tuple[int, list[Reject]]:
    """How many lines the last strict scan rejected, and the first few."""
    [(count,)] = conn.execute("select count(*) from csv_rejects").fetchall()
    rows = conn.execute(
        "select line, column_name, error_type, error_message, csv_line from csv_rejects"
        f" order by line limit {EXAMPLES}"
    ).fetchall()
    return count, [Reject(int(line), c, kind, m, text) for line, c, kind, m, text in rows]


def strict_rejects(conn: Any, path: Path, header: Sequence[str]) -> tuple[int, int, list[Reject]]:
    """Read the file strictly on its own: (records, rejected lines, the first rejects)."""
    # every field is read (a bare count(*) would not check the text is UTF-8)
    lengths = " + ".join(f"coalesce(strlen({sql_identifier(name)}), 0)" for name in header)
    query = "select count(*), sum({lengths}) from {scan}"
    try:
        [(records, _)] = conn.execute(
            query.format(lengths=lengths, scan=_csv_scan(path, header))
        ).fetchall()
    except Exception as error:
        if not _mixed_line_ends(error):
            raise
        [(records, _)] = conn.execute(
            query.format(lengths=lengths, scan=_csv_scan(path, header, strict=False))
        ).fetchall()
    count, first = rejects(conn)
    return records, count, first


def compare(
    conn: Any,
    path: Path,
    header: Sequence[str],
    parquet: Path,
    synced_columns: Sequence[str],
) -> Comparison:
    """Compare the file, read strictly, with the connector's records in `parquet`, whose
    columns `synced_columns` hold the header's fields in the same order."""
    try:
        return _compare(conn, path, header, parquet, synced_columns, strict=True)
    except Exception as error:
        if not _mixed_line_ends(error):
            raise
    return _compare(conn, path, header, parquet, synced_columns, strict=False)


def _compare(
    conn: Any,
    path: Path,
    header: Sequence[str],
    parquet: Path,
    synced_columns: Sequence[str],
    strict: bool,
) -> Comparison:
    file_side = ", ".join(f"f.{sql_identifier(name)}" for name in header)
    synced_side = ", ".join(f"s.{sql_identifier(name)}" for name in synced_columns)
    differs = " or ".join(
        [
            "f.present is null",
            "s.present is null",
            *(
                f"{_normalized('f.' + sql_identifier(a))}"
                f" is distinct from {_normalized('s.' + sql_identifier(b))}"
                for a, b in zip(header, synced_columns, strict=True)
            ),
        ]
    )
    [(in_file, synced, differing, examples)] = conn.execute(
        f"""select count(f.present), count(s.present), count(*) filter (where {differs}),
       min_by({{'record': coalesce(f.record, s.file_row_number + 1),
                'in_file': case when f.present then [{file_side}] end,
                'synced': case when s.present then [{synced_side}] end}},
              coalesce(f.record, s.file_row_number + 1), {EXAMPLES}) filter (where {differs})
from (select ordinality as record, true as present, *
      from {_csv_scan(path, header, strict)} with ordinality) as f
positional join (
    select file_row_number, true as present, *
    from read_parquet({sql_string(str(parquet))}, file_row_number = true)) as s"""
    ).fetchall()
    count, first = rejects(conn)
    return Comparison(
        records_in_file=int(in_file),
        records_synced=int(synced),
        differing=int(differing),
        differences=[
            Difference(int(row["record"]), row["in_file"], row["synced"])
            for row in (examples or [])
        ],
        rejects=first,
        reject_count=int(count),
        strict=strict,
    )


def describe_rejects(count: int, first: Sequence[Reject], header: Sequence[str]) -> str:
    lines = [reject.describe(header) for reject in first]
    if count == 1:
        return lines[0]
    return f"{count:,} lines cannot be read as records; the first: " + "; ".join(lines)


def describe_differences(comparison: Comparison, header: Sequence[str]) -> str:
    """What the connector got wrong, in a few lines: record, id, column, both values."""
    id_position = header.index("id") if "id" in header else None
    parts = []
    if comparison.records_in_file != comparison.records_synced:
        parts.append(
            f"the file holds {comparison.records_in_file:,} CSV records but the connector"
            f" produced {comparison.records_synced:,}"
        )
    for difference in comparison.differences:
        row = difference.in_file or difference.synced or []
        ident = f" (id {row[id_position]})" if id_position is not None and row else ""
        where = f"record {difference.record:,}{ident}"
        if difference.synced is None:
            parts.append(f"{where} is in the file but the connector did not produce it")
            continue
        if difference.in_file is None:
            parts.append(f"{where} was produced by the connector but is not in the file")
            continue
        for name, ours, theirs in zip(header, difference.in_file, difference.synced, strict=True):
            if _plain_newlines(ours) == _plain_newlines(theirs):
                continue
            line = (
                f"{where}, column {name}: the file holds {_value(ours)} but the connector"
                f" produced {_value(theirs)}"
            )
            if ours is not None and "\x00" in ours:
                line += (
                    f" (a NUL byte (0x00) at character {ours.index(chr(0)) + 1}: the"
                    " connector's CSV reader silently cut the field there; remove the byte"
                    " from the source)"
                )
            parts.append(line)
            break
    more = comparison.differing - len(comparison.differences)
    if more > 0:
        parts.append(f"and {more:,} more records differ")
    return "; ".join(parts)


def _plain_newlines(value: str | None) -> str | None:
    return None if value is None else value.replace("\r\n", "\n").replace("\r", "\n")


def _value(value: str | None) -> str:
    return "NULL" if value is None else _short(value)
