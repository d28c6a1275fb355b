"""`mlstack-dbt`: dbt, started so that it dies with the Dagster process that started it (a dbt
child of a killed step lived on, holding the DuckDB file and writing): it asks to die with its
parent (`processes.py`), then replaces itself with the dbt installed beside this Python."""

import os
import sys
from pathlib import Path

from mlstack_assets.processes import die_with_parent


def dbt_child_executable() -> str:
    """The launcher's path, for `DbtCliResource(dbt_executable=...)`."""
    return str(Path(sys.executable).parent / "mlstack-dbt")


def main() -> None:
    die_with_parent()
    dbt = str(Path(sys.executable).parent / "dbt")
    os.execv(dbt, [dbt, *sys.argv[1:]])


if __name__ == "__main__":
    main()
