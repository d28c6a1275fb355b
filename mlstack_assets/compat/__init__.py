"""The private APIs of dependencies that mlstack relies on, fenced in one place.

Each entry says why no public API does, and `tests/unit/test_compat.py` fails when the
dependency changes under it, by what mlstack relies on it doing, so that an upgrade shows
what to revisit. `gx_duckdb.py` (a GX datasource for DuckDB) is a module of its own, so
that GX is imported only when an audit runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import cached_property
from importlib.metadata import version
from typing import Any

from dagster_dbt import DbtCliResource
from packaging.version import Version


class InstalledDbtCliResource(DbtCliResource):
    """`DbtCliResource` that neither asks dbt its version nor opens dbt in this process.

    Why private: `DbtCliResource.cli` runs `dbt --version` in a subprocess (a cached
    property, 3 to 4 s a run here) and builds dbt's in-process adapter (1.2 to 1.8 s, and a
    DuckDB connection this process must close) before it starts dbt, with no public switch
    for either. The dbt it runs is the dbt-core installed beside this Python, whose version
    is in the package metadata; the adapter serves only `fetch_row_counts` and
    `fetch_column_metadata`, which mlstack does not call: the column schemas and lineage
    come from dbt itself (the `log_column_metadata` post-hook, which `stream()` reads) and
    the row counts from the warehouse.
    """

    @cached_property
    def _cli_version(self) -> Version:
        return Version(version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Any) -> None:
        return None


def runs_stored_in_sqlite(instance: Any) -> bool:
    """Whether the Dagster `instance` keeps its runs in SQLite, i.e. on this machine.

    Why private: mlstack marks failed the runs a killed process left STARTED, judging by the
    pids that wrote their events; that is sound only when those processes ran on this
    machine, which SQLite storage implies and a shared one (Postgres) does not. Dagster has
    no public way to ask an instance which storage it has.
    """
    from dagster._core.storage.runs.sqlite import SqliteRunStorage

    storage = getattr(instance.run_storage, "_storage", instance.run_storage)
    return isinstance(storage, SqliteRunStorage)


def retrying_airbyte_client(
    client: Any,
    retries: int,
    log: Callable[[str], None],
    transient: Callable[[int], bool],
    delay: Callable[[int], float],
) -> Any:
    """dagster-airbyte's API client for `client`'s workspace, retrying transient errors only.

    Why private: every call of dagster-airbyte's `AirbyteClient` goes through its
    `_single_request`, which retries any `RequestException` (a 401 as much as a reset)
    with a fixed delay; it has no public retry policy. This client overrides that one
    method: connection errors, time-outs and the statuses `transient` accepts are retried
    after `delay(attempt)` seconds, at most `retries` times, each retry logged; anything
    else fails at once. Everything else, secrets included, is the workspace's own client.
    """
    import requests
    from dagster import Failure
    from dagster_airbyte.resources import AirbyteClient

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
                session = self._get_session(
                    include_additional_request_headers=include_additional_request_headers
                )
                try:
                    response = session.request(
                        method, url, json=data, params=params, timeout=self.request_timeout
                    )
                except (requests.ConnectionError, requests.Timeout) as error:
                    reason = (
                        f"{type(error).__name__} ({str(error).rsplit('Caused by ', 1)[-1][:200]})"
                    )
                else:
                    if response.ok:
                        return response.json()
                    reason = f"HTTP {response.status_code} {response.reason}"
                    if not transient(response.status_code):
                        raise Failure(
                            f"Airbyte API {method} {path} answered {reason} (not retried:"
                            " only connection errors, time-outs, 429 and 5xx are)",
                            allow_retries=False,
                        )
                if attempt == retries:
                    break
                log(
                    f"Airbyte API {method} {path}: {reason}; retry {attempt + 1} of {retries}"
                    f" in {delay(attempt):g} s"
                )
                time.sleep(delay(attempt))
            raise Failure(
                f"Max retries ({retries}) exceeded: Airbyte API {method} {path}: {reason}",
                allow_retries=False,
            )

    fields = {name: getattr(client, name) for name in AirbyteClient.model_fields}
    return RetryingAirbyteClient(**fields)
