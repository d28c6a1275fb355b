"""The part of the lake that one warehouse reads: what the environment (the process's, with
`overrides`) configures, as `mlstack versions` and every run resolve it."""

import os
from unittest import mock

from mlstack_assets.lake import Lake
from mlstack_assets.settings import load_settings


def warehouse_lake(**overrides: str) -> Lake:
    """The configured warehouse's part of the lake (`Settings.warehouse_lake`)."""
    with mock.patch.dict(os.environ, overrides):
        return Lake(load_settings().warehouse_lake)
