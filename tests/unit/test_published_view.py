"""A dbt view is published with SQL that reads the published relations: a view that refs
another model reads that model in the published dataset, not in the audit schema dbt built
it in (where it would keep reading unpublished rows after the publish)."""

import pytest
from dagster import AssetKey, Output

from mlstack_assets.transform.build import BuiltModel

AUDIT, PUBLISHED = "mlops_course_audit", "mlops_course"
RELATIONS = {
    "duckdb": '"warehouse"."{schema}"."{table}"',  # as dbt-duckdb quotes relation_name
    "bigquery": "`some-project`.`{schema}`.`{table}`",  # as dbt-bigquery does
}


def view_over(relation: str) -> tuple[BuiltModel, dict]:
    """A view `tag_counts` that refs the model `labeled_projects` and reads a source."""
    parent = "model.mlstack.labeled_projects"
    audited = relation.format(schema=AUDIT, table="labeled_projects")
    manifest = {"nodes": {parent: {"relation_name": audited}}}
    node = {
        "alias": "tag_counts",
        "config": {"materialized": "view"},
        "depends_on": {"nodes": [parent, "source.mlstack.mlops_course.tags"]},
    }
    sql = (
        f"select tag, count(*) as n from {audited}"
        f" join {relation.format(schema=PUBLISHED, table='tags')} using (id) group by tag"
    )
    output = Output(None, output_name="tag_counts")
    return BuiltModel(AssetKey("tag_counts"), output, node, sql), manifest


@pytest.mark.parametrize("warehouse", sorted(RELATIONS))
def test_a_view_that_refs_a_model_reads_it_where_it_is_published(warehouse):
    relation = RELATIONS[warehouse]
    model, manifest = view_over(relation)
    assert model.is_view
    sql = model.published_sql(manifest, AUDIT, PUBLISHED)
    assert relation.format(schema=PUBLISHED, table="labeled_projects") in sql
    assert AUDIT not in sql
    # the source it reads was already the published one, and stays so
    assert relation.format(schema=PUBLISHED, table="tags") in sql
