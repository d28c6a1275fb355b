"""DuckDB's working memory is capped where mlstack runs it (`MLSTACK_DUCKDB_MEMORY_LIMIT`):
in a step's own connections, the IO manager's, GX's, each extract's and dbt's process.
DuckDB's default is 80 % of the machine, which at 1M rows put the run over 1 GB
(docs/benchmark.md)."""

import json
import subprocess
import sys
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from mlstack_assets.ingestion.embedded import extract_connection
from mlstack_assets.settings import DBT_PROJECT_DIR, SettingsError
from mlstack_assets.transform.project import dbt_vars_args
from mlstack_assets.warehouse.duckdb import build_duckdb_resources
from tests.support.settings import settings_from

LIMIT = "123MB"
CURRENT = "select current_setting('memory_limit')"


@pytest.fixture
def settings(tmp_path: Path):
    return settings_from(
        {
            "MLSTACK_DUCKDB_PATH": str(tmp_path / "w.duckdb"),
            "MLSTACK_DUCKDB_MEMORY_LIMIT": LIMIT,
            "MLSTACK_HOME": str(tmp_path / "home"),
        }
    )


@pytest.fixture
def expected() -> str:
    """How DuckDB reports LIMIT once set (it prints sizes in binary units)."""
    with duckdb.connect() as conn:
        conn.execute(f"set memory_limit = '{LIMIT}'")
        shown = conn.execute(CURRENT).fetchone()[0]
    with duckdb.connect() as conn:
        assert conn.execute(CURRENT).fetchone()[0] != shown, "the default is not LIMIT"
    return shown


def test_a_step_connection_and_the_io_manager_run_under_the_limit(settings, expected):
    from dagster import Definitions, asset

    resources = build_duckdb_resources(settings)
    warehouse = resources["warehouse"]
    assert warehouse.query(CURRENT) == [(expected,)]
    # a published view that shows the setting of whoever reads it: here, the IO manager
    # loading an asset's table as a DataFrame (`Definitions.load_asset_value`)
    warehouse.ensure_dataset(settings.dataset)
    warehouse.query(f"create view {settings.dataset}.memory_setting as {CURRENT} as memory_limit")

    @asset
    def memory_setting() -> pd.DataFrame: ...

    defs = Definitions(assets=[memory_setting], resources=resources)
    loaded = defs.load_asset_value("memory_setting", python_type=pd.DataFrame)

    assert list(loaded["memory_limit"]) == [expected]


def test_gx_and_the_extract_run_under_the_limit(settings, expected, tmp_path):
    import great_expectations as gx

    warehouse = build_duckdb_resources(settings)["warehouse"]
    warehouse.ensure_dataset("s")
    warehouse.query("create table s.t as select 1 as id")

    from mlstack_assets.quality.validation import gx_table_asset

    datasource, _ = gx_table_asset(gx.get_context(mode="ephemeral"), warehouse, "s", "t")
    engine = datasource.get_execution_engine()
    try:
        with engine.get_connection() as conn:
            assert conn.exec_driver_sql(CURRENT).scalar() == expected
    finally:
        engine.close()
        datasource.get_engine().dispose()

    from mlstack_assets.ingestion.assets import build_airbyte_loader

    loader = build_airbyte_loader(settings)  # what the raw step's extracts are given
    with extract_connection(loader.memory_limit, tmp_path) as conn:
        assert conn.execute(CURRENT).fetchone()[0] == expected


def test_dbt_runs_under_the_limit(settings, expected):
    dbt = str(Path(sys.executable).parent / "dbt")
    shown = subprocess.run(
        [
            dbt,
            "show",
            "--inline",
            f"{CURRENT} as memory_limit",
            "--output",
            "json",
            "--log-format",
            "json",
            *dbt_vars_args(settings),
        ],
        cwd=DBT_PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    previews = [
        json.loads(line)["data"]["preview"]
        for line in shown.stdout.splitlines()
        if '"preview"' in line
    ]
    assert previews and json.loads(previews[0]) == [{"memory_limit": expected}]


@pytest.mark.parametrize("value", ["lots", "512", "-1GB", "1 GB; drop table x"])
def test_a_limit_duckdb_cannot_take_is_refused_with_the_variable_named(value):
    with pytest.raises(SettingsError, match="MLSTACK_DUCKDB_MEMORY_LIMIT"):
        settings_from({"MLSTACK_DUCKDB_MEMORY_LIMIT": value})


def test_the_records_of_a_large_file_load_under_the_default_limit(tmp_path: Path):
    """DuckDB's Parquet writer holds a row group (122,880 rows by default) beside the JSON
    reader's buffers: the records of a 600,000-row file of 300-byte rows ran out of the
    default 128MB at once, failing every extract of that size (the 1M-row benchmark)."""
    from mlstack_assets.ingestion import protocol

    default = settings_from({}).duckdb_memory_limit
    records = tmp_path / "records.jsonl"
    rows = 600_000
    with records.open("w") as out:
        for start in range(0, rows, 10_000):
            out.write(
                "".join(
                    json.dumps(
                        {
                            "type": "RECORD",
                            "record": {
                                "stream": "projects",
                                "emitted_at": 1_700_000_000_000,
                                "data": {"id": str(n), "text": f"project {n}, " + "x" * 250},
                            },
                        }
                    )
                    + "\n"
                    for n in range(start, start + 10_000)
                )
            )

    with extract_connection(default, tmp_path) as conn:
        synced = protocol.records_to_parquet(
            conn, records, [("id", "id"), ("text", "text")], tmp_path / "data.parquet"
        )

    assert synced == rows
    assert duckdb.sql(f"select count(*) from '{tmp_path / 'data.parquet'}'").fetchone() == (rows,)
