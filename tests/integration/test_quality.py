"""Great Expectations suites as asset checks, and write-audit-publish on the raw tables.

Every bad input starts from a warehouse where good data was already published, and ends
with the published tables unchanged, row for row, and an error naming source and problem.
"""

from pathlib import Path
from urllib.parse import urlparse

import pytest
from dagster import AssetCheckSeverity, AssetKey

from mlstack_assets.quality.suites import load_suite
from tests.conftest import Stack
from tests.support.bad_inputs import (
    BAD_INPUTS,
    duplicate_ids,
    header_only,
    materialize_bad_input,
    tags_without_id,
)
from tests.support.fixture_data import PROJECT_TAGS, write_csv, write_tags
from tests.support.https_server import HTTPSServer, Route
from tests.support.results import checks, failure_messages, materialized_keys, snapshot


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
    published_stack.set_source("tags", duplicate_ids(published_stack.root))

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
    published_stack.set_source("tags", tags_without_id(published_stack.root))

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
    published_stack.set_source("tags", header_only(published_stack.root))

    result = published_stack.materialize("tags")

    assert not result.success
    tag_checks = checks(result, "tags")
    assert not tag_checks["row_count_is_positive"].passed
    assert tag_checks["expected_columns_exist"].passed
    assert tag_checks["id_is_unique"].description == "not evaluated: the table is empty"
    assert "- not evaluated: the table is empty: " in failure_messages(result)


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root` with its bytes: compared before and after, nothing written."""
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _raw_checks_alone(stack: Stack):
    """Every check of `airbyte_sync` executed alone, as the UI's "Execute" launches them."""
    defs = stack.definitions()
    keys = defs.resolve_assets_def(AssetKey("tags")).check_keys  # projects' and tags'
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection=keys
    )
    return keys, job.execute_in_process(instance=stack.instance, raise_on_error=False)


def test_raw_checks_executed_alone_evaluate_the_published_tables_and_change_nothing(
    published_stack: Stack,
):
    assert published_stack.materialize('key:"projects" or key:"tags"').success  # versions
    lake = published_stack.root / "lake"
    published = {
        t: published_stack.instance.get_latest_materialization_event(AssetKey(t))
        for t in ("projects", "tags")
    }
    before, lake_before = snapshot(published_stack), _files(lake)

    keys, result = _raw_checks_alone(published_stack)

    assert result.success, failure_messages(result)
    evaluations = {
        (e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()
    }
    assert set(evaluations) == {(k.asset_key.path[-1], k.name) for k in keys}
    assert all(e.passed for e in evaluations.values())
    rows = len(published_stack.query("select * from mlops_course.tags"))
    volume = evaluations["tags", "row_drop_within_limit"].description
    assert volume.startswith(f"{rows} rows against {rows} in version ")
    assert result.get_asset_materialization_events() == []
    assert snapshot(published_stack) == before and _files(lake) == lake_before

    # the published tables changed behind mlstack's back: a duplicate id, half the projects
    published_stack.query_write(
        "insert into mlops_course.tags select * from mlops_course.tags limit 1"
    )
    [(projects,)] = published_stack.query("select count(*) from mlops_course.projects")
    published_stack.query_write(
        "delete from mlops_course.projects where id in"
        f" (select id from mlops_course.projects order by id limit {projects // 2 + 1})"
    )
    before = snapshot(published_stack)

    _, result = _raw_checks_alone(published_stack)

    assert not result.success
    failed = {
        (e.asset_key.path[-1], e.check_name): e
        for e in result.get_asset_check_evaluations()
        if not e.passed
    }
    assert set(failed) == {("tags", "id_is_unique"), ("projects", "row_drop_within_limit")}
    unique = failed["tags", "id_is_unique"]
    assert unique.metadata["table"].value == "mlops_course.tags"
    assert unique.metadata["expectation"].value == "expect_column_values_to_be_unique(column=id)"
    [(duplicated,)] = published_stack.query(
        "select id from mlops_course.tags group by id having count(*) > 1"
    )
    assert "unexpected; e.g. ids" in unique.description
    assert str(duplicated) in unique.description
    drop = failed["projects", "row_drop_within_limit"].description
    assert f"{projects - projects // 2 - 1} rows, {projects} in the published version" in drop
    assert "more than MLSTACK_MAX_ROW_DROP_PERCENT=20" in drop
    assert result.get_asset_materialization_events() == []
    assert snapshot(published_stack) == before and _files(lake) == lake_before
    for table, event in published.items():  # still the materializations of the sync
        assert published_stack.instance.get_latest_materialization_event(AssetKey(table)) == event
