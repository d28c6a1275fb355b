"""Great Expectations suites as asset checks, and write-audit-publish on the raw tables.

Every bad input starts from a warehouse where good data was already published, and ends
with the published tables unchanged, row for row, and an error naming source and problem.
"""

from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlparse

import pytest
from dagster import AssetCheckSeverity, AssetKey

from mlstack_assets.quality.suites import load_suite
from tests.conftest import Stack
from tests.integration.test_pipeline import failure_messages, materialized_keys
from tests.support.fixture_data import PROJECT_TAGS, PROJECTS, write_csv, write_projects, write_tags
from tests.support.https_server import HTTPSServer, Route

PUBLISHED = (
    "mlops_course.projects",
    "mlops_course.tags",
    "mlops_course.labeled_projects",
    "mlops_course.ml_dataset",
    "mlops_course.ml_splits",
    "mlops_course.tag_distribution",
)


def snapshot(stack: Stack) -> dict[str, list[tuple]]:
    return {table: stack.table_bytes(table) for table in PUBLISHED}


def checks(result, asset: str) -> dict[str, object]:
    return {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == AssetKey(asset)
    }


def _tags_without_id(d: Path) -> Path:
    return write_csv(d / "tags.csv", ["project", "tag"], sorted(PROJECT_TAGS.items()))


def _duplicate_ids(d: Path) -> Path:
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


def _header_only(d: Path) -> Path:
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
        _tags_without_id,
        ["expected_columns_exist", "missing columns ['id']"],
    ),
    ("tags", "duplicate ids", _duplicate_ids, ["id_is_unique", "2 of 9 rows", "ids ['7', '7']"]),
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
    ("tags", "header-only file", _header_only, ["row_count_is_positive", "observed 0"]),
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


@pytest.mark.parametrize(
    "source, make_bad_file, expected",
    [pytest.param(s, m, e, id=name) for s, name, m, e in BAD_INPUTS],
)
def test_bad_input_fails_clearly_and_never_replaces_a_published_table(
    published_stack: Stack, source: str, make_bad_file, expected: list[str]
):
    before = snapshot(published_stack)

    materialize_bad_input(published_stack, source, make_bad_file, expected)

    assert snapshot(published_stack) == before


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


def test_untagged_projects_fail_the_tags_audit_and_change_no_table(published_stack: Stack):
    # tags.csv is valid on its own, but two published projects have no row in it: the join
    # would give them NULL tags, so the tags audit compares with the published projects.
    before = snapshot(published_stack)
    untagged = {i: t for i, t in PROJECT_TAGS.items() if i not in (9, 15)}
    published_stack.set_source("tags", write_tags(published_stack.root / "t.csv", untagged))

    result = published_stack.materialize("tags*")

    assert not result.success
    message = failure_messages(result)
    assert "source 'tags'" in message and "every_project_has_a_tag" in message
    assert "2 rows unexpected; e.g. ['15', '9']" in message or "e.g. ['9', '15']" in message
    assert "labeled_projects" not in materialized_keys(result)
    assert snapshot(published_stack) == before


def test_first_sync_of_tags_has_no_projects_to_compare_with(stack: Stack):
    result = stack.materialize("tags")

    assert result.success, failure_messages(result)
    check = checks(result, "tags")["every_project_has_a_tag"]
    assert check.passed
    assert "mlops_course.projects is not published yet" in check.description


def test_failed_audit_reports_each_expectation_as_a_failed_check_and_keeps_staged_rows(
    published_stack: Stack,
):
    published_stack.set_source("tags", _duplicate_ids(published_stack.root))

    result = published_stack.materialize("tags*")

    tag_checks = checks(result, "tags")
    # every expectation of the suite, and the volume guard (publish.py)
    suite = {e.check_name for e in load_suite("tags").expectations}
    assert set(tag_checks) == suite | {"row_drop_within_limit"}
    failed = tag_checks["id_is_unique"]
    assert not failed.passed and failed.severity == AssetCheckSeverity.ERROR
    assert failed.metadata["unexpected_count"].value == 2
    assert failed.metadata["sample_unexpected_ids"].value == ["7", "7"]  # as the file spells them
    assert tag_checks["tag_is_not_null"].passed
    # Write-audit-publish: the audited rows are still there to inspect.
    assert published_stack.query("select count(*) from mlops_course_staging.tags where id = 7") == [
        (2,)
    ]
    assert "mlops_course_staging.tags" in failure_messages(result)


def test_extra_column_passes_and_is_reported(published_stack: Stack):
    rows = [(i, t, 0.9) for i, t in sorted(PROJECT_TAGS.items())]
    published_stack.set_source(
        "tags", write_csv(published_stack.root / "t.csv", ["id", "tag", "confidence"], rows)
    )

    result = published_stack.materialize("tags*")

    assert result.success, failure_messages(result)
    columns_check = checks(result, "tags")["expected_columns_exist"]
    assert columns_check.passed
    assert columns_check.metadata["unexpected_columns"].value == ["confidence"]
    assert "confidence" in [r[0] for r in published_stack.query("describe mlops_course.tags")]
    assert "labeled_projects" in materialized_keys(result)


