"""ML-ready assets: dataset, stratified splits, tag distribution; and what blocks them."""

import random
from collections import Counter
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from dagster import AssetKey

from mlstack_assets.ml import checks, plot
from mlstack_assets.ml.assets import known_tags
from mlstack_assets.ml.sql import (
    ml_dataset_sql,
    ml_splits_sql,
    split_counts_sql,
    tag_distribution_sql,
)
from tests.conftest import Stack
from tests.support.fixture_data import PROJECT_TAGS, PROJECTS, write_projects, write_tags
from tests.support.results import failure_messages, materialized_keys

TAG_SIZES = {
    "computer-vision": 180,
    "natural-language-processing": 95,
    "mlops": 41,
    "graph-learning": 12,
    "time-series": 4,
    "reinforcement-learning": 2,
}


@pytest.fixture
def dataset() -> duckdb.DuckDBPyConnection:
    """An in-memory ml_dataset-shaped table with tags of very different sizes."""
    ids = random.Random(7).sample(range(10_000, 99_999), sum(TAG_SIZES.values()))
    tags = [tag for tag, size in TAG_SIZES.items() for _ in range(size)]
    conn = duckdb.connect()
    frame = pd.DataFrame(
        {
            "id": ids,
            "created_on": pd.Timestamp("2021-01-01"),
            "text": "t",
            "tag": tags,
        }
    )
    conn.register("frame", frame)
    conn.execute("create table ml_dataset as select * from frame")
    return conn


def splits(conn: duckdb.DuckDBPyConnection, seed: int, validation=0.15, test=0.15) -> pd.DataFrame:
    sql = ml_splits_sql("ml_dataset", "duckdb", seed, validation, test)
    return conn.execute(sql).df().sort_values("id").reset_index(drop=True)


def test_same_seed_gives_the_same_split_and_another_seed_another(dataset):
    first, again, other = splits(dataset, 42), splits(dataset, 42), splits(dataset, 43)

    pd.testing.assert_frame_equal(first, again)
    assert (first["split"] != other["split"]).sum() > 50


@pytest.mark.parametrize("validation, test", [(0.15, 0.15), (0.1, 0.2), (0.25, 0.05)])
def test_split_is_stratified_within_one_row_per_tag(dataset, validation, test):
    result = splits(dataset, 42, validation, test)

    counts = Counter(zip(result["tag"], result["split"], strict=True))
    for tag, size in TAG_SIZES.items():
        expected = {
            "train": size * (1 - validation - test),
            "validation": size * validation,
            "test": size * test,
        }
        for split, rows in expected.items():
            assert abs(counts[(tag, split)] - rows) <= 1, (tag, split)
        if all(round(size * f) >= 1 for f in (validation, test)):
            assert all(counts[(tag, split)] >= 1 for split in expected), tag


def test_every_project_is_in_exactly_one_split(dataset):
    result = splits(dataset, 42)

    assert result["id"].is_unique
    assert sorted(result["id"]) == sorted(dataset.execute("select id from ml_dataset").df()["id"])
    assert set(result["split"]) == {"train", "validation", "test"}


def query_on(conn: duckdb.DuckDBPyConnection):
    return lambda sql: conn.execute(sql).fetchall()


def built_splits(conn: duckdb.DuckDBPyConnection, validation=0.15, test=0.15) -> None:
    sql = ml_splits_sql("ml_dataset", "duckdb", 42, validation, test)
    conn.execute(f"create or replace table ml_splits as {sql}")


def test_dataset_row_count_check_wants_rows_and_every_exclusion_accounted_for(dataset):
    query = query_on(dataset)
    size = sum(TAG_SIZES.values())

    assert checks.row_count_matches_labeled_projects(query, "ml_dataset", size + 3, 2, 1).passed
    lost = checks.row_count_matches_labeled_projects(query, "ml_dataset", size + 4, 2, 1)
    dataset.execute("delete from ml_dataset")
    empty = checks.row_count_matches_labeled_projects(query, "ml_dataset", 3, 2, 1)

    assert not lost.passed and lost.metadata["expected_rows"] == size + 1
    assert not empty.passed and empty.summary.startswith("0 rows; expected 0 > 0 = 3")


