"""The bare baseline: mlstack's work as plain code in one process, without Dagster.

Lesson-style PyAirbyte syncs, one after the other, with PyAirbyte's defaults (the
connector's spec check and `discover`, then `read` into a DuckDB cache; the same
connector, config and staging tables as mlstack; PyAirbyte is the `bench` extra, mlstack
itself does not use it), the same GX suites, the same publish,
`dbt build`, the GX suite on labeled_projects and the ML SQL and chart, called one after
the other. What mlstack costs on top of this is orchestration.
Run by `benchmarks/run.py` with the MLSTACK_* variables set; prints stage seconds as JSON.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import pandas as pd
from dagster_duckdb import DuckDBResource

from mlstack_assets.ingestion.connector import CONNECTOR_NAME, ensure_connector
from mlstack_assets.ingestion.sources import SourceSpec, source_specs
from mlstack_assets.ml import plot
from mlstack_assets.ml.assets import default_split
from mlstack_assets.ml.sql import SPLITS, ml_dataset_sql, ml_splits_sql, tag_distribution_sql
from mlstack_assets.quality.suites import known_tags, load_suite
from mlstack_assets.quality.validation import validate_table
from mlstack_assets.settings import DBT_PROJECT_DIR, load_settings
from mlstack_assets.transform.project import dbt_vars_args
from mlstack_assets.warehouse.duckdb import DuckDBWarehouse


def configure_pyairbyte(connector_dir: Path) -> None:
    """PyAirbyte reads these when first imported: offline, quiet, inside `.mlstack/`."""
    os.environ.setdefault("AIRBYTE_OFFLINE_MODE", "1")  # no connector registry, no telemetry
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("NO_LIVE_PROGRESS", "1")
    os.environ.setdefault("AIRBYTE_LOGGING_ROOT", str(connector_dir / "logs"))


def sync(spec: SourceSpec, warehouse: DuckDBWarehouse, connector_dir: Path, workdir: Path) -> None:
    """The lesson's sync in PyAirbyte's own words, then the copy into the staging table."""
    configure_pyairbyte(connector_dir)
    import airbyte as ab

    source = ab.get_source(
        CONNECTOR_NAME,
        config=spec.connector_config(),
        local_executable=ensure_connector(connector_dir),
        streams=[spec.name],
    )
    cache_path = workdir / f"{spec.name}.duckdb"
    cache = ab.DuckDBCache(
        db_path=cache_path, schema_name=warehouse.staging_dataset, cache_dir=workdir / "files"
    )
    source.read(cache=cache, force_full_refresh=True, write_strategy="replace")
    cache.close()
    staged = warehouse.qualified(warehouse.staging_dataset, spec.name)
    with warehouse.connection() as conn:
        conn.execute(f"attach '{cache_path}' as synced (read_only)")
        conn.execute(f'create schema if not exists "{warehouse.staging_dataset}"')
        conn.execute(
            f"create or replace table {staged} as"
            f' select * from synced."{warehouse.staging_dataset}"."{spec.name}"'
        )
        conn.execute("detach synced")


def duckdb_default_memory_limit() -> str:
    """DuckDB's own default (80 % of the machine's memory): plain code sets none."""
    with duckdb.connect() as conn:
        return conn.execute("select current_setting('memory_limit')").fetchone()[0]


def main() -> None:
    settings = load_settings().model_copy(
        update={"duckdb_memory_limit": duckdb_default_memory_limit()}
    )
    warehouse = DuckDBWarehouse(
        dataset=settings.dataset,
        duckdb=DuckDBResource(database=str(settings.duckdb_path)),
        memory_limit=settings.duckdb_memory_limit,
    )
    workdir = Path(tempfile.mkdtemp(prefix="baseline-caches-", dir=settings.duckdb_path.parent))
    seconds = {"extract_load": 0.0, "audit": 0.0, "publish": 0.0}
    for spec in source_specs(settings):
        started = time.perf_counter()
        sync(spec, warehouse, settings.connector_dir, workdir)
        synced = time.perf_counter()
        validation = validate_table(
            warehouse,
            warehouse.staging_dataset,
            spec.name,
            load_suite(spec.name),
            settings.data_docs_dir,
        )
        assert validation.audit.passed, validation.audit.report()
        audited = time.perf_counter()
        warehouse.publish_relations(warehouse.staging_dataset, [spec.name])
        seconds["extract_load"] += synced - started
        seconds["audit"] += audited - synced
        seconds["publish"] += time.perf_counter() - audited

    started = time.perf_counter()
    dbt = Path(sys.executable).parent / "dbt"
    subprocess.run(
        [str(dbt), "build", "--quiet", *dbt_vars_args(settings)], cwd=DBT_PROJECT_DIR, check=True
    )
    seconds["transform"] = time.perf_counter() - started

    # dbt's profile builds in `<dataset>_audit` (mlstack publishes from there); the plain
    # baseline reads its models where dbt left them and publishes nothing
    started = time.perf_counter()
    validation = validate_table(
        warehouse,
        warehouse.audit_dataset,
        "labeled_projects",
        load_suite("labeled_projects"),
        settings.data_docs_dir,
    )
    assert validation.audit.passed, validation.audit.report()
    seconds["checks"] = time.perf_counter() - started

    started = time.perf_counter()
    labeled = warehouse.qualified(warehouse.audit_dataset, "labeled_projects")
    dataset = warehouse.qualified(warehouse.dataset, "ml_dataset")
    splits = warehouse.qualified(warehouse.dataset, "ml_splits")
    warehouse.query(
        f"create or replace table {dataset} as {ml_dataset_sql(labeled, 'duckdb', known_tags())}"
    )
    warehouse.query(
        f"create or replace table {splits} as {ml_splits_sql(dataset, 'duckdb', *default_split())}"
    )
    rows = warehouse.query(tag_distribution_sql(splits))
    table = pd.DataFrame(rows, columns=["tag", *SPLITS, "total"])  # as tag_distribution does
    plot.render(table, settings.home / "plots" / "baseline_tag_distribution.png")
    seconds["ml"] = time.perf_counter() - started
    print(json.dumps(seconds))


if __name__ == "__main__":
    main()
