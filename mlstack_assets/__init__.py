"""mlstack: two raw CSV sources to a validated, ML-ready table, as Dagster assets.

`defs` (what `dagster ... -m mlstack_assets` loads) is built on first access: importing a
submodule (settings, the connector installer, tests) does not load the code location.
"""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "defs":
        from mlstack_assets.definitions import defs

        return defs
    raise AttributeError(f"module 'mlstack_assets' has no attribute {name!r}")


def __dir__() -> list[str]:
    return ["defs"]
