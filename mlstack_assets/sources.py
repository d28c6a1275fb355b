"""The CSV sources mlstack reads: every list of sources derives from `SOURCES`.

A new source also needs its suite (`quality/suites/<name>.json`) and, for dbt, an entry in
`dbt_project/models/staging/_mlops_course__sources.yml` with a staging model.
"""

from dataclasses import dataclass

LESSON_DATASETS_URL = (  # Made-With-ML at the lesson's commit
    "https://raw.githubusercontent.com/GokuMohandas/Made-With-ML"
    "/e8dfdbe98f55cba8befaf8409e16e48fac2d26d8/datasets"
)


@dataclass(frozen=True)
class Source:
    """One CSV: its Airbyte stream, raw table and asset key are all `name`."""

    name: str
    default_url: str
    key: str = "id"  # the column a row is known by (versions are compared by it)

    @property
    def url_variable(self) -> str:
        return f"MLSTACK_{self.name.upper()}_URL"

    @property
    def connection_variable(self) -> str:
        """The Airbyte server connection that syncs this source (`MLSTACK_AIRBYTE=server`)."""
        return f"MLSTACK_AIRBYTE_{self.name.upper()}_CONNECTION_ID"


SOURCES: tuple[Source, ...] = (
    Source("projects", f"{LESSON_DATASETS_URL}/projects.csv"),
    Source("tags", f"{LESSON_DATASETS_URL}/tags.csv"),
)


def source_names() -> list[str]:
    """The registered sources' names, in order."""
    return [source.name for source in SOURCES]


def source(name: str) -> Source:
    """The registered source called `name`."""
    return next(s for s in SOURCES if s.name == name)
