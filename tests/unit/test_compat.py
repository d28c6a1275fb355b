"""The private APIs fenced in `mlstack_assets/compat.py` still do what mlstack relies on."""

from dagster_dbt import DagsterDbtTranslator, DagsterDbtTranslatorSettings, dbt_assets

from mlstack_assets.compat import dbt_asset_and_check_specs
from mlstack_assets.settings import load_settings
from mlstack_assets.transform.project import dbt_project, dbt_vars_args


def test_dbt_specs_are_the_ones_dbt_assets_builds():
    settings = load_settings({})
    project = dbt_project(settings)
    translator = DagsterDbtTranslator(
        settings=DagsterDbtTranslatorSettings(enable_asset_checks=True)
    )

    specs, check_specs = dbt_asset_and_check_specs(project, translator)

    @dbt_assets(manifest=project.manifest_path, project=project, dagster_dbt_translator=translator)
    def reference(): ...

    assert {spec.key for spec in specs} == set(reference.keys)
    assert {spec.key for spec in check_specs} == set(reference.check_keys)
    assert {c.name for c in check_specs} >= {"unique_labeled_projects_id"}


def test_the_dbt_adapter_can_be_made_apart_from_cli():
    """dagster-dbt still makes its adapter in `_initialize_dbt_core_adapter(args)` from `cli()`
    (mlstack makes it while dbt runs instead), and the adapter works for this project."""
    import inspect

    from dagster_dbt import DbtCliResource

    from mlstack_assets.compat import initialize_dbt_core_adapter

    assert list(inspect.signature(DbtCliResource._initialize_dbt_core_adapter).parameters) == [
        "self",
        "args",
    ]
    assert "self._initialize_dbt_core_adapter(args)" in inspect.getsource(DbtCliResource.cli)

    settings = load_settings({})
    project = dbt_project(settings)
    args = ["build", *dbt_vars_args(settings)]  # as the dbt step passes them
    adapter = initialize_dbt_core_adapter(DbtCliResource(project_dir=project), args)

    assert type(adapter).__name__ == "DuckDBAdapter"
    assert adapter.config.project_name == "mlstack"


def test_every_airbyte_api_call_goes_through_single_request():
    """mlstack's retrying Airbyte client overrides `_single_request`: it must still be the
    one place dagster-airbyte's client sends a request, with the same parameters."""
    import inspect

    from dagster_airbyte.resources import AirbyteClient

    assert list(inspect.signature(AirbyteClient._single_request).parameters) == [
        "self",
        "method",
        "url",
        "data",
        "params",
        "include_additional_request_headers",
    ]
    source = inspect.getsource(AirbyteClient)
    assert source.count("session.request(") == 1
    assert "session.request(" in inspect.getsource(AirbyteClient._single_request)
    assert "requests.get(" not in source and "requests.post(" not in source


def test_dagster_db_io_manager_keeps_what_the_warehouse_io_managers_override():
    import inspect

    from mlstack_assets.compat.db_io_manager import DbIOManager, DbTypeHandler, TableSlice

    assert list(inspect.signature(DbIOManager.handle_output).parameters) == [
        "self",
        "context",
        "obj",
    ]
    assert {"handle_output", "load_input", "supported_types"} <= set(dir(DbTypeHandler))
    assert {"table", "schema", "database"} <= set(TableSlice.__annotations__)


def test_dagster_dbt_still_asks_dbt_for_its_version_in_a_cached_property():
    import functools
    import inspect

    from dagster_dbt import DbtCliResource

    from mlstack_assets.compat import InstalledDbtCliResource

    assert isinstance(
        inspect.getattr_static(DbtCliResource, "_cli_version"), functools.cached_property
    )
    assert "self._cli_version" in inspect.getsource(DbtCliResource.cli)
    settings = load_settings({})
    project = dbt_project(settings)
    assert str(InstalledDbtCliResource(project_dir=project)._cli_version).startswith("1.")


def test_dagster_dbt_event_iterator_still_wraps_collected_events():
    import inspect

    from dagster_dbt.core.dbt_event_iterator import DbtEventIterator

    parameters = inspect.signature(DbtEventIterator.__init__).parameters
    assert list(parameters)[:3] == ["self", "events", "dbt_cli_invocation"]
    assert {"fetch_row_counts", "fetch_column_metadata"} <= set(dir(DbtEventIterator))


def test_gx_sql_engine_still_keeps_its_connection_in_a_private_attribute():
    from great_expectations.execution_engine.sqlalchemy_execution_engine import (
        SqlAlchemyExecutionEngine,
    )

    engine = SqlAlchemyExecutionEngine(connection_string="duckdb:///:memory:")
    assert hasattr(engine, "_connection")


def test_dbt_duckdb_still_keeps_one_process_wide_environment():
    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    from mlstack_assets.compat import close_dbt_duckdb_connections

    assert callable(DuckDBConnectionManager.env)
    assert callable(DuckDBConnectionManager.close_all_connections)
    close_dbt_duckdb_connections()  # nothing open: a no-op, not an error


def test_a_sqlite_instance_is_told_from_one_that_is_not():
    """`mlstack run` sweeps orphaned runs only on an instance whose runs are kept here."""
    from dagster import DagsterInstance, instance_for_test

    from mlstack_assets.compat import runs_stored_in_sqlite

    with instance_for_test() as instance:  # SQLite files in a temporary DAGSTER_HOME
        assert runs_stored_in_sqlite(instance)
    with DagsterInstance.ephemeral() as instance:  # in memory
        assert not runs_stored_in_sqlite(instance)


def test_gx_duckdb_datasource_returns_metrics_from_a_duckdb_file(tmp_path):
    """The reason for `compat/gx_duckdb.py`: GX's generic SQL engine read metric rows after
    closing its connection, and DuckDB had dropped them. If GX ever keeps its connection
    open on its own, or registers a DuckDB type of its own, this test says so."""
    import duckdb
    import great_expectations as gx
    import great_expectations.expectations as gxe

    from mlstack_assets.compat import gx_duckdb  # noqa: F401  registers add_mlstack_duckdb

    database = tmp_path / "w.duckdb"
    with duckdb.connect(str(database)) as conn:
        conn.execute("create schema s; create table s.t as select range as id from range(7)")
    context = gx.get_context(mode="ephemeral")
    assert not hasattr(context.data_sources, "add_duckdb"), "GX now has a DuckDB datasource"
    datasource = context.data_sources.add_mlstack_duckdb(
        name="w", connection_string=f"duckdb:///{database}"
    )
    asset = datasource.add_table_asset(name="t", table_name="t", schema_name="s")
    batch = asset.add_batch_definition_whole_table("all").get_batch()
    try:
        result = batch.validate(gxe.ExpectTableRowCountToEqual(value=7))
    finally:  # as `validate_table` closes it
        datasource.get_execution_engine().close()
        datasource.get_engine().dispose()
    assert result.success, result
    assert result.result["observed_value"] == 7
    with duckdb.connect(str(database)) as conn:  # closed: the file is free for a writer
        conn.execute("insert into s.t values (8)")
