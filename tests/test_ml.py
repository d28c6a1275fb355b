"""ML-ready assets: dataset, stratified splits, tag distribution; and what blocks them."""

import random
from collections import Counter
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from dagster import AssetKey

from mlstack_assets.ml import plot
from mlstack_assets.ml.assets import known_tags
from mlstack_assets.ml.sql import ml_dataset_sql, ml_splits_sql
from tests.conftest import Stack
from tests.fixture_data import PROJECT_TAGS, PROJECTS, write_projects, write_tags
from tests.test_pipeline import failure_messages, materialized_keys

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
    table = plot.distribution_table(counts)

    figure = plot.render(table, tmp_path / "plot.png")

    assert (tmp_path / "plot.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [axes] = figure.axes
    assert len(axes.containers) == len(plot.SPLITS)
    assert all(len(bars) == len(TAG_SIZES) for bars in axes.containers)
    assert [tick.get_text() for tick in axes.get_xticklabels()] == list(table["tag"])
    assert list(table["total"]) == sorted((n * 3 for n in TAG_SIZES.values()), reverse=True)


def test_ml_assets_materialize_through_the_io_manager_with_counts_in_metadata(stack: Stack):
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