@pytest.mark.parametrize("validation, test", [(0.15, 0.15), (0.1, 0.2), (0.25, 0.05), (0.5, 0.49)])
def test_split_checks_pass_on_the_split_as_built(dataset, validation, test):
    built_splits(dataset, validation, test)
    query = query_on(dataset)
    shares = checks.tag_shares(query, "ml_splits", validation, test)

    outcomes = [
        checks.every_id_in_one_split(query, "ml_splits", "ml_dataset"),
        checks.every_tag_in_every_split(shares),
        checks.fractions_within_one_row(shares, validation, test),
    ]

    assert [o.name for o in outcomes if not o.passed] == []
    assert {s.tag for s in shares if not s.has_enough_rows} >= {"reinforcement-learning"}


def test_one_split_check_names_repeated_ids_and_ids_without_a_split(dataset):
    built_splits(dataset)
    [(first,), (second,)] = dataset.execute(
        "select id from ml_splits order by id limit 2"
    ).fetchall()
    dataset.execute(f"insert into ml_splits select * from ml_splits where id = {first}")
    dataset.execute(f"update ml_splits set split = null where id = {second}")

    outcome = checks.every_id_in_one_split(query_on(dataset), "ml_splits", "ml_dataset")

    assert not outcome.passed
    assert outcome.metadata["ids_in_several_rows"] == [first]
    assert outcome.metadata["ids_without_a_split"] == [second]
    assert outcome.metadata["rows_without_a_split"] == 1


def test_tag_and_fraction_checks_catch_an_emptied_split(dataset):
    built_splits(dataset)
    dataset.execute("update ml_splits set split = 'train' where tag = 'mlops' and split = 'test'")
    shares = checks.tag_shares(query_on(dataset), "ml_splits", 0.15, 0.15)

    every_split = checks.every_tag_in_every_split(shares)
    fractions = checks.fractions_within_one_row(shares, 0.15, 0.15)

    assert not every_split.passed
    assert every_split.metadata["empty_tag_splits"] == ["mlops (n=41): no test rows"]
    assert not fractions.passed
    assert fractions.metadata["tags_off"] == ["mlops (n=41): train 35, validation 6, test 0"]


def distribution_table(counts: list[tuple[str, str, int]]) -> pd.DataFrame:
    """The same table in pandas, from (split, tag, rows) triples: a row per tag, a column
    per split, and the total, largest first."""
    frame = pd.DataFrame(counts, columns=["split", "tag", "row_count"])
    table = frame.pivot_table("row_count", "tag", "split", aggfunc="sum", fill_value=0)
    table = table.reindex(columns=list(plot.SPLITS), fill_value=0).astype("int64")
    table["total"] = table.sum(axis=1)
    return table.sort_values("total", ascending=False).reset_index()


def test_tag_distribution_table_matches_the_split_counts_and_its_check(dataset):
    built_splits(dataset)
    dataset.execute(f"create table distribution as {tag_distribution_sql('ml_splits')}")
    counts = dataset.execute(split_counts_sql("ml_splits")).fetchall()

    built = dataset.execute("select * from distribution").df()
    outcome = checks.sums_to_split_counts(query_on(dataset), "distribution", "ml_splits")

    pd.testing.assert_frame_equal(
        built, distribution_table(counts), check_dtype=False, check_names=False
    )
    assert outcome.passed, outcome.summary
    dataset.execute("update ml_splits set split = 'holdout' where tag = 'mlops'")
    assert not checks.sums_to_split_counts(query_on(dataset), "distribution", "ml_splits").passed


