"""The private APIs mlstack relies on, fenced in one place.

Each entry says why the public API does not do, and `tests/test_compat.py` fails when
the dependency changes under it, so an upgrade shows exactly what to revisit.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagster import AssetCheckSpec, AssetSpec
from dagster_dbt import DagsterDbtTranslator, DbtProject


def dbt_asset_and_check_specs(
    project: DbtProject, translator: DagsterDbtTranslator
) -> tuple[Sequence[AssetSpec], Sequence[AssetCheckSpec]]:
    """The asset specs and test check specs that `@dbt_assets` would build.

    Why private: `@dbt_assets` takes no extra check specs, and the GX suite on
    labeled_projects must run inside the dbt step, on the audit schema, before publishing
    (write-audit-publish), so it has to be declared on the same multi-asset as dbt's own
    tests. dagster-dbt's public `build_dbt_asset_specs` returns only the asset specs; this
    is the function `@dbt_assets` itself calls (dagster_dbt/asset_decorator.py).
    """
    from dagster_dbt.asset_utils import (
        DBT_DEFAULT_EXCLUDE,
        DBT_DEFAULT_SELECT,
        DBT_DEFAULT_SELECTOR,
        build_dbt_specs,
    )
    from dagster_dbt.dbt_manifest import validate_manifest

    return build_dbt_specs(
        translator=translator,
        manifest=validate_manifest(project.manifest_path),
        select=DBT_DEFAULT_SELECT,
        exclude=DBT_DEFAULT_EXCLUDE,
        selector=DBT_DEFAULT_SELECTOR,
        io_manager_key=None,
        project=project,
    )


def preset_discovered_catalog(source: Any, catalog: Any) -> None:
    """Give a PyAirbyte `Source` its catalog instead of letting it run `discover`.

    Why private: PyAirbyte 0.35 builds the configured catalog from `discovered_catalog`,
    which runs the connector's `discover` the first time it is read and has no public
    setter. For the File source, discover starts another connector process and parses the
    CSV to guess types, when mlstack already knows the stream: its columns are the file's
    header (read by the pre-flight) and every one is text (`READER_OPTIONS`). The catalog
    is cached in `Source._discovered_catalog` (airbyte/sources/base.py).
    """
    source._discovered_catalog = catalog


def initialize_dbt_core_adapter(resource: Any, args: Sequence[str]) -> Any:
    """dagster-dbt's in-process dbt adapter for `resource`'s project, as `DbtCliResource.cli`
    makes it before it starts dbt.

    Why private: dagster-dbt has no public way to make the adapter apart from `cli()`, which
    makes it first and only then starts dbt; mlstack makes it while dbt runs
    (`InstalledDbtCliResource`) and hands it to the invocation (its public `adapter` field)
    before fetching metadata. Same working directory as `cli()` uses (dagster-dbt resolves
    a relative DuckDB path against it); the project and profiles paths are absolute, so a
    thread of the step changing directory briefly is harmless to the step's own files.
    The dbt modules the adapter's first query needs (agate, babel, pytz: seconds of
    imports) are imported here too, off the step's thread.
    """
    from dagster._utils import pushd
    from dagster_dbt import DbtCliResource

    with pushd(str(resource.project_dir)):
        adapter = DbtCliResource._initialize_dbt_core_adapter(resource, args)
    import dbt_common.clients.agate_helper  # noqa: F401

    return adapter
