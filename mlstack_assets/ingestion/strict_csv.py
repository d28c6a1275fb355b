"""DuckDB's own strict reading of a source CSV, and its comparison with the connector's.

The connector's pandas reader silently shifts the columns of a row with a field too many, cuts a
field at a NUL byte and drops lines it cannot parse. DuckDB reads the same bytes strictly (each
bad line a reject with its line number); any difference, record by record and field by field,
fails the extract, naming record, id, column and values. By design pandas turns CR and CRLF in a
quoted field into LF (compared so) and reads a file mixing CRLF and LF lines, which DuckDB reads
only with strict mode off (then pandas fails on a too-wide row or broken quote, or differs).
"""

import itertools
import re
from collections.abc import Callable, Sequence
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
_HEADER_READ = (  # then ignore_errors = true or false
    "header = false, null_padding = true, parallel = false, strict_mode = false,"
    f" nullstr = {sql_string(NOT_NULL)}, ignore_errors = "
)
_FOUND = re.compile(r"Found: (\d+)")
_ERROR_LINE = re.compile(r"CSV Error on Line: (\d+)")
_SHIFTS = "refusing it, because the connector's reader would shift every column by one"
_FILLS = "the connector's reader would fill or drop the missing ones without a word"
_WIDTH_ERRORS = {"TOO MANY COLUMNS": _SHIFTS, "MISSING COLUMNS": _FILLS}


class CsvError(ValueError):
    """The file is not the CSV the connector would read correctly; says where and why."""


def _scan(path: Path, names: Sequence[str], options: str) -> str:
    # the path as a literal, not a parameter: binding a Python value imports pandas (0.3 s)
    columns = ", ".join(f"{sql_string(name)}: 'VARCHAR'" for name in names)
    return f"""read_csv({sql_string(str(path))}, {_DIALECT}, columns = {{{columns}}}, {options},
    max_line_size = {MAX_LINE_BYTES}, buffer_size = {BUFFER_BYTES})"""


def read_header(conn: Any, path: Path) -> list[str]:
    """The header row as written (not sniffed: on ragged records the sniffer takes a data row)."""
    if path.stat().st_size == 0:
        raise CsvError("the file is empty (no header row)")
    budget = [f"c{i}" for i in range(HEADER_COLUMN_BUDGET)]

    def first_row(ignore_errors: str) -> tuple | None:
        scan = _scan(path, budget, _HEADER_READ + ignore_errors)
        return conn.execute(f"select * from {scan} limit 1").fetchone()

    try:
        row = first_row("false")
    except Exception as error:  # duckdb.Error
        line = _ERROR_LINE.search(str(error))
        if line is None or int(line.group(1)) <= 1:
            texts = [text.strip() for text in str(error).splitlines() if text.strip()]
            skip = ("CSV Error on Line", "Original Line")
            detail = next((t for t in texts if not any(s in t for s in skip)), "")
            detail = "not UTF-8 text" if "not utf-8 encoded" in detail else detail
            detail = (detail or next(iter(texts), ""))[:300]
            raise CsvError(f"the header row cannot be read: {detail}") from None
        row = first_row("true")  # the reader read ahead: a later bad line is the strict read's
    header = list(itertools.takewhile(lambda value: value is not None, row or ()))
    if len(header) == HEADER_COLUMN_BUDGET:
        raise CsvError(f"the header has more than {HEADER_COLUMN_BUDGET - 1} columns")
    if not any(name.strip() for name in header):
        raise CsvError("the file is empty (no header row)")
    blank = [str(position) for position, name in enumerate(header, 1) if not name.strip()]
    if blank:
        raise CsvError(f"the header has columns without a name (column {', '.join(blank)})")
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise CsvError(f"the header names a column more than once: {', '.join(repeated)}")
    return header


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
        shown = "" if self.text is None else f" ({_shown(self.text.strip(chr(13) + chr(10)))})"
        found = _FOUND.search(self.message)
        column = f", column {self.column}" if self.column else ""
        if self.error_type in _WIDTH_ERRORS and found:
            fields = f"{found.group(1)} field{'' if found.group(1) == '1' else 's'}"
            width = f"{fields} but the header has {len(header)} ({', '.join(header)})"
            return f"{where} has {width}{shown}; {_WIDTH_ERRORS[self.error_type]}"
        if self.error_type == "INVALID ENCODING":
            return f"{where}{column}: not UTF-8 text ({self.message.split('. ')[0]})"
        if self.error_type == "UNQUOTED VALUE":
            unclosed = "a quoted field is not closed, or text follows its closing quote"
            return f"{where}{column}: unterminated quote: {unclosed}{shown}"
        if self.error_type == "LINE SIZE OVER MAXIMUM":
            return f"{where} is longer than {MAX_LINE_BYTES >> 20} MiB, the longest line read"
        return f"{where}{column}: {self.message}{shown}"


@dataclass
class Comparison:
    records_in_file: int
    records_synced: int
    differing: int
    # the first that differ: {"record": n, "in_file": [...] or None, "synced": [...] or None}
    differences: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    reject_count: int = 0
    strict: bool = True  # False: read with strict mode off (mixed line ends)


