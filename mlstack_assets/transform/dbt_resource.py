"""The `dbt` resource: dagster-dbt's `DbtCliResource`, minus two waits before dbt starts."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import Future
from functools import cached_property
from importlib.metadata import version
from typing import Any

from dagster_dbt import DbtCliResource
from packaging.version import Version

from mlstack_assets.compat import initialize_dbt_core_adapter


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
