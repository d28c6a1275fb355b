"""ML-ready assets downstream of labeled_projects: dataset, stratified splits, a picture.

Write-audit-publish, as for the raw tables and dbt's models: each asset builds its table
with SQL in the audit dataset (`<dataset>_audit.<asset>`), runs its blocking checks
there (`checks.py`), and only when they all pass hands the IO manager an `AuditedTable`,
which it publishes through the one audited publish (`publish.py`: a version in the lake
naming the upstream versions, then the atomic replace). A failing check fails the step
before anything is published: the published table keeps its previous content and
nothing downstream runs.
"""

import functools
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AutomationCondition,
    Config,
    DataVersion,
    MetadataValue,
    Output,
    asset,
)
from pydantic import Field, model_validator

from mlstack_assets.ml import checks, plot
from mlstack_assets.ml.sql import (
    SPLITS,
    exclusions_sql,
    ml_dataset_sql,
    ml_splits_sql,
    tag_distribution_sql,
)
from mlstack_assets.publish import (
    AuditFailed,
    Candidate,
    fail_unless_passed,
    policy,
    upstream_versions,
)
from mlstack_assets.quality.outcomes import Audit, CheckOutcome
from mlstack_assets.quality.suites import known_tags
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Warehouse
from mlstack_assets.warehouse.deployment import WarehouseDeployment
from mlstack_assets.warehouse.relations import AuditedTable, WarehouseTable

ML_GROUP = "ml"
OWNER = "team:mlstack"


class SplitConfig(Config):
    """Fractions of each tag's rows that go to validation and test; train gets the rest."""

    seed: int = Field(default=42, description="Same seed, same split.")
    validation_fraction: float = Field(default=0.15, gt=0, lt=1)
    test_fraction: float = Field(default=0.15, gt=0, lt=1)

    @model_validator(mode="after")
    def _leaves_rows_for_training(self) -> "SplitConfig":
        if self.validation_fraction + self.test_fraction >= 1:
            raise ValueError("validation_fraction + test_fraction must be below 1")
        return self


def default_split() -> tuple[int, float, float]:
    """(seed, validation fraction, test fraction) of `ml_splits` run without config."""
    config = SplitConfig()
    return config.seed, config.validation_fraction, config.test_fraction


def publish_if_checks_pass(
    context: AssetExecutionContext,
    settings: Settings,
    asset_name: str,
    warehouse: Warehouse,
    outcomes: list[CheckOutcome],
    metadata: dict[str, Any],
    inputs: dict[str, str],
    count_by: tuple[str, ...] = (),
) -> Iterator[Output[AuditedTable] | AssetCheckResult]:
    """Hand the IO manager the audited table to publish (the one audited publish, with a
    version of it in the lake recording `inputs`, the versions it was built from) when every
    check passed; else fail the step with the one failure report, the published table
    untouched.

    `inputs` are read in the same warehouse session as the build (`building`).

    On success the Output comes first, so the check results attach to the materialization
    that published the checked rows.
    """
    key = AssetKey(asset_name)
    audit = Audit(outcomes)
    rules = policy(settings)
    candidate = Candidate(
        key,
        asset_name,
        warehouse.audit_dataset,
        inputs=inputs,
    )
    subject = asset_name
    try:
        fail_unless_passed(subject, [candidate], audit, rules)
    except AuditFailed as failed:
        yield from failed.audit.results()
        raise failed.failure from None
    yield Output(
        AuditedTable(subject, candidate, audit, rules, count_by),
        metadata={**metadata, "inputs": MetadataValue.json(candidate.inputs)},
        data_version=DataVersion(candidate.version_id),
    )
    yield from audit.results()


@contextmanager
def building(
    warehouse: Warehouse, settings: Settings, name: str, upstream: str
) -> Iterator[dict[str, str]]:
    """The warehouse session an ML asset builds and audits `name` in, and the versions of
    `upstream` it builds from, read inside it (read outside, a rollback in between would
    make the version name data it was not built from)."""
    with warehouse.session(purpose=f"build and audit {name}"):
        yield upstream_versions(settings.lake, [upstream])


def ml_asset(deployment: WarehouseDeployment, kind: str = "python") -> Callable[..., Any]:
    """`@asset` with what every ML asset shares: its group, owner, kinds, warehouse pool and
    eager automation."""
    return functools.partial(
        asset,
        group_name=ML_GROUP,
        kinds={kind, deployment.kind},
        owners=[OWNER],
        pool=deployment.pool,
        automation_condition=AutomationCondition.eager(),
    )


