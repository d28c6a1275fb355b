"""The private APIs of dependencies that mlstack relies on, fenced in one place.

Each entry says why no public API does; `tests/unit/test_compat.py` fails when a dependency
changes under it. `gx_duckdb.py` is a module of its own so that GX loads only for an audit.
"""

import time
from collections.abc import Callable
from functools import cached_property
from importlib.metadata import version
from typing import Any

from dagster_dbt import DbtCliResource
from packaging.version import Version


class InstalledDbtCliResource(DbtCliResource):
    """`DbtCliResource` that neither asks dbt its version nor opens dbt in this process.

    Why private: `cli()` runs `dbt --version` in a subprocess (3 to 4 s a run) and builds an
    in-process adapter (1.2 to 1.8 s, and a DuckDB connection to close), with no public switch.
    The version is in dbt-core's package metadata; the adapter serves only `fetch_row_counts`
    and `fetch_column_metadata`, which mlstack does not call (dbt's `log_column_metadata`
    post-hook and the warehouse give both).
    """

    @cached_property
    def _cli_version(self) -> Version:
        return Version(version("dbt-core"))

    def _initialize_dbt_core_adapter(self, args: Any) -> None:
        return None


def runs_stored_in_sqlite(instance: Any) -> bool:
    """Whether the Dagster `instance` keeps its runs in SQLite, i.e. on this machine.

    Why private: judging runs by the pids of their events (`fail_orphaned_runs`) is sound only
    for local processes, which SQLite storage implies and Postgres does not; Dagster has no
    public way to ask an instance which storage it has.
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

    Why private: every `AirbyteClient` call goes through `_single_request`, which retries any
    `RequestException` (a 401 as much as a reset) with a fixed delay and no public policy.
    Overridden here: connection errors, time-outs and statuses `transient` accepts are retried
    after `delay(attempt)` s, at most `retries` times, each logged; the rest fails at once.
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
                session = self._get_session(include_additional_request_headers)
                try:
                    response = session.request(
                        method, url, json=data, params=params, timeout=self.request_timeout
                    )
                except (requests.ConnectionError, requests.Timeout) as error:
                    cause = str(error).rsplit("Caused by ", 1)[-1][:200]
                    reason = f"{type(error).__name__} ({cause})"
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
