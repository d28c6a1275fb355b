"""Local GX Data Docs that keep every validation, not only the latest process's."""

from great_expectations.render.renderer.site_builder import DefaultSiteIndexBuilder


class HistorySiteIndexBuilder(DefaultSiteIndexBuilder):
    """GX deletes pages whose results are not in its result store. Each mlstack validation
    runs in a fresh in-memory context, so that would leave only the latest page; keeping
    them makes `.mlstack/gx/data_docs` the history of every audit."""

    def build(self, skip_and_clean_missing: bool = True, build_index: bool = True):
        return super().build(skip_and_clean_missing=False, build_index=build_index)
