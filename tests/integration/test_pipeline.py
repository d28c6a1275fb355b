"""The whole graph on the embedded default: Airbyte sync → publish → dbt → labeled_projects."""

import socket

import duckdb
import pandas as pd
from dagster import AssetKey

from tests.conftest import Stack
from tests.support.fixture_data import PROJECT_TAGS, PROJECTS, write_csv, write_projects
from tests.support.results import failure_messages, materialization, materialized_keys

LABELED = "mlops_course.labeled_projects"


def expected_labeled_projects(stack: Stack) -> pd.DataFrame:
    """An independent pandas join of the fixture files, as the lesson defines it."""
    projects = pd.read_csv(stack.root / "src" / "projects.csv", parse_dates=["created_on"])
    tags = pd.read_csv(stack.root / "src" / "tags.csv")
    joined = projects.merge(tags, on="id", how="left")
    return joined.sort_values("id").reset_index(drop=True)


def labeled_projects(stack: Stack) -> pd.DataFrame:
    rows = stack.query(f"select id, created_on, title, description, tag from {LABELED} order by id")
    frame = pd.DataFrame(rows, columns=["id", "created_on", "title", "description", "tag"])
    frame["created_on"] = pd.to_datetime(frame["created_on"])
    return frame


def test_full_graph_builds_labeled_projects_equal_to_an_independent_join(stack: Stack):
    result = stack.materialize()

    assert result.success, failure_messages(result)
    assert {"projects", "tags", "labeled_projects"} <= materialized_keys(result)
    actual = labeled_projects(stack)
    expected = expected_labeled_projects(stack)
    pd.testing.assert_frame_equal(actual, expected, check_dtype=False)
    assert len(actual) == len(PROJECTS)
    assert dict(zip(actual["id"], actual["tag"], strict=True)) == PROJECT_TAGS
    # Multi-line, quoted descriptions arrive intact, byte for byte.
    assert actual.loc[actual["id"] == 26, "description"].item() == PROJECTS[6][3]


def test_dbt_schema_tests_run_as_passing_checks_on_labeled_projects(stack: Stack):
    result = stack.materialize()

    evaluations = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key == AssetKey("labeled_projects") and "labeled_projects" in e.check_name
    }
    assert evaluations == {
        "unique_labeled_projects_id": True,
        "not_null_labeled_projects_id": True,
        "not_null_labeled_projects_title": True,
        "not_null_labeled_projects_description": True,
        "not_null_labeled_projects_tag": True,
        "accepted_values_labeled_projects_tag": True,  # warn-only, the GX list of tags
    }


def test_failing_dbt_test_keeps_the_published_table_and_reports_what_failed(
    published_stack: Stack,
):
    # A project loses its tag in the published table (bypassing the audit), so the join
    # leaves its tag null: dbt builds labeled_projects in the audit schema, its not_null
    # test fails there, and nothing is published.
    before = published_stack.table_bytes(LABELED)
    with duckdb.connect(str(published_stack.warehouse_path)) as conn:
        conn.execute("delete from mlops_course.tags where id = 9")

    result = published_stack.materialize("labeled_projects*")

    assert not result.success
    dbt_tests = {
        e.check_name: e.passed
        for e in result.get_asset_check_evaluations()
        if e.asset_key == AssetKey("labeled_projects") and "labeled_projects" in e.check_name
    }
    assert dbt_tests["not_null_labeled_projects_tag"] is False
    assert dbt_tests["unique_labeled_projects_id"] is True
    message = failure_messages(result)
    assert (
        "- labeled_projects: not_null_labeled_projects_tag [dbt test]: failed on 1 rows" in message
    )
    assert "e.g. ids [9]" in message and "raw source 'tags' (mlops_course.tags)" in message
    assert "labeled_projects" not in materialized_keys(result)
    assert published_stack.table_bytes(LABELED) == before
    # the audited rows stay where dbt built them, for inspection
    assert published_stack.query(
        "select id from mlops_course_audit.labeled_projects where tag is null"
    ) == [(9,)]
    assert not {"ml_dataset", "ml_splits", "tag_distribution"} & materialized_keys(result)


def test_raw_tables_keep_airbyte_metadata_columns_and_record_their_lineage(stack: Stack):
    result = stack.materialize("projects")

    assert result.success, failure_messages(result)
    columns = [row[0] for row in stack.query("describe mlops_course.projects")]
    assert columns[:4] == ["id", "created_on", "title", "description"]
    assert {"_airbyte_raw_id", "_airbyte_extracted_at", "_airbyte_meta"} <= set(columns)
    metadata = materialization(result, "projects").metadata
    assert metadata["dagster/row_count"].value == len(PROJECTS)
    assert metadata["source_url"].value == str(stack.root / "src" / "projects.csv")
    assert metadata["connector"].value.startswith("airbyte/source-file ")
    schema = [column.name for column in metadata["dagster/column_schema"].schema.columns]
    assert schema == columns


def test_missing_file_fails_the_raw_asset_naming_the_source_and_nothing_downstream_runs(
    published_stack: Stack,
):
    before = published_stack.table_bytes(LABELED)
    published_stack.set_source("projects", published_stack.root / "nowhere" / "projects.csv")

    result = published_stack.materialize()

    assert not result.success
    message = failure_messages(result)
    assert "source 'projects'" in message and "file not found" in message
    assert str(published_stack.root / "nowhere" / "projects.csv") in message
    assert "labeled_projects" not in materialized_keys(result)
    assert published_stack.table_bytes(LABELED) == before