def build_ml_dataset(settings: Settings, deployment: WarehouseDeployment) -> AssetsDefinition:
    @ml_asset(deployment)(check_specs=checks.check_specs("ml_dataset"))
    def ml_dataset(
        context: AssetExecutionContext, labeled_projects: WarehouseTable, warehouse: Warehouse
    ):
        """ML: one row per project (id, created_on, text = title + description, tag).

        Rows with an unknown tag or no text are left out and counted in the metadata.
        """
        tags = known_tags()
        sql = ml_dataset_sql(labeled_projects.sql_name, warehouse.kind, tags)
        with building(warehouse, settings, "ml_dataset", "labeled_projects") as inputs:
            [(total, unknown, empty)] = warehouse.query(
                exclusions_sql(labeled_projects.sql_name, warehouse.kind, tags)
            )
            audited = warehouse.build_audit_table("ml_dataset", sql)
            outcomes = [
                checks.row_count_matches_labeled_projects(
                    warehouse.query, audited, total, unknown, empty
                )
            ]
        for reason, count in (("unknown or missing tag", unknown), ("empty text", empty)):
            if count:
                context.log.warning(f"ml_dataset leaves out {count} rows: {reason}")
        yield from publish_if_checks_pass(
            context,
            settings,
            "ml_dataset",
            warehouse,
            outcomes,
            metadata={
                "labeled_rows": total,
                "excluded_unknown_or_missing_tag": unknown,
                "excluded_empty_text": empty,
                "known_tags": MetadataValue.json(tags),
                "sql": MetadataValue.md(f"```sql\n{sql}\n```"),
            },
            inputs=inputs,
        )

    return ml_dataset


def build_ml_splits(settings: Settings, deployment: WarehouseDeployment) -> AssetsDefinition:
    @ml_asset(deployment)(check_specs=checks.check_specs("ml_splits"))
    def ml_splits(
        context: AssetExecutionContext,
        config: SplitConfig,
        ml_dataset: WarehouseTable,
        warehouse: Warehouse,
    ):
        """ML: ml_dataset with a `split` column (train / validation / test), stratified by tag."""
        validation, test = config.validation_fraction, config.test_fraction
        sql = ml_splits_sql(ml_dataset.sql_name, warehouse.kind, config.seed, validation, test)
        with building(warehouse, settings, "ml_splits", "ml_dataset") as inputs:
            audited = warehouse.build_audit_table("ml_splits", sql)
            shares = checks.tag_shares(warehouse.query, audited, validation, test)
            outcomes = [
                checks.every_id_in_one_split(warehouse.query, audited, ml_dataset.sql_name),
                checks.every_tag_in_every_split(shares),
                checks.fractions_within_one_row(shares, validation, test),
            ]
        yield from publish_if_checks_pass(
            context,
            settings,
            "ml_splits",
            warehouse,
            outcomes,
            metadata={
                "seed": config.seed,
                "fractions": MetadataValue.json(
                    {
                        "train": round(1 - validation - test, 4),
                        "validation": validation,
                        "test": test,
                    }
                ),
                "sql": MetadataValue.md(f"```sql\n{sql}\n```"),
            },
            inputs=inputs,
            # the IO manager counts the published table's rows per split and tag
            count_by=("split", "tag"),
        )

    return ml_splits


def build_tag_distribution(settings: Settings, deployment: WarehouseDeployment) -> AssetsDefinition:
    @ml_asset(deployment, kind="pandas")(check_specs=checks.check_specs("tag_distribution"))
    def tag_distribution(
        context: AssetExecutionContext, ml_splits: WarehouseTable, warehouse: Warehouse
    ):
        """ML: projects per tag and split, as a table and a bar chart (in the metadata)."""
        with building(warehouse, settings, "tag_distribution", "ml_splits") as inputs:
            audited = warehouse.build_audit_table(
                "tag_distribution", tag_distribution_sql(ml_splits.sql_name)
            )
            outcomes = [checks.sums_to_split_counts(warehouse.query, audited, ml_splits.sql_name)]
            # one row per tag: small enough for pandas and the chart
            rows = warehouse.query(
                f"select tag, {', '.join(SPLITS)}, total from {audited} order by total desc, tag"
            )
        table = pd.DataFrame(rows, columns=["tag", *SPLITS, "total"])
        path = settings.home / "plots" / "tag_distribution.png"
        # drawn beside the published one; it replaces it only once the table is published
        drawn = path.with_name(f".{path.stem}.audit.png")
        metadata: dict[str, Any] = {
            "counts": MetadataValue.md(plot.markdown_table(table)),
            "plot_path": MetadataValue.path(str(path)),
        }
        if all(outcome.passed for outcome in outcomes):
            plot.render(table, drawn)
            metadata["plot"] = MetadataValue.md(plot.markdown_image(drawn))
        yield from publish_if_checks_pass(
            context,
            settings,
            "tag_distribution",
            warehouse,
            outcomes,
            metadata=metadata,
            inputs=inputs,
        )
        os.replace(drawn, path)

    return tag_distribution


def build_ml_assets(settings: Settings, deployment: WarehouseDeployment) -> list[AssetsDefinition]:
    return [
        build_ml_dataset(settings, deployment),
        build_ml_splits(settings, deployment),
        build_tag_distribution(settings, deployment),
    ]