def test_tag_outside_the_known_set_passes_with_a_warning(published_stack: Stack):
    tags = {**PROJECT_TAGS, 31: "quantum-ml"}
    published_stack.set_source("tags", write_tags(published_stack.root / "t.csv", tags))

    result = published_stack.materialize("tags*")

    assert result.success, failure_messages(result)
    for asset in ("tags", "labeled_projects"):
        known = checks(result, asset)["tag_is_known"]
        assert not known.passed and known.severity == AssetCheckSeverity.WARN
        assert "quantum-ml" in str(known.metadata["sample_unexpected_values"].value)
    assert published_stack.query("select tag from mlops_course.labeled_projects where id = 31") == [
        ("quantum-ml",)
    ]


def test_source_url_returning_404_fails_naming_the_source(
    published_stack: Stack, https_server: HTTPSServer
):
    before = snapshot(published_stack)
    published_stack.set_source("projects", https_server.url("/missing/projects.csv"))

    result = published_stack.materialize("projects*")

    assert not result.success
    assert "source 'projects'" in failure_messages(result)
    assert "HTTP 404 Not Found" in failure_messages(result)
    assert https_server.count("/missing/projects.csv") == 1  # a 404 is never retried
    assert snapshot(published_stack) == before


def test_https_source_is_synced_through_the_connector(
    published_stack: Stack, https_server: HTTPSServer
):
    tags = {**PROJECT_TAGS, 6: "mlops"}
    https_server.routes["/tags.csv"] = Route(
        body=write_tags(published_stack.root / "t.csv", tags).read_bytes()
    )
    published_stack.set_source("tags", https_server.url("/tags.csv"))

    result = published_stack.materialize("tags*")

    assert result.success, failure_messages(result)
    # fetched once by mlstack (stall timeout, retries); the connector reads the local copy
    assert https_server.count("/tags.csv") == 1
    assert published_stack.query("select tag from mlops_course.labeled_projects where id = 6") == [
        ("mlops",)
    ]


def test_every_check_passes_on_good_data_with_one_validation_per_suite(stack: Stack):
    result = stack.materialize()

    assert result.success, failure_messages(result)
    for asset in ("projects", "tags", "labeled_projects"):
        evaluations = checks(result, asset)
        suite_checks = {e.check_name for e in load_suite(asset).expectations}
        assert suite_checks <= set(evaluations)
        assert all(evaluations[name].passed for name in suite_checks), asset
        docs = {evaluations[name].metadata["data_docs"].value for name in suite_checks}
        assert len(docs) == 1  # one validation, many check results
        page = Path(urlparse(docs.pop()).path)
        assert page.is_file() and asset in page.read_text()


def test_data_docs_keep_the_newest_validations_of_each_suite(tmp_path: Path):
    from mlstack_assets.quality.data_docs import prune_history

    for minute in range(5):
        page = tmp_path / "validations" / "tags" / "__none__" / f"20261121T00{minute}000.0Z"
        page.mkdir(parents=True)
        (page / "warehouse-tags.html").write_text("<html/>")

    prune_history(tmp_path, keep=2)

    kept = sorted(p.name for p in (tmp_path / "validations" / "tags" / "__none__").iterdir())
    assert kept == ["20261121T003000.0Z", "20261121T004000.0Z"]


def test_a_missing_column_is_one_cause_and_the_checks_needing_it_say_why(published_stack: Stack):
    # today's Made-With-ML tags.csv has no id column
    published_stack.set_source("tags", _tags_without_id(published_stack.root))

    result = published_stack.materialize("tags")

    assert not result.success
    message = failure_messages(result)
    report = message.split("\n", 1)[1].strip().splitlines()
    assert report[0].startswith("- expected_columns_exist")
    assert "missing columns ['id']" in report[0]
    needs_id = [e.check_name for e in load_suite("tags").expectations if "id" in e.columns]
    assert report[1] == f"- not evaluated: column id is missing: {', '.join(needs_id)}"
    assert len(report) == 2
    assert "could not be evaluated" not in message and "sqlalche.me" not in message
    for name in needs_id:
        check = checks(result, "tags")[name]
        assert not check.passed and check.description == "not evaluated: column id is missing"


def test_an_empty_table_fails_on_its_row_count_and_says_why_the_others_did_not_run(
    published_stack: Stack,
):
    published_stack.set_source("tags", _header_only(published_stack.root))

    result = published_stack.materialize("tags")

    assert not result.success
    tag_checks = checks(result, "tags")
    assert not tag_checks["row_count_is_positive"].passed
    assert tag_checks["expected_columns_exist"].passed
    assert tag_checks["id_is_unique"].description == "not evaluated: the table is empty"
    assert "- not evaluated: the table is empty: " in failure_messages(result)