def test_failure_message_names_the_checks_numbers_and_tables():
    """The one failure report (`publish.failure_description`), as an ML table shows it."""
    from mlstack_assets.publish import failure_description
    from mlstack_assets.quality.outcomes import Audit, CheckOutcome

    key = AssetKey("ml_x")
    outcomes = [
        CheckOutcome(key, "a_check", True, "fine"),
        CheckOutcome(key, "b_check", False, "3 rows; expected 4"),
    ]

    message = failure_description("ml_x", Audit(outcomes), ["ds.ml_x"], ["ds_audit.ml_x"])

    assert message == (
        "ml_x: 1 of 2 blocking checks failed, so ds.ml_x was not replaced (it keeps its"
        " previous content); the audited rows are in ds_audit.ml_x.\n- b_check: 3 rows; expected 4"
    )
    assert Audit(outcomes[:1]).passed


def test_dataset_normalizes_text_and_leaves_out_unknown_tags_and_empty_text():
    conn = duckdb.connect()
    conn.execute("""create table labeled as select * from (values
        (1, 'A  title', E'line one\\n\\n line two ', 'mlops'),
        (2, 'Other', 'text', 'quantum-ml'),
        (3, ' ', E'\\n', 'mlops'),
        (4, 'No tag', 'text', null)
    ) as t(id, title, description, tag)""")
    conn.execute("alter table labeled add column created_on timestamp")

    rows = conn.execute(ml_dataset_sql("labeled", "duckdb", known_tags())).fetchall()

    assert [(r[0], r[2], r[3]) for r in rows] == [(1, "A title line one line two", "mlops")]


def test_tag_distribution_plot_is_a_png_with_one_bar_per_tag_and_split(tmp_path: Path):
    counts = [(s, t, n) for t, n in TAG_SIZES.items() for s in plot.SPLITS]
    table = distribution_table(counts)

    figure = plot.render(table, tmp_path / "plot.png")

    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [axes] = figure.axes
    assert len(axes.containers) == len(plot.SPLITS)
    assert all(len(bars) == len(TAG_SIZES) for bars in axes.containers)
    assert [tick.get_text() for tick in axes.get_xticklabels()] == list(table["tag"])
    assert list(table["total"]) == sorted((n * 3 for n in TAG_SIZES.values()), reverse=True)


def test_ml_assets_have_counts_in_metadata_and_load_through_the_io_manager(stack: Stack):
    tags = {**PROJECT_TAGS, 31: "quantum-ml"}  # passes the audit with a warning, left out here
    rows = [*PROJECTS, (40, "2021-01-01 00:00:00", " ", "\n")]  # no text once normalized
    stack.set_source("projects", write_projects(stack.root / "p.csv", rows))
    stack.set_source("tags", write_tags(stack.root / "t.csv", {**tags, 40: "mlops"}))

    result = stack.materialize()

    assert result.success, failure_messages(result)
    dataset_meta = result.asset_materializations_for_node("ml_dataset")[0].metadata
    assert dataset_meta["excluded_unknown_or_missing_tag"].value == 1
    assert dataset_meta["excluded_empty_text"].value == 1
    assert dataset_meta["dagster/row_count"].value == len(PROJECTS) - 1
    split_meta = result.asset_materializations_for_node("ml_splits")[0].metadata
    in_metadata = {
        (r.data["split"], r.data["tag"]): r.data["rows"]
        for r in split_meta["rows_per_split_and_tag"].value.records
    }
    in_table = {
        (s, t): n
        for s, t, n in stack.query(
            "select split, tag, count(*) from mlops_course.ml_splits group by all"
        )
    }
    assert in_metadata == in_table
    plot_meta = result.asset_materializations_for_node("tag_distribution")[0].metadata
    assert Path(plot_meta["plot_path"].value).read_bytes()[:4] == b"\x89PNG"
    assert plot_meta["plot"].value.startswith(
        "![Projects per tag and split](data:image/png;base64,"
    )
    loaded = stack.definitions().load_asset_value(
        "ml_splits", python_type=pd.DataFrame, instance=stack.instance
    )
    assert sorted(loaded["id"]) == sorted(p[0] for p in PROJECTS if p[0] != 31)
    distribution = stack.definitions().load_asset_value(
        "tag_distribution", python_type=pd.DataFrame, instance=stack.instance
    )
    assert list(distribution.columns) == ["tag", *plot.SPLITS, "total"]
    assert distribution["total"].sum() == len(PROJECTS) - 1
    assert {
        (split, row.tag): getattr(row, split)
        for row in distribution.itertuples()
        for split in plot.SPLITS
        if getattr(row, split)
    } == in_table


