"""Bad source files, each with the fragments its error must name, and the run that
materializes one and asserts it failed clearly (test_quality, test_bigquery)."""

from collections.abc import Callable
from pathlib import Path

from tests.conftest import Stack
from tests.support.fixture_data import PROJECT_TAGS, PROJECTS, write_csv, write_projects, write_tags
from tests.support.results import failure_messages, materialized_keys


def tags_without_id(d: Path) -> Path:
    return write_csv(d / "tags.csv", ["project", "tag"], sorted(PROJECT_TAGS.items()))


def duplicate_ids(d: Path) -> Path:
    return write_csv(d / "tags.csv", ["id", "tag"], [*sorted(PROJECT_TAGS.items()), (7, "mlops")])


def _untagged_project(d: Path) -> Path:
    return write_csv(
        d / "tags.csv", ["id", "tag"], [(i, "" if i == 15 else t) for i, t in PROJECT_TAGS.items()]
    )


def _null_title(d: Path) -> Path:
    rows = [(p[0], p[1], "" if p[0] == 15 else p[2], p[3]) for p in PROJECTS]
    return write_projects(d / "projects.csv", rows)


def _duplicate_title_description(d: Path) -> Path:
    return write_projects(
        d / "projects.csv", [*PROJECTS, (99, "2021-01-01 00:00:00", *PROJECTS[2][2:])]
    )


def _empty(d: Path) -> Path:
    (d / "tags.csv").write_bytes(b"")
    return d / "tags.csv"


def header_only(d: Path) -> Path:
    (d / "tags.csv").write_text("id,tag\n")
    return d / "tags.csv"


def _appended(source: str, line: str | bytes) -> Callable[[Path], Path]:
    """The good fixture file of `source`, with `line` appended byte for byte."""
    write = write_tags if source == "tags" else write_projects

    def make(d: Path) -> Path:
        path = write(d / f"{source}.csv")
        with path.open("ab") as handle:
            handle.write(line if isinstance(line, bytes) else line.encode())
        return path

    return make


_unterminated_quote = _appended(
    "projects", '40,2021-01-01 00:00:00,"An unterminated title,description\n'
)
_ragged_row = _appended("tags", "40,mlops,one-field-too-many\n")
_not_utf8 = _appended("tags", b"40,caf\xe9-learning\n")  # latin-1, not UTF-8
# the connector's CSV reader cuts a field at a NUL and succeeds: it must fail instead
_nul_byte = _appended("tags", b"40,ml\x00ops\n")
# a line of spaces: the connector's reader drops it without a word
_whitespace_line = _appended("tags", "   \n40,mlops\n")


def _tag_id(spelling: str) -> Callable[[Path], Path]:
    """tags.csv with one more row whose id is spelled `spelling` (written verbatim)."""
    return _appended("tags", f"{spelling},mlops\n")


def _project_id(spelling: str) -> Callable[[Path], Path]:
    return _appended("projects", f"{spelling},2021-01-01 00:00:00,A title,A description\n")


def _ragged_first_record(d: Path) -> Path:
    return write_csv(d / "tags.csv", ["id", "tag"], [(i, t, "x") for i, t in PROJECT_TAGS.items()])


def _not_utf8_deep(d: Path) -> Path:
    """Past what the pre-flight reads: the connector itself must refuse it."""
    many = {**PROJECT_TAGS, **{1000 + i: "mlops" for i in range(8000)}}  # ~100 KB
    path = write_tags(d / "tags.csv", many)
    with path.open("ab") as handle:
        handle.write(b"40,caf\xe9-learning\n")
    return path


def _directory(d: Path) -> Path:
    return d


BAD_INPUTS: list[tuple[str, str, Callable[[Path], Path], list[str]]] = [
    # ids: staging casts them to BIGINT, so only plain integers pass (7.4 would round to 7
    # and join twice, 1e3 would become 1000, 007 would collide with 7)
    ("tags", "fractional id in tags", _tag_id("7.4"), ["id_is_integer", "'7.4'"]),
    ("projects", "fractional id in projects", _project_id("7.4"), ["id_is_integer", "'7.4'"]),
    ("tags", "id past BIGINT", _tag_id("9223372036854775808"), ["9223372036854775808"]),
    ("tags", "id in exponent form", _tag_id("1e3"), ["id_is_integer", "'1e3'"]),
    ("tags", "id with a leading zero", _tag_id("007"), ["id_is_integer", "'007'"]),
    ("projects", "id that is text", _project_id("abc"), ["id_is_integer", "'abc'"]),
    (
        "tags",
        "tags without an id column",
        tags_without_id,
        ["expected_columns_exist", "missing columns ['id']"],
    ),
    ("tags", "duplicate ids", duplicate_ids, ["id_is_unique", "2 of 9 rows", "ids ['7', '7']"]),
    (
        "tags",
        "a project without a tag",
        _untagged_project,
        ["tag_is_not_null", "1 of 8 rows", "ids ['15']"],
    ),
    ("projects", "null title", _null_title, ["title_is_not_null", "1 of 8 rows", "ids ['15']"]),
    (
        "projects",
        "duplicate title+description",
        _duplicate_title_description,
        ["title_description_are_unique", "2 of 9 rows"],
    ),
    ("tags", "empty file", _empty, ["the file is empty"]),
    ("tags", "header-only file", header_only, ["row_count_is_positive", "observed 0"]),
    ("projects", "unterminated quote", _unterminated_quote, ["EOF inside string"]),
    ("tags", "row with more fields than the header", _ragged_row, ["Expected 2 fields", "saw 3"]),
    (
        "tags",
        "first record wider than the header",
        _ragged_first_record,
        ["line 2 has 3 fields but the header has 2 (id, tag)", "shift every column"],
    ),
    ("tags", "non-UTF-8 bytes", _not_utf8, ["not UTF-8 text", "can't decode byte 0xe9"]),
    (
        "tags",
        "non-UTF-8 bytes deep in the file",
        _not_utf8_deep,
        ["can't decode byte 0xe9", "UnicodeDecodeError"],
    ),
    (
        "tags",
        "NUL byte inside a field",
        _nul_byte,
        ["id 40), column tag", "'ml\\x00ops'", "NUL byte (0x00) at character 3", "silently cut"],
    ),
    (
        "tags",
        "a line the reader would drop",
        _whitespace_line,
        [f"line {len(PROJECT_TAGS) + 2} has 1 field but the header has 2 (id, tag) ('   ')"],
    ),
    ("tags", "a directory, not a file", _directory, ["is a directory, not a file"]),
]


def materialize_bad_input(
    stack: Stack, source: str, make_bad_file: Callable[[Path], Path], expected: list[str]
) -> None:
    """Materialize `source` and its downstream from a bad file: the run fails, naming the
    source and every `expected` fragment, and labeled_projects is not materialized."""
    bad_dir = stack.root / "bad"
    bad_dir.mkdir()
    stack.set_source(source, make_bad_file(bad_dir))

    result = stack.materialize(f"{source}*")

    assert not result.success
    message = failure_messages(result)
    assert f"source '{source}'" in message
    for fragment in expected:
        assert fragment in message
    assert "labeled_projects" not in materialized_keys(result)
