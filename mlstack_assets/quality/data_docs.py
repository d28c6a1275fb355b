"""Local GX Data Docs that keep the recent history of every audit, not only the latest."""

import logging
import shutil
from pathlib import Path

from great_expectations.render.renderer import site_builder
from great_expectations.render.renderer.site_builder import DefaultSiteIndexBuilder

KEEP_RUNS = 50  # validation pages kept per suite


class HistorySiteIndexBuilder(DefaultSiteIndexBuilder):
    """GX deletes pages whose results are not in its result store. Each mlstack validation
    runs in a fresh in-memory context, so that would leave only the latest page; keeping
    them makes `.mlstack/gx/data_docs` the history of the audits (see `prune_history`)."""

    def build(self, skip_and_clean_missing: bool = True, build_index: bool = True):
        return super().build(skip_and_clean_missing=False, build_index=build_index)


class _PastRunsAreNotInTheStore(logging.Filter):
    """GX warns "Validation result not found ... - skipping" for every kept page whose result
    is not in the context's store, which, by the design above, is every past run: up to
    `KEEP_RUNS` warnings per audit on the CLI, none of them news."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Validation result not found")


logging.getLogger(site_builder.__name__).addFilter(_PastRunsAreNotInTheStore())


def prune_history(site: Path, keep: int = KEEP_RUNS) -> None:
    """Keep the newest `keep` validation pages of each suite, so that the index, rebuilt by
    every validation, stays small. Run folders are named by UTC time, so names sort by age."""
    for suite in (site / "validations").glob("*"):
        runs = sorted(suite.glob("*/*"), key=lambda folder: folder.name)
        for old in runs[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
