"""The CSV sources mlstack reads: one entry each, and every list of sources derives from it.

Adding a source is one `Source` in `SOURCES`, its Great Expectations suite
(`quality/suites/<name>.json`) and, for dbt to read it, its entry in
`dbt_project/models/staging/_mlops_course__sources.yml` with a staging model. The settings
(`MLSTACK_<NAME>_URL`, `MLSTACK_AIRBYTE_<NAME>_CONNECTION_ID`), the observed source file,
the raw asset and its checks, the source-change sensor, the versioned tables, the volume
guard, the freshness policies and dbt's source freshness all follow from this tuple.
"""

from __future__ import annotations

from dataclasses import dataclass

LESSON_COMMIT = "e8dfdbe98f55cba8befaf8409e16e48fac2d26d8"
LESSON_DATASETS_URL = (
    f"https://raw.githubusercontent.com/GokuMohandas/Made-With-ML/{LESSON_COMMIT}/datasets"
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
    return [source.name for source in SOURCES]


def source(name: str) -> Source:
    """The registered source called `name`."""
    return next(s for s in SOURCES if s.name == name)
