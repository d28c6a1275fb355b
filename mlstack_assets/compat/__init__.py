"""The private APIs mlstack relies on, fenced in one place.

Each entry says why the public API does not do, and `tests/unit/test_compat.py` fails when
the dependency changes under it, so an upgrade shows exactly what to revisit. Also here:
`db_io_manager.py` (Dagster's database IO manager machinery) and `gx_duckdb.py` (a GX
datasource for DuckDB that keeps its connection, GX's `_connection`), modules of their
own so that GX is imported only when an audit runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from functools import cached_property
from importlib.metadata import version
from typing import Any

from dagster import AssetCheckSpec, AssetSpec
from dagster_dbt import DagsterDbtTranslator, DbtCliInvocation, DbtCliResource, DbtProject
from packaging.version import Version


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


def retrying_airbyte_client(client: Any, retries: int, log: Any) -> Any:
    """dagster-airbyte's API client for `client`'s workspace, retrying transient errors only.

    Why private: dagster-airbyte's `AirbyteClient._single_request` (every API call goes
    through it) retries any `RequestException` (a 404 or a 401 as much as a reset) with a
    fixed delay and no limit on what it retries; it has no public retry policy. mlstack's
    client overrides that one method: connection errors, time-outs, 429 and 5xx are retried
    with exponential backoff (1, 2, 4 s ... capped at 30 s), at most `retries` times, each
    retry logged through `log`; anything else fails at once. Everything else, secrets
    included, is the workspace's own client (same fields).
    """
    import time

    import requests
    from dagster import Failure
    from dagster_airbyte.resources import AirbyteClient

    from mlstack_assets.ingestion.download import (
        BACKOFF_CAP_SECONDS,
        BACKOFF_SECONDS,
        RETRIED_STATUSES,
    )

    class RetryingAirbyteClient(AirbyteClient):
        def _single_request(
            self,
            method: str,
            url: str,
            data: Any = None,
            params: Any = None,
            include_additional_request_headers: bool = True,
        ) -> Any:
            path = requests.utils.urlparse(url).path
            for attempt in range(retries + 1):
                try:
                    session = self._get_session(
                        include_additional_request_headers=include_additional_request_headers
                    )
                    response = session.request(
                        method=method,
                        url=url,
                        json=data,
                        params=params,
                        timeout=self.request_timeout,
                    )
                except (requests.ConnectionError, requests.Timeout) as error:
                    reason = f"{type(error).__name__} ({_innermost(error)})"
                else:
                    if response.ok:
                        return response.json()
                    reason = f"HTTP {response.status_code} {response.reason}"
                    if response.status_code not in RETRIED_STATUSES:
                        raise Failure(
                            f"Airbyte API {method} {path} answered {reason} (not retried:"
                            " only connection errors, time-outs, 429 and 5xx are)",
                            allow_retries=False,
                        )
                if attempt == retries:
                    break
                delay = min(BACKOFF_SECONDS * 2**attempt, BACKOFF_CAP_SECONDS)
                log(
                    f"Airbyte API {method} {path}: {reason}; retry {attempt + 1} of {retries}"
                    f" in {delay:g} s"
                )
                time.sleep(delay)
            raise Failure(
                f"Max retries ({retries}) exceeded: Airbyte API {method} {path}: {reason}",
                allow_retries=False,
            )

    fields = {name: getattr(client, name) for name in AirbyteClient.model_fields}
    return RetryingAirbyteClient(**fields)


def _innermost(error: BaseException) -> str:
    text = str(error)
    return text.rsplit("Caused by ", 1)[-1].strip("()'\" ")[:200]


def close_dbt_duckdb_connections() -> None:
    """Close the DuckDB file that dagster-dbt's in-process dbt-duckdb adapter opened.

    Why private: dbt-duckdb keeps one process-wide DuckDB environment with its connection
    open (`DuckDBConnectionManager.env()`) and has no public close; left open, the next step
    of the run could not open the file with Dagster's own, differently configured,
    connection ("different configuration than existing connections").
    """
    import contextlib

    from dbt.adapters.duckdb.connections import DuckDBConnectionManager

    with contextlib.suppress(Exception):  # no environment: nothing was opened
        DuckDBConnectionManager.env().close()
    DuckDBConnectionManager.close_all_connections()


def runs_stored_in_sqlite(instance: Any) -> bool:
    """Whether the Dagster `instance` keeps its runs in SQLite, i.e. on this machine.

    Why private: `mlstack run` marks failed the runs a killed process left STARTED, judging
    by the pids that wrote their events; that is only sound when every such process ran on
    this machine, which a SQLite run storage implies and a shared one (Postgres) does not.
    Dagster has no public way to ask which storage an instance has: its class is
    `dagster._core.storage.runs.sqlite.SqliteRunStorage`, sometimes wrapped (`_storage`).
    """
    from dagster._core.storage.runs.sqlite import SqliteRunStorage

    storage = getattr(instance.run_storage, "_storage", instance.run_storage)
    return isinstance(storage, SqliteRunStorage)


def dbt_events_with_metadata(events: Iterable[Any], invocation: DbtCliInvocation) -> Iterator[Any]:
    """dagster-dbt's row counts, column schemas and column lineage for dbt's `events`,
    already collected from `invocation`.

    Why private: the public path, `invocation.stream().fetch_row_counts()...`, attaches
    metadata while dbt runs through `dagster._core.utils.imap`, which spins without
    sleeping while its input is not ready (two threads busy for the whole build, measured
    by `make bench`); building dagster-dbt's `DbtEventIterator` over the events collected
    first runs the same fetchers once dbt has finished.
    """
    from dagster_dbt.core.dbt_event_iterator import DbtEventIterator

    return iter(
        DbtEventIterator(iter(events), dbt_cli_invocation=invocation)
        .fetch_row_counts()
        .fetch_column_metadata()
    )


class InstalledDbtCliResource(DbtCliResource):
    """`DbtCliResource` that knows its dbt version without asking.

    dagster-dbt runs `dbt --version` in a subprocess for every dbt step (2 to 5 s per run
    on a small machine, measured by `make bench`); the dbt it runs is the dbt-core package
    installed beside this Python, whose version is in the package metadata.
    """

    @cached_property
    def _cli_version(self) -> Version:
        return Version(version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Sequence[str]) -> Any:
        """No adapter before dbt starts: `adapter_while_dbt_runs` makes it afterwards.

        dagster-dbt builds its in-process adapter (for row counts, column schemas and
        lineage) before it starts `dbt build`, 1.2-1.8 s in a row on this machine, mostly
        imports; the adapter is first needed when dbt has finished.
        """
        return None

    def adapter_while_dbt_runs(self, args: Sequence[str]) -> Future[Any]:
        """dagster-dbt's in-process dbt adapter, made in a thread while dbt runs in its own
        process; the future's result is None if it cannot be made (dagster-dbt's own
        behaviour: no row counts or column metadata, a warning)."""
        future: Future[Any] = Future()

        def make() -> None:
            try:
                future.set_result(initialize_dbt_core_adapter(self, args))
            except Exception as error:
                future.set_exception(error)

        threading.Thread(target=make, name="mlstack-dbt-adapter", daemon=True).start()
        return future
