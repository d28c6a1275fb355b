"""Read the header and first record of a source before the connector runs.

Two things the Airbyte File source cannot tell us clearly: why a source is unreachable
(it reports "Something went wrong in the connector"), and whether pandas is about to
shift every column: when the first record has more fields than the header, pandas
silently turns the first column into the index. This probe reads a few kilobytes, never
the whole file, and fails with a message that names the source and the cause.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import BinaryIO

from mlstack_assets.ingestion.sources import SourceError, SourceSpec, http_response, local_file

PREFLIGHT_BYTES = 64 * 1024


@dataclass(frozen=True)
class Preflight:
    header: list[str]
    first_record: list[str] | None


@contextmanager
def open_source(spec: SourceSpec) -> Iterator[BinaryIO]:
    """A binary stream of the source, with access errors turned into `SourceError`."""
    if not spec.is_remote:
        try:
            with local_file(spec).open("rb") as stream:
                yield stream
        except PermissionError as error:
            raise SourceError(spec, f"file not readable: {error}") from error
        return
    with http_response(spec) as response:
        response.raw.decode_content = True
        yield response.raw


def preflight(spec: SourceSpec) -> Preflight:
    """Check the source is reachable, UTF-8, not empty, and its first record fits the header."""
    with open_source(spec) as stream:
        head = stream.read(PREFLIGHT_BYTES)
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
