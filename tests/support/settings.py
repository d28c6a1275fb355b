"""Settings as a process started with only the given variables would load them."""

import os

import pytest

from mlstack_assets.settings import Settings, load_settings

# every variable the settings read (each field's alias)
VARIABLES = {field.alias for field in Settings.model_fields.values()}


def settings_from(environ: dict[str, str]) -> Settings:
    """`load_settings()` in an environment that sets only `environ` of mlstack's variables."""
    with pytest.MonkeyPatch.context() as patch:
        for name in VARIABLES & set(os.environ):
            patch.delenv(name)
        for name, value in environ.items():
            patch.setenv(name, value)
        return load_settings()
