"""Which raw sources a run reads, and which raw sources a failing dbt check traces back to."""

from types import SimpleNamespace

from dagster import AssetKey, TableColumnDep, TableColumnLineage

from mlstack_assets.ingestion.assets import raw_sources_in_run
from mlstack_assets.ingestion.sources import SourceSpec
from mlstack_assets.transform.audit import raw_sources

SPECS = [SourceSpec(name="projects", url="p.csv"), SourceSpec(name="tags", url="t.csv")]


def run(asset_selection=None, step_keys=None) -> SimpleNamespace:
    """What `raw_sources_in_run` reads of a step's context: its run's selection and steps."""
    return SimpleNamespace(
        run=SimpleNamespace(asset_selection=asset_selection, step_keys_to_execute=step_keys)
    )


def names(specs) -> list[str]:
    return [spec.name for spec in specs]


def test_a_run_of_everything_reads_every_source():
    assert names(raw_sources_in_run(run(), SPECS)) == ["projects", "tags"]


def test_a_run_selecting_one_raw_asset_reads_only_that_source():
    selected = {AssetKey("tags"), AssetKey("labeled_projects")}
    assert names(raw_sources_in_run(run(asset_selection=selected), SPECS)) == ["tags"]


def test_a_retry_of_one_step_reads_only_that_steps_source():
    assert names(raw_sources_in_run(run(step_keys=["projects", "dbt_models"]), SPECS)) == [
        "projects"
    ]
    assert names(raw_sources_in_run(run(step_keys=["dbt_models"]), SPECS)) == []


STG_TAGS, STG_PROJECTS = AssetKey("stg_tags"), AssetKey("stg_projects")
LABELED = AssetKey("labeled_projects")
DEPS = {
    LABELED: {STG_TAGS, STG_PROJECTS},
    STG_TAGS: {AssetKey("tags")},
    STG_PROJECTS: {AssetKey("projects")},
}


def test_a_column_is_traced_through_column_lineage_to_its_raw_source():
    lineage = {
        LABELED: TableColumnLineage(
            deps_by_column={"tag": [TableColumnDep(asset_key=STG_TAGS, column_name="tag")]}
        )
    }
    assert raw_sources(LABELED, "tag", lineage, DEPS) == ["tags"]


def test_without_column_lineage_every_upstream_raw_source_counts_once():
    assert raw_sources(LABELED, "id", {}, DEPS) == ["projects", "tags"]
    assert raw_sources(AssetKey("tags"), None, {}, DEPS) == ["tags"]
