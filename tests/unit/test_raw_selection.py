"""Which raw sources a failing dbt check traces back to."""

from dagster import AssetKey, TableColumnDep, TableColumnLineage

from mlstack_assets.transform.audit import raw_sources

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
