"""Check the local copy of a source before the connector reads it.

Things the Airbyte File source does not tell us, or gets silently wrong:
- whether pandas is about to shift every column: when the first record has more fields
  than the header, pandas silently turns the first column into the index. The probe reads
  the header and first record (a few kilobytes) and refuses such a file.
- NUL bytes: its CSV parser cuts a field at a NUL (0x00) and the sync succeeds with the
  rest of the field gone. `scan_for_nul` streams the whole file (1 MiB at a time, a
  C-speed `bytes.find`) and fails naming the line and column instead.
Every failure names the source and the cause.
"""

from __future__ import annotations

import codecs
import csv
import io
from dataclasses import dataclass
from pathlib import Path

from mlstack_assets.ingestion.sources import SourceError, SourceSpec

PREFLIGHT_BYTES = 64 * 1024
SCAN_CHUNK = 1 << 20


@dataclass(frozen=True)
class Preflight:
    header: list[str]
    first_record: list[str] | None


def preflight(spec: SourceSpec, path: Path) -> Preflight:
    """Check the local copy `path` of the source: UTF-8, not empty, no NUL byte, and its
    first record fits the header."""
    try:
        with path.open("rb") as stream:
            head = stream.read(PREFLIGHT_BYTES)
    except PermissionError as error:
        raise SourceError(spec, f"file not readable: {error}") from error
    scan_for_nul(spec, path)  # first: Python 3.10's csv module stops at a NUL too, less clearly
    decoder = codecs.getincrementaldecoder("utf-8")("strict")
    try:
        # A cut-off multi-byte character at the end of `head` is not an error.
        text = decoder.decode(head, final=len(head) < PREFLIGHT_BYTES)
    except UnicodeDecodeError as error:
        raise SourceError(spec, f"not UTF-8 text: {error}") from error
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        first_record = next(reader, None)
    except csv.Error as error:
        raise SourceError(spec, f"not a readable CSV: {error}") from error
    if not header or not any(field.strip() for field in header):
        raise SourceError(spec, "the file is empty (no header row)")
    if first_record is not None and len(first_record) > len(header):
        raise SourceError(
            spec,
            f"the first record has {len(first_record)} fields but the header has {len(header)} "
            f"({', '.join(header)}); refusing to load it, because the reader would shift every "
            "column by one",
        )
    return Preflight(header=header, first_record=first_record)


def scan_for_nul(spec: SourceSpec, path: Path) -> None:
    """Fail on the first NUL byte, naming its physical line and column (1-based).

    The column counts characters when the line so far is valid UTF-8, else bytes.
    """
    newlines = 0
    line_start = b""  # the current line's bytes before this chunk, while they are short
    line_bytes = 0  # and how many there are
    with path.open("rb") as stream:
        while chunk := stream.read(SCAN_CHUNK):
            at = chunk.find(b"\x00")
            end = at if at >= 0 else len(chunk)
            last = chunk.rfind(b"\n", 0, end)
            if last >= 0:
                line_start, line_bytes = b"", 0
            prefix = line_start + chunk[last + 1 : end]
            line_bytes += end - last - 1
            if at < 0:
                newlines += chunk.count(b"\n")
                line_start = prefix if len(prefix) <= SCAN_CHUNK else b""
                continue
            try:
                if len(prefix) != line_bytes:
                    raise UnicodeDecodeError("utf-8", b"", 0, 1, "line too long to keep")
                column = len(prefix.decode("utf-8")) + 1
            except UnicodeDecodeError:
                column = line_bytes + 1
            line = newlines + chunk.count(b"\n", 0, at) + 1
            raise SourceError(
                spec,
                f"NUL byte (0x00) at line {line}, column {column}: the connector's CSV reader"
                " would silently cut the field there; remove the byte from the source",
            )


def count_records(path: Path) -> int:
    """CSV records after the header, as the connector's reader sees them: a quoted field
    may span lines, blank lines are skipped."""
    with path.open(encoding="utf-8", errors="replace", newline="") as stream:
        return max(sum(1 for row in csv.reader(stream) if row) - 1, 0)
