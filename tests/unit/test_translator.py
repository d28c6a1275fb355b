"""The dbt translator: models join the transform group, owned by the data team, named by the
table readers query (the published dataset, not the audit schema dbt builds in); dbt's
sources stay the raw assets that ingestion defines."""

import json

import pytest
from dagster import AssetKey

from mlstack_assets.transform.assets import OWNER, TRANSFORM_GROUP, MlstackDbtTranslator
from tests.conftest import REPO_ROOT

MANIFEST = REPO_ROOT / "dbt_project" / "target" / "manifest.json"  # `make setup` parses it


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def models(manifest: dict) -> dict[str, dict]:
    return {k: n for k, n in manifest["nodes"].items() if n["resource_type"] == "model"}


def test_a_model_is_named_by_its_published_table_not_its_audit_relation(manifest):
    translator = MlstackDbtTranslator(dataset="published_here")
    assert models(manifest), "the manifest has no models"
    for unique_id, node in models(manifest).items():
        spec = translator.get_asset_spec(manifest, unique_id, None)
        assert spec.key == AssetKey(node["alias"])
        published = f"{node['database']}.published_here.{node['alias']}"
        assert spec.metadata["dagster/table_name"] == published
        assert node["schema"] not in spec.metadata["dagster/table_name"]
        assert spec.group_name == TRANSFORM_GROUP
        assert spec.owners == [OWNER]
        assert spec.automation_condition is not None  # a new raw table brings it up to date


def test_only_a_model_with_a_gx_suite_has_the_great_expectations_kind(manifest):
    translator = MlstackDbtTranslator(dataset="d")
    kinds = {
        node["alias"]: "great_expectations" in translator.get_asset_spec(manifest, uid, None).kinds
        for uid, node in models(manifest).items()
    }
    assert kinds == {
        "labeled_projects": True,
        "stg_mlops_course__projects": False,
        "stg_mlops_course__tags": False,
    }


def test_sources_are_the_raw_assets_and_keep_dagster_dbts_spec(manifest):
    translator = MlstackDbtTranslator(dataset="d")
    for unique_id in manifest["sources"]:
        spec = translator.get_asset_spec(manifest, unique_id, None)
        assert spec.key in (AssetKey("projects"), AssetKey("tags"))
        assert spec.group_name != TRANSFORM_GROUP
        assert "dagster/table_name" not in spec.metadata or "d." not in str(
            spec.metadata["dagster/table_name"]
        )