def _strict_read(
    conn: Any, path: Path, header: Sequence[str], query: Callable[[str], str]
) -> tuple[tuple, int, list[Reject], bool]:
    """`query(scan)`'s row, the rejects' count and first few, and whether strict mode was on."""
    for strict in (True, False):
        options = (
            f"header = true, strict_mode = {str(strict).lower()}, null_padding = false,"
            " store_rejects = true, rejects_table = 'csv_rejects', rejects_scan = 'csv_scans'"
        )
        try:
            [row] = conn.execute(query(_scan(path, header, options))).fetchall()
            break
        except Exception as error:
            if not strict or "state machine reached an invalid state" not in str(error):
                raise
    rejects = conn.execute(
        "select count(*) over (), line, column_name, error_type, error_message, csv_line"
        f" from csv_rejects order by line limit {EXAMPLES}"
    ).fetchall()
    first = [Reject(int(line), c, kind, m, text) for _, line, c, kind, m, text in rejects]
    return row, rejects[0][0] if rejects else 0, first, strict


def strict_rejects(conn: Any, path: Path, header: Sequence[str]) -> tuple[int, list[Reject]]:
    """Read the file strictly on its own: (rejected lines, the first rejects)."""
    # every field is read (a bare count(*) would not check the text is UTF-8)
    lengths = " + ".join(f"coalesce(strlen({sql_identifier(name)}), 0)" for name in header)
    _, count, first, _ = _strict_read(
        conn, path, header, lambda scan: f"select sum({lengths}) from {scan}"
    )
    return count, first


def compare(
    conn: Any, path: Path, header: Sequence[str], parquet: Path, synced_columns: Sequence[str]
) -> Comparison:
    """The file read strictly against the connector's records (`synced_columns` of `parquet`)."""
    file_side = ", ".join(f"f.{sql_identifier(name)}" for name in header)
    synced_side = ", ".join(f"s.{sql_identifier(name)}" for name in synced_columns)
    pairs = zip(header, synced_columns, strict=True)
    differs = " or ".join(
        ["f.present is null", "s.present is null"]
        + [f"{_as_pandas('f', a)} is distinct from {_as_pandas('s', b)}" for a, b in pairs]
    )

    def query(scan: str) -> str:
        return f"""select count(f.present), count(s.present), count(*) filter (where {differs}),
       min_by({{'record': coalesce(f.record, s.file_row_number + 1),
                'in_file': case when f.present then [{file_side}] end,
                'synced': case when s.present then [{synced_side}] end}},
              coalesce(f.record, s.file_row_number + 1), {EXAMPLES}) filter (where {differs})
from (select ordinality as record, true as present, * from {scan} with ordinality) as f
positional join (select file_row_number, true as present, *
    from read_parquet({sql_string(str(parquet))}, file_row_number = true)) as s"""

    (held, made, differing, found), count, first, strict = _strict_read(conn, path, header, query)
    return Comparison(int(held), int(made), int(differing), found or [], first, int(count), strict)


def _as_pandas(side: str, name: str) -> str:
    value = f"{side}.{sql_identifier(name)}"
    return f"replace(replace({value}, chr(13) || chr(10), chr(10)), chr(13), chr(10))"


def describe_rejects(count: int, first: Sequence[Reject], header: Sequence[str]) -> str:
    lines = "; ".join(reject.describe(header) for reject in first)
    return lines if count == 1 else f"{count:,} lines cannot be read as records; the first: {lines}"


def describe_differences(comparison: Comparison, header: Sequence[str]) -> str:
    """What the connector got wrong, in a few lines: record, id, column, both values."""
    id_position = header.index("id") if "id" in header else None
    held, made = comparison.records_in_file, comparison.records_synced
    parts = []
    if held != made:
        parts.append(f"the file holds {held:,} CSV records but the connector produced {made:,}")
    for difference in comparison.differences:
        ours, theirs = difference["in_file"], difference["synced"]
        row = ours or theirs or []
        ident = f" (id {row[id_position]})" if id_position is not None and row else ""
        where = f"record {int(difference['record']):,}{ident}"
        if theirs is None:
            parts.append(f"{where} is in the file but the connector did not produce it")
        elif ours is None:
            parts.append(f"{where} was produced by the connector but is not in the file")
        else:
            for name, mine, other in zip(header, ours, theirs, strict=True):
                if _plain(mine) == _plain(other):
                    continue
                values = f"the file holds {_shown(mine)} but the connector produced {_shown(other)}"
                parts.append(f"{where}, column {name}: {values}")
                if mine is not None and "\x00" in mine:
                    cut = f"a NUL byte (0x00) at character {mine.index(chr(0)) + 1}"
                    fix = "the connector's CSV reader silently cut the field there"
                    parts[-1] += f" ({cut}: {fix}; remove the byte from the source)"
                break
    more = comparison.differing - len(comparison.differences)
    if more > 0:
        parts.append(f"and {more:,} more records differ")
    return "; ".join(parts)


def _plain(value: str | None) -> str | None:
    return None if value is None else value.replace("\r\n", "\n").replace("\r", "\n")


def _shown(value: str | None) -> str:
    return "NULL" if value is None else repr(value if len(value) <= 80 else value[:77] + "...")
