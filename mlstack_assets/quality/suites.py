"""GX Core 1.x suites, versioned and read as plain JSON (GX is slow to import). `meta.check`
names each expectation's asset check; `critical` ones block the publish, `warning` ones do not."""

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from dagster import AssetCheckSpec, AssetKey

# the expectations about the table itself, which still mean something when it is empty
TABLE_EXPECTATIONS = ("expect_table_row_count_to_be_between", "expect_table_columns_to_match_set")

SUITES_DIR = Path(__file__).parent / "suites"  # one `<source or model>.json` each


@dataclass(frozen=True)
class Expectation:
    check_name: str
    description: str
    blocking: bool
    config: dict[str, Any]

    @property
    def columns(self) -> list[str]:
        """The columns it reads (`meta.columns` for a query): without them it cannot run."""
        kwargs = self.config["kwargs"]
        named = [kwargs[key] for key in ("column", "column_A", "column_B") if key in kwargs]
        return [*named, *kwargs.get("column_list", []), *self.config["meta"].get("columns", [])]

    @property
    def reads_rows(self) -> bool:
        return self.config["type"] not in TABLE_EXPECTATIONS

    @property
    def label(self) -> str:
        """e.g. `expect_column_values_to_be_unique(column=id)`."""
        kwargs = self.config["kwargs"].items()
        arguments = ", ".join(f"{key}={value}" for key, value in kwargs if key != "type_list")
        return f"{self.config['type']}({arguments})"


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
    """The classes the model learns: one list, which GX and dbt's accepted_values warn about."""
    suite = load_suite("labeled_projects")
    known = next(e for e in suite.expectations if e.check_name == "tag_is_known")
    return list(known.config["kwargs"]["value_set"])
