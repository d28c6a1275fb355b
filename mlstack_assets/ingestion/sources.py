"""A raw source as configured (its registry entry and URL), and how the connector reads it."""

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import requests

from mlstack_assets.settings import Settings
from mlstack_assets.sources import SOURCES, source

HTTP_TIMEOUT_SECONDS = 30

# pandas options for the File source's CSV reader: every field as the file spells it (only an
# empty field is NULL), not typed by a guess per chunk (`7.4` would make ids floats, `007` 7,
# `NA` NULL): the audit checks the text and dbt casts it, so a misfit fails loudly.
READER_OPTIONS = {"dtype": "str", "keep_default_na": False, "na_values": [""]}


@dataclass(frozen=True)
class SourceSpec:
    """One CSV source: the Airbyte stream, the raw table and the Dagster asset share its name."""

    name: str
    url: str

    @property
    def env_var(self) -> str:
        return source(self.name).url_variable

    @property
    def is_remote(self) -> bool:
        return urlparse(self.url).scheme in ("http", "https")

    @property
    def local_path(self) -> Path:
        return Path(self.url)

    def connector_config(self) -> dict:
        """source-file config as the lesson sets it (CSV, HTTPS or local), fields as text."""
        remote = {"storage": "HTTPS", "user_agent": False}
        return {
            "dataset_name": self.name,
            "format": "csv",
            "url": self.url,
            "provider": remote if self.is_remote else {"storage": "local"},
            "reader_options": json.dumps(READER_OPTIONS),
        }


class SourceError(RuntimeError):
    """A source could not be read; the message names the source and the cause."""

    def __init__(self, source: SourceSpec, cause: str):
        super().__init__(f"source '{source.name}' ({source.url}): {cause}")


def source_specs(settings: Settings) -> list[SourceSpec]:
    """Every registered source (`sources.SOURCES`) at its configured URL."""
    return [SourceSpec(source.name, settings.source_url(source.name)) for source in SOURCES]


def local_file(spec: SourceSpec) -> Path:
    """The source's file, or `SourceError` when there is none."""
    if (path := spec.local_path).is_dir():
        raise SourceError(spec, f"{path} is a directory, not a file")
    if not path.is_file():
        what = "not a regular file" if path.exists() else "file not found"
        raise SourceError(spec, f"{what}: {path}")
    return path


def require_https(spec: SourceSpec) -> None:
    """The connector reads web sources over HTTPS only."""
    if spec.url.startswith("http://"):
        raise SourceError(
            spec, "the Airbyte File source reads web sources over HTTPS only; use an https:// URL"
        )


@contextmanager
def http_response(
    spec: SourceSpec, headers: Mapping[str, str] | None = None, accept: tuple[int, ...] = (200,)
) -> Iterator[requests.Response]:
    """A streamed GET of a web source; unreachable hosts and bad statuses become `SourceError`."""
    require_https(spec)
    try:
        response = requests.get(
            spec.url, headers=dict(headers or {}), stream=True, timeout=HTTP_TIMEOUT_SECONDS
        )
    except requests.RequestException as error:
        raise SourceError(spec, f"unreachable: {type(error).__name__}: {error}") from error
    with response:
        if response.status_code not in accept:
            raise SourceError(spec, f"HTTP {response.status_code} {response.reason}")
        yield response
