"""Local GX Data Docs that keep the recent history of every audit, not only the latest."""

import logging
import shutil
from pathlib import Path

from great_expectations.render.renderer import site_builder

KEEP_RUNS = 50  # validation pages kept per suite


class HistorySiteIndexBuilder(site_builder.DefaultSiteIndexBuilder):
    """GX deletes pages whose results are not in its store, a fresh one per validation: keep all."""

    def build(self, skip_and_clean_missing: bool = True, build_index: bool = True):
        return super().build(skip_and_clean_missing=False, build_index=build_index)


# GX warns about each kept page (every past run): up to KEEP_RUNS warnings per audit, no news
logging.getLogger(site_builder.__name__).addFilter(
    lambda record: not record.getMessage().startswith("Validation result not found")
)


def prune_history(site: Path, keep: int = KEEP_RUNS) -> None:
    """Keep each suite's newest `keep` pages, so the index every validation rebuilds stays small."""
    for suite in (site / "validations").glob("*"):
        runs = sorted(suite.glob("*/*"), key=lambda folder: folder.name)  # named by UTC time
        for old in runs[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
