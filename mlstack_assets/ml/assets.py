"""ML-ready assets downstream of labeled_projects: dataset, stratified splits, a picture.

Write-audit-publish, as for the raw tables and dbt's models, in one warehouse session
per asset: it reads the versions of its upstream table, builds its table with SQL in the
audit dataset (`<dataset>_audit.<asset>`), runs its blocking checks there (`checks.py`),
and only when they all pass publishes it through the one audited publish (`publish.py`: a
version in the lake naming the upstream versions, then the atomic replace). A failing
check fails the step: the published table keeps its content and nothing downstream runs.
Every table is SQL in the warehouse; Python holds a handful of counts, and the one row
per tag the chart is drawn from.
"""

import os
from collections.abc import Iterator
from typing import Any

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AutomationCondition,
    Config,
    DataVersion,
    Definitions,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    with_source_code_references,
)
from pydantic import Field, model_validator

from mlstack_assets.lake import Lake
from mlstack_assets.lake.versions import current_versions
from mlstack_assets.ml import checks, plot
from mlstack_assets.ml.sql import (
    SPLITS,
    exclusions_sql,
    ml_dataset_sql,
    ml_splits_sql,
    tag_distribution_sql,
)
from mlstack_assets.publish import AuditFailed, Candidate, policy, publish_audited
from mlstack_assets.quality.outcomes import Audit, CheckOutcome
from mlstack_assets.quality.suites import known_tags
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Warehouse
from mlstack_assets.warehouse.deployment import WarehouseDeployment

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


def upstream_versions(lake: str, tables: list[str]) -> dict[str, str]:
    """The versions `tables` hold now, and what they were built from."""
    return current_versions(Lake(lake), tables)


class MLTable:
    """One ML asset's build in its warehouse session: the upstream it reads (its versions
    read inside the session: read outside, a rollback in between would make the version
    name data the table was not built from), the table built in the audit dataset, its
    publish."""

    def __init__(self, name: str, upstream: str, warehouse: Warehouse, settings: Settings):
        self.name, self.upstream, self.warehouse, self.settings = (
            name,
            upstream,
            warehouse,
            settings,
        )

    def __enter__(self) -> "MLTable":
        warehouse = self.warehouse
        self._session = warehouse.session(purpose=f"build, audit and publish {self.name}")
        self._session.__enter__()
        if warehouse.table_columns(warehouse.dataset, self.upstream) is None:
            self.__exit__(None, None, None)
            raise Failure(
                description=(
                    f"{self.name}: nothing was built: its upstream {self.upstream}"
                    f" ({warehouse.dataset}.{self.upstream}) does not exist yet. Materialize it"
                    f" first, or with its upstream: --select '+{self.name}'"
                    f" (dg launch --assets '+{self.name}')"
                ),
                metadata={"missing_upstream": [self.upstream]},
                allow_retries=False,
            )
        self.source = warehouse.qualified(warehouse.dataset, self.upstream)
        self.inputs = upstream_versions(self.settings.lake, [self.upstream])
        return self

    def __exit__(self, *exc: Any) -> None:
        self._session.__exit__(*exc)

    def build(self, sql: str) -> str:
        return self.warehouse.build_audit_table(self.name, sql)

    def publish(
        self,
        context: AssetExecutionContext,
        outcomes: list[CheckOutcome],
        metadata: dict[str, Any],
        count_by: tuple[str, ...] = (),
    ) -> Iterator[Any]:
        """Publish the audited table when every check passed, with its metadata; else fail
        the step with the one failure report, the published table untouched."""
        warehouse, key = self.warehouse, AssetKey(self.name)
        candidate = Candidate(key, self.name, warehouse.audit_dataset, inputs=self.inputs)
        try:
            audit, published = publish_audited(
                self.name,
                [candidate],
                Audit(outcomes),
                warehouse,
                policy(self.settings),
                context.run_id,
                context.log.warning,
            )
        except AuditFailed as failed:
            yield from failed.audit.results()
            raise failed.failure from None
        yield MaterializeResult(
            metadata={
                **metadata,
                **_table_metadata(warehouse, self.name, count_by),
                **published[key],
            },
            check_results=audit.results(),
            data_version=DataVersion(candidate.version_id),
        )


def _table_metadata(warehouse: Warehouse, table: str, count_by: tuple[str, ...]) -> dict:
    """The published table's rows, columns (and its rows per `count_by` values)."""
    columns = warehouse.table_columns(warehouse.dataset, table) or []
    metadata: dict[str, Any] = {
        "dagster/row_count": warehouse.row_count(warehouse.dataset, table),
        "dagster/column_schema": TableSchema([TableColumn(name, dtype) for name, dtype in columns]),
    }
    if count_by:
        keys = ", ".join(count_by)
        counts = warehouse.query(
            f"select {keys}, count(*) from {warehouse.qualified(warehouse.dataset, table)}"
            f" group by {keys} order by {keys}"
        )
        metadata[f"rows_per_{'_and_'.join(count_by)}"] = MetadataValue.table(
            records=[
                TableRecord({**dict(zip(count_by, row[:-1], strict=True)), "rows": int(row[-1])})
                for row in counts
            ],
            schema=TableSchema(
                [*(TableColumn(key, "string") for key in count_by), TableColumn("rows", "int")]
            ),
        )
    return metadata


