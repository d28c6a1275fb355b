"""The dbt models' checks run alone (the UI's "Execute" on a check): on the published tables.

When a run selects checks of `dbt_models` but none of its models (a check executed from
the asset's Checks tab, or "Execute all"), nothing is built: dbt's tests run with
`dbt test`, their models resolved to the published dataset (the profile's schema var set
to `<dataset>`), and the GX suites validate the published tables. Only the selected
checks are reported. dagster-dbt's own subsetting cannot do this: it looks every
selected check up as a dbt test, and the GX ones are not (`KeyError:
'dagster_dbt/unique_id'`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from dagster import AssetCheckKey, AssetCheckResult, AssetCheckSeverity, AssetCheckSpec

from mlstack_assets.quality.suites import Suite
from mlstack_assets.quality.validation import validate_table
from mlstack_assets.settings import Settings
from mlstack_assets.transform.project import dbt_vars_args

UNIQUE_ID = "dagster_dbt/unique_id"


def _dbt_test_results(
    dbt: Any, tests: Mapping[str, AssetCheckSpec], manifest: Mapping[str, Any], settings: Settings
) -> Iterator[AssetCheckResult]:
    fqns = [".".join(manifest["nodes"][unique_id]["fqn"]) for unique_id in tests]
    # the models resolve to the published dataset: what these checks run on
    published = dbt_vars_args(settings, audit_dataset=settings.dataset)
    invocation = dbt.cli(["test", "--select", *fqns, *published], raise_on_error=False)
    invocation.wait()
    results = {r["unique_id"]: r for r in invocation.get_artifact("run_results.json")["results"]}
    for unique_id, spec in tests.items():
        result = results.get(unique_id, {"status": "error", "message": "dbt did not run it"})
        warn_only = manifest["nodes"][unique_id]["config"].get("severity", "").lower() == "warn"
        failures = result.get("failures")
        yield AssetCheckResult(
            asset_key=spec.asset_key,
            check_name=spec.name,
            passed=result["status"] == "pass",
            severity=AssetCheckSeverity.WARN if warn_only else AssetCheckSeverity.ERROR,
            description=result.get("message") or result["status"],
            metadata={
                "status": result["status"],
                "table": f"{settings.dataset} (published)",
                **({"dagster_dbt/failed_row_count": failures} if failures is not None else {}),
            },
        )


def checks_on_published(
    context: Any,
    dbt: Any,
    warehouse: Any,
    settings: Settings,
    dbt_check_specs: Sequence[AssetCheckSpec],
    suites: Mapping[Any, Suite],
    aliases: Mapping[Any, str],
    manifest: Mapping[str, Any],
) -> Iterator[AssetCheckResult]:
    """The selected checks' results on the published tables; nothing is built."""
    selected: set[AssetCheckKey] = set(context.selected_asset_check_keys)
    tests = {spec.metadata[UNIQUE_ID]: spec for spec in dbt_check_specs if spec.key in selected}
    with warehouse.session(purpose="run the selected checks on the published tables"):
        if tests:
            yield from _dbt_test_results(dbt, tests, manifest, settings)
        for key, suite in suites.items():
            wanted = {e.check_name for e in suite.expectations} & {
                check.name for check in selected if check.asset_key == key
            }
            if not wanted:
                continue
            validation = validate_table(
                warehouse, warehouse.dataset, aliases[key], suite, settings.data_docs_dir, key
            )
            yield from (r for r in validation.audit.results() if r.check_name in wanted)