def test_ml_checks_are_blocking_asset_checks_that_pass_on_good_data(published_stack: Stack):
    tables = {t: published_stack.table_bytes(f"mlops_course.{t}") for t in ML_TABLES}

    result = published_stack.materialize("ml_dataset*")

    assert result.success, failure_messages(result)
    graph = published_stack.definitions().resolve_asset_graph()
    for asset, names in checks.CHECKS_BY_ASSET.items():
        specs = {key.name: graph.get(key) for key in graph.get(AssetKey(asset)).check_keys}
        assert set(specs) == set(names), asset
        assert all(spec.blocking for spec in specs.values()), asset
    evaluations = {
        (e.asset_key.path[-1], e.check_name): e for e in result.get_asset_check_evaluations()
    }
    expected = {(asset, name) for asset, names in checks.CHECKS_BY_ASSET.items() for name in names}
    assert set(evaluations) == expected
    assert all(e.passed for e in evaluations.values())
    # the same input gives the same tables, now published from the audit dataset
    assert {t: published_stack.table_bytes(f"mlops_course.{t}") for t in ML_TABLES} == tables
    assert published_stack.table_bytes("mlops_course_audit.ml_splits") == tables["ml_splits"]


def test_failing_labeled_projects_check_blocks_the_ml_assets(published_stack: Stack):
    # Someone writes a duplicate project straight into the published tables (bypassing the
    # audit): dbt's tests still pass, the GX suite on labeled_projects does not.
    with duckdb.connect(str(published_stack.warehouse_path)) as conn:
        conn.execute(
            "insert into mlops_course.projects by name "
            "select 99 as id, created_on, title, description"
            " from mlops_course.projects where id = 9"
        )
        conn.execute("insert into mlops_course.tags by name select 99 as id, 'mlops' as tag")

    result = published_stack.materialize("labeled_projects*")

    assert not result.success
    evaluations = {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == AssetKey("labeled_projects")
    }
    assert evaluations["unique_labeled_projects_id"].passed
    assert not evaluations["title_description_are_unique"].passed
    # the GX suite audits labeled_projects before it is published: nothing replaced it
    assert "labeled_projects" not in materialized_keys(result)
    assert "title_description_are_unique" in failure_messages(result)
    assert not {"ml_dataset", "ml_splits", "tag_distribution"} & materialized_keys(result)


ML_TABLES = ("ml_dataset", "ml_splits", "tag_distribution")


def ml_tables(stack: Stack) -> dict[str, list[tuple]]:
    return {table: stack.table_bytes(f"mlops_course.{table}") for table in ML_TABLES}


def failed_checks(result, asset: str) -> dict[str, object]:
    return {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == AssetKey(asset) and not e.passed
    }


