"""Before dbt runs: is everything the selected models read already there?

`--select labeled_projects` on a new warehouse used to fail inside dbt with "Catalog
Error: Table with name stg_mlops_course__projects does not exist!". dbt reads its
sources from `<dataset>` (the raw tables, published by the raw assets) and the models it
does not build in this run from the audit schema, where it built them last. Each
selected model's parents are looked up there first; a missing one fails the step before
dbt starts, naming the assets to materialize first.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from dagster import AssetKey, Failure

from mlstack_assets.warehouse import Warehouse


def missing_upstream(
    selected: Collection[AssetKey],
    manifest: Mapping[str, Any],
    keys_by_unique_id: Mapping[str, AssetKey],
    warehouse: Warehouse,
) -> dict[AssetKey, str]:
    """Each upstream relation the selected models read that does not exist: its asset,
    and where it was looked for."""
    ids_by_key = {key: unique_id for unique_id, key in keys_by_unique_id.items()}
    missing: dict[AssetKey, str] = {}
    for key in selected:
        node = manifest["nodes"].get(ids_by_key.get(key, ""), {})
        for parent_id in node.get("depends_on", {}).get("nodes", []):
            parent_key = keys_by_unique_id.get(parent_id)
            if parent_key is None or parent_key in selected or parent_key in missing:
                continue
            parent = manifest["sources"].get(parent_id) or manifest["nodes"][parent_id]
            if parent_id.startswith("source."):
                schema, name = warehouse.dataset, parent.get("identifier") or parent["name"]
            else:
                schema, name = warehouse.audit_dataset, parent.get("alias") or parent["name"]
            if warehouse.table_columns(schema, name) is None:
                missing[parent_key] = f"{schema}.{name}"
    return missing


def fail_if_upstream_missing(
    selected: Collection[AssetKey],
    manifest: Mapping[str, Any],
    keys_by_unique_id: Mapping[str, AssetKey],
    warehouse: Warehouse,
) -> None:
    missing = missing_upstream(selected, manifest, keys_by_unique_id, warehouse)
    if not missing:
        return
    wanted = ", ".join(sorted(k.to_user_string() for k in selected))
    needed = ", ".join(f"{key.to_user_string()} ({where})" for key, where in missing.items())
    first = sorted(selected, key=str)[0].to_user_string()
    raise Failure(
        description=(
            f"{wanted}: nothing was built: the upstream {needed} does not exist yet."
            f" Materialize it first, or with its upstream: --select '+{first}'"
            f" (dg launch --assets '+{first}')"
        ),
        metadata={"missing_upstream": sorted(k.to_user_string() for k in missing)},
        allow_retries=False,
    )
