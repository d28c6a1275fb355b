"""Great Expectations suites, versioned as JSON beside this module (GX Core 1.x format).

Each expectation carries `meta.check`, the name of the Dagster asset check that reports
it, and a GX `severity`: `critical` expectations block (a failure stops the publish and
everything downstream), `warning` ones are reported and let the data through. Reading a
suite is plain JSON, so defining the checks does not import Great Expectations (slow).
"""

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from dagster import AssetCheckSpec, AssetKey

SUITES_DIR = Path(__file__).parent / "suites"


@dataclass(frozen=True)
class Expectation:
    check_name: str
    description: str
    blocking: bool
    config: dict[str, Any]

    @property
    def columns(self) -> list[str]:
        """The columns the expectation reads (its kwargs, or `meta.columns` for a query)."""
        kwargs = self.config["kwargs"]
        named = [kwargs[key] for key in ("column", "column_A", "column_B") if key in kwargs]
        return [*named, *kwargs.get("column_list", []), *self.config["meta"].get("columns", [])]

    @property
    def reads_rows(self) -> bool:
        """False for the expectations about the table itself (its row count, its columns)."""
        return self.config["type"] not in (
            "expect_table_row_count_to_be_between",
            "expect_table_columns_to_match_set",
        )

    @property
    def label(self) -> str:
        """e.g. `expect_column_values_to_be_unique(column=id)`."""
        kwargs = ", ".join(
            f"{key}={value}" for key, value in self.config["kwargs"].items() if key != "type_list"
        )
        return f"{self.config['type']}({kwargs})"


@dataclass(frozen=True)
class Suite:
    name: str
    expectations: tuple[Expectation, ...]
    document: dict[str, Any]

    def check_specs(self, asset_key: AssetKey) -> list[AssetCheckSpec]:
        return [
            AssetCheckSpec(
                name=expectation.check_name,
                asset=asset_key,
                description=f"{expectation.description} [GX: {expectation.label}]",
                blocking=expectation.blocking,
                metadata={"great_expectations/suite": self.name},
            )
            for expectation in self.expectations
        ]

    def expectation(self, check_name: str) -> Expectation:
        return next(e for e in self.expectations if e.check_name == check_name)


@cache
def load_suite(name: str) -> Suite:
    document = json.loads((SUITES_DIR / f"{name}.json").read_text())
    expectations = tuple(
        Expectation(
            check_name=config["meta"]["check"],
            description=config["description"],
            blocking=config.get("severity", "critical") == "critical",
            config=config,
        )
        for config in document["expectations"]
    )
    return Suite(name=document["name"], expectations=expectations, document=document)


def known_tags() -> list[str]:
    """The classes the model learns: the set the GX suites and dbt's accepted_values test
    warn about (one list, in the labeled_projects suite)."""
    return list(
        load_suite("labeled_projects").expectation("tag_is_known").config["kwargs"]["value_set"]
    )