def ml_asset(name: str, upstream: str, deployment: WarehouseDeployment, kind: str = "python"):
    """`@asset` with what every ML asset shares: its upstream, group, owner, kinds, checks
    and eager automation."""
    return asset(
        name=name,
        deps=[AssetKey(upstream)],
        group_name=ML_GROUP,
        kinds={kind, deployment.kind},
        owners=[OWNER],
        automation_condition=AutomationCondition.eager(),
        check_specs=checks.check_specs(name),
    )


def build_ml_assets(settings: Settings, deployment: WarehouseDeployment) -> list[AssetsDefinition]:
    @ml_asset("ml_dataset", "labeled_projects", deployment)
    def ml_dataset(context: AssetExecutionContext, warehouse: Warehouse):
        """ML: one row per project (id, created_on, text = title + description, tag).

        Rows with an unknown tag or no text are left out and counted in the metadata.
        """
        tags = known_tags()
        with MLTable("ml_dataset", "labeled_projects", warehouse, settings) as table:
            sql = ml_dataset_sql(table.source, warehouse.kind, tags)
            [(total, unknown, empty)] = warehouse.query(
                exclusions_sql(table.source, warehouse.kind, tags)
            )
            audited = table.build(sql)
            outcomes = [
                checks.row_count_matches_labeled_projects(
                    warehouse.query, audited, total, unknown, empty
                )
            ]
            for reason, count in (("unknown or missing tag", unknown), ("empty text", empty)):
                if count:
                    context.log.warning(f"ml_dataset leaves out {count} rows: {reason}")
            metadata = {
                "labeled_rows": total,
                "excluded_unknown_or_missing_tag": unknown,
                "excluded_empty_text": empty,
                "known_tags": MetadataValue.json(tags),
                "sql": MetadataValue.md(f"```sql\n{sql}\n```"),
            }
            yield from table.publish(context, outcomes, metadata)

    @ml_asset("ml_splits", "ml_dataset", deployment)
    def ml_splits(context: AssetExecutionContext, config: SplitConfig, warehouse: Warehouse):
        """ML: ml_dataset with a `split` column (train / validation / test), stratified by tag."""
        validation, test = config.validation_fraction, config.test_fraction
        with MLTable("ml_splits", "ml_dataset", warehouse, settings) as table:
            sql = ml_splits_sql(table.source, warehouse.kind, config.seed, validation, test)
            audited = table.build(sql)
            shares = checks.tag_shares(warehouse.query, audited, validation, test)
            outcomes = [
                checks.every_id_in_one_split(warehouse.query, audited, table.source),
                checks.every_tag_in_every_split(shares),
                checks.fractions_within_one_row(shares, validation, test),
            ]
            fractions = {"train": round(1 - validation - test, 4), "validation": validation}
            metadata = {
                "seed": config.seed,
                "fractions": MetadataValue.json({**fractions, "test": test}),
                "sql": MetadataValue.md(f"```sql\n{sql}\n```"),
            }
            yield from table.publish(context, outcomes, metadata, count_by=("split", "tag"))

    @ml_asset("tag_distribution", "ml_splits", deployment, kind="pandas")
    def tag_distribution(context: AssetExecutionContext, warehouse: Warehouse):
        """ML: projects per tag and split, as a table and a bar chart (in the metadata)."""
        path = settings.home / "plots" / "tag_distribution.png"
        # drawn beside the published one; it replaces it only once the table is published
        drawn = path.with_name(f".{path.stem}.audit.png")
        with MLTable("tag_distribution", "ml_splits", warehouse, settings) as table:
            audited = table.build(tag_distribution_sql(table.source))
            outcomes = [checks.sums_to_split_counts(warehouse.query, audited, table.source)]
            # one row per tag: small enough for pandas and the chart
            rows = warehouse.query(
                f"select tag, {', '.join(SPLITS)}, total from {audited} order by total desc, tag"
            )
            counts = pd.DataFrame(rows, columns=["tag", *SPLITS, "total"])
            metadata: dict[str, Any] = {
                "counts": MetadataValue.md(plot.markdown_table(counts)),
                "plot_path": MetadataValue.path(str(path)),
            }
            if all(outcome.passed for outcome in outcomes):
                plot.render(counts, drawn)
                metadata["plot"] = MetadataValue.md(plot.markdown_image(drawn))
            yield from table.publish(context, outcomes, metadata)
        os.replace(drawn, path)

    return [ml_dataset, ml_splits, tag_distribution]


def build_ml_definitions(settings: Settings, deployment: WarehouseDeployment) -> Definitions:
    return Definitions(assets=with_source_code_references(build_ml_assets(settings, deployment)))