def test_unreachable_url_fails_the_raw_asset_naming_the_source(published_stack: Stack):
    with socket.socket() as probe:  # a loopback port with nobody listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"https://127.0.0.1:{port}/tags.csv"
    published_stack.set_source("tags", url)

    result = published_stack.materialize()

    assert not result.success
    message = failure_messages(result)
    assert f"source 'tags' ({url}): unreachable" in message
    assert "labeled_projects" not in materialized_keys(result)


def test_csv_the_connector_cannot_parse_fails_with_the_parser_cause(published_stack: Stack):
    bad = write_projects(published_stack.root / "bad" / "projects.csv")
    with bad.open("a", encoding="utf-8") as handle:
        handle.write('99,2021-01-01 00:00:00,"Ragged",a description,one field too many\n')
    published_stack.set_source("projects", bad)

    result = published_stack.materialize()

    assert not result.success
    message = failure_messages(result)
    assert "source 'projects'" in message
    assert "Expected 4 fields" in message and "saw 5" in message
    assert "labeled_projects" not in materialized_keys(result)


def test_first_record_wider_than_header_is_refused_instead_of_shifted(published_stack: Stack):
    # pandas would make `id` the index and shift every column left by one.
    bad = write_csv(
        published_stack.root / "bad" / "tags.csv",
        ["id", "tag"],
        [(6, "computer-vision", "extra"), (7, "computer-vision", "extra")],
    )
    published_stack.set_source("tags", bad)
    before = published_stack.table_bytes("mlops_course.tags")

    result = published_stack.materialize("tags")

    assert not result.success
    assert "line 2 has 3 fields but the header has 2 (id, tag)" in failure_messages(result)
    assert published_stack.table_bytes("mlops_course.tags") == before


def test_checks_executed_alone_run_on_the_published_table_without_rebuilding_it(
    published_stack: Stack,
):
    """The UI's "Execute" on a check of labeled_projects (a dbt test and a GX expectation):
    evaluated against the published table, nothing materialized."""
    from dagster import AssetCheckKey

    # a row only the published table has: the checks must see it
    published_stack.query_write(f"insert into {LABELED} select * from {LABELED} where id = 6")
    defs = published_stack.definitions()
    keys = {
        AssetCheckKey(AssetKey("labeled_projects"), "unique_labeled_projects_id"),
        AssetCheckKey(AssetKey("labeled_projects"), "id_is_unique"),
        AssetCheckKey(AssetKey("labeled_projects"), "tag_is_known"),
    }
    job = defs.resolve_implicit_global_asset_job_def().get_subset(
        asset_selection=set(), asset_check_selection=keys
    )

    result = job.execute_in_process(instance=published_stack.instance, raise_on_error=False)

    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert set(evaluations) == {key.name for key in keys}
    assert not evaluations["unique_labeled_projects_id"].passed  # dbt test, published rows
    assert not evaluations["id_is_unique"].passed  # GX, published rows
    assert evaluations["id_is_unique"].metadata["table"].value == LABELED
    assert evaluations["tag_is_known"].passed
    assert materialized_keys(result) == set()


def test_a_downstream_first_selection_names_what_to_materialize_first(stack: Stack):
    result = stack.materialize("labeled_projects")

    assert not result.success
    message = failure_messages(result)
    assert "nothing was built: the upstream" in message
    assert "stg_mlops_course__projects (mlops_course_audit.stg_mlops_course__projects)" in message
    assert "--select '+labeled_projects'" in message
    assert "Catalog Error" not in message

    ml = stack.materialize("ml_splits")

    assert not ml.success
    message = failure_messages(ml)
    assert "ml_splits: nothing was built: its upstream ml_dataset" in message
    assert "--select '+ml_splits'" in message


def test_tags_of_projects_that_do_not_exist_are_warned_and_counted(published_stack: Stack):
    # today's Made-With-ML projects.csv lost projects the lesson's tags.csv still tags
    kept = [p for p in PROJECTS if p[0] not in (9, 15)]
    published_stack.set_source("projects", write_projects(published_stack.root / "p.csv", kept))

    result = published_stack.materialize()

    assert result.success, failure_messages(result)
    [orphans] = [
        e
        for e in result.get_asset_check_evaluations()
        if e.check_name == "relationships_stg_mlops_course__tags_id_is_a_project"
    ]
    assert not orphans.passed and orphans.severity.value == "WARN"
    assert orphans.metadata["dagster_dbt/failed_row_count"].value == 2
    assert orphans.metadata["sample_values"].value == ["9", "15"]
    assert len(labeled_projects(published_stack)) == len(kept)  # the join drops them


def test_dbt_parses_the_project_once_for_the_same_settings_not_on_every_run(
    published_stack: Stack,
):
    """The second `dbt build` with the same settings reuses dbt's partial parse: the run's log
    says nothing about being unable to (a full parse, seconds of every run, before)."""
    from mlstack_assets.settings import DBT_PROJECT_DIR

    runs = [published_stack.materialize("group:transform") for _ in range(2)]

    assert all(run.success for run in runs), [failure_messages(run) for run in runs]
    [log] = (DBT_PROJECT_DIR / "target").glob(f"dbt_models-{runs[1].run_id[:7]}-*/dbt.log")
    text = log.read_text()
    assert "Partial parsing enabled" in text
    assert "Unable to do partial parsing" not in text
