"""The private APIs fenced in `mlstack_assets/compat.py` still do what mlstack relies on."""

from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, dbt_assets

from mlstack_assets.compat import dbt_asset_and_check_specs
from mlstack_assets.settings import load_settings
from mlstack_assets.transform.project import dbt_project


def test_dbt_specs_are_the_ones_dbt_assets_builds():
    settings = load_settings({})
    project = dbt_project(settings.warehouse, settings.dbt_database)
    translator = DagsterDbtTranslator(
        settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)
    )

    specs, check_specs = dbt_asset_and_check_specs(project, translator)

    @dbt_assets(manifest=project.manifest_path, project=project, dagster_dbt_translator=translator)
    def reference(): ...

    assert {spec.key for spec in specs} == set(reference.keys)
    assert {spec.key for spec in check_specs} == set(reference.check_keys)
    assert {c.name for c in check_specs} >= {"unique_labeled_projects_id"}