def test_failing_ml_dataset_check_keeps_the_published_ml_tables(published_stack: Stack):
    before = ml_tables(published_stack)
    # Every tag of labeled_projects becomes one the model does not know: nothing is left.
    with duckdb.connect(str(published_stack.warehouse_path)) as conn:
        conn.execute("update mlops_course.labeled_projects set tag = 'quantum-ml'")

    result = published_stack.materialize("ml_dataset*")

    assert not result.success
    assert set(failed_checks(result, "ml_dataset")) == {checks.ROW_COUNT}
    message = failure_messages(result)
    assert "ml_dataset: 1 of 1 blocking checks failed" in message
    assert (
        f"{checks.ROW_COUNT}: 0 rows; expected 0 > 0 = {len(PROJECTS)} labeled_projects" in message
    )
    assert "mlops_course.ml_dataset was not replaced" in message
    assert "the audited rows are in mlops_course_audit.ml_dataset" in message
    assert not set(ML_TABLES) & materialized_keys(result)
    assert ml_tables(published_stack) == before
    assert published_stack.query("select count(*) from mlops_course_audit.ml_dataset") == [(0,)]


def test_failing_ml_splits_check_keeps_the_published_ml_tables(published_stack: Stack):
    # A project written twice straight into the published ml_dataset (bypassing its audit).
    with duckdb.connect(str(published_stack.warehouse_path)) as conn:
        conn.execute(
            "insert into mlops_course.ml_dataset select * from mlops_course.ml_dataset where id = 9"
        )
    before = ml_tables(published_stack)

    result = published_stack.materialize("ml_splits*")

    assert not result.success
    assert set(failed_checks(result, "ml_splits")) == {checks.ONE_SPLIT}
    message = failure_messages(result)
    assert "ml_splits: 1 of 3 blocking checks failed" in message
    assert "8 distinct ids" in message and "ids in several rows [9]" in message
    assert "mlops_course_audit.ml_splits" in message
    assert not {"ml_splits", "tag_distribution"} & materialized_keys(result)
    assert ml_tables(published_stack) == before


def test_failing_tag_distribution_check_keeps_the_published_table_and_plot(
    published_stack: Stack,
):
    from mlstack_assets.settings import load_settings

    plot_path = load_settings().home / "plots" / "tag_distribution.png"
    plot_before = plot_path.read_bytes() if plot_path.exists() else None
    # A row whose split is none of the three: the distribution would silently lose it.
    with duckdb.connect(str(published_stack.warehouse_path)) as conn:
        conn.execute("update mlops_course.ml_splits set split = 'holdout' where id = 6")
    before = ml_tables(published_stack)

    result = published_stack.materialize("tag_distribution")

    assert not result.success
    assert set(failed_checks(result, "tag_distribution")) == {checks.SUMS}
    message = failure_messages(result)
    # every fixture project is in ml_splits, and one of them is now in no known split
    assert f"total {len(PROJECTS) - 1}; ml_splits rows" in message
    assert f"total {len(PROJECTS)}; differing: total" in message
    assert ml_tables(published_stack) == before
    assert (plot_path.read_bytes() if plot_path.exists() else None) == plot_before


def test_a_failed_publish_leaves_the_published_table_as_it_was(
    published_stack: Stack, monkeypatch: pytest.MonkeyPatch
):
    # Dagster's DbIOManager deletes the rows before writing (dagster #14091): the publish
    # must be one transaction that a failure rolls back.
    from contextlib import contextmanager

    from mlstack_assets.warehouse.duckdb import DuckDBWarehouse

    before = ml_tables(published_stack)
    connection = DuckDBWarehouse.connection

    class FailingReplace:
        def __init__(self, conn):
            self._conn = conn

        def execute(self, sql, *args):
            if sql.startswith('create or replace table "mlops_course"."ml_splits"'):
                raise RuntimeError("disk full")
            return self._conn.execute(sql, *args)

        def __getattr__(self, name):
            return getattr(self._conn, name)

    @contextmanager
    def failing_connection(self):
        with connection(self) as conn:
            yield FailingReplace(conn)

    monkeypatch.setattr(DuckDBWarehouse, "connection", failing_connection)

    result = published_stack.materialize("ml_splits")

    assert not result.success
    assert "RuntimeError: disk full" in failure_messages(result)
    assert ml_tables(published_stack) == before
