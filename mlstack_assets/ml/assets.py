"""ML-ready assets downstream of labeled_projects: dataset, stratified splits, a picture.

Write-audit-publish in one warehouse session per asset: built with SQL in the audit dataset,
checked there (`checks.py`), published only when every check passes (`publish.py`)."""

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import dagster as dg
import pandas as pd
from pydantic import Field, model_validator

from mlstack_assets.lake import Lake
from mlstack_assets.lake.versions import current_versions
from mlstack_assets.ml import checks, plot
from mlstack_assets.ml import sql as ml_sql
from mlstack_assets.publish import AuditFailed, Candidate, policy, publish_audited
from mlstack_assets.quality.outcomes import Audit, CheckOutcome
from mlstack_assets.quality.suites import known_tags
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Warehouse
from mlstack_assets.warehouse.deployment import WarehouseDeployment


class SplitConfig(dg.Config):
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


@dataclass(frozen=True)
class MLTable:
    """An ML table being built from `source`, whose versions were `inputs`."""

    name: str
    source: str
    inputs: dict[str, str]
    warehouse: Warehouse
    settings: Settings

    def publish(
        self, context: dg.AssetExecutionContext, outcomes: list[CheckOutcome], metadata: dict
    ) -> Iterator[Any]:
        """Publish the audited table if every check passed, else fail with the failure report."""
        warehouse, key = self.warehouse, dg.AssetKey(self.name)
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
        columns = warehouse.table_columns(warehouse.dataset, self.name) or []
        yield dg.MaterializeResult(
            metadata={
                **metadata,
                "dagster/row_count": warehouse.row_count(warehouse.dataset, self.name),
                "dagster/column_schema": dg.TableSchema.from_name_type_dict(dict(columns)),
                **published[key],
            },
            check_results=audit.results(),
            data_version=dg.DataVersion(candidate.version_id),
        )


@contextmanager
def ml_table(
    name: str, upstream: str, warehouse: Warehouse, settings: Settings
) -> Iterator[MLTable]:
    """One warehouse session to build, audit and publish `name`: the upstream's versions are
    read in it too, or a rollback meanwhile would make them name data it was not built from."""
    with warehouse.session(purpose=f"build, audit and publish {name}"):
        if warehouse.table_columns(warehouse.dataset, upstream) is None:
            raise dg.Failure(
                f"{name}: nothing was built: its upstream {upstream}"
                f" ({warehouse.dataset}.{upstream}) does not exist yet. Materialize it"
                f" first, or with its upstream: --select '+{name}' (dg launch --assets '+{name}')",
                metadata={"missing_upstream": [upstream]},
                allow_retries=False,
            )
        source = warehouse.qualified(warehouse.dataset, upstream)
        inputs = upstream_versions(settings.warehouse_lake, [upstream])
        yield MLTable(name, source, inputs, warehouse, settings)


def ml_asset(name: str, upstream: str, deployment: WarehouseDeployment, kind: str = "python"):
    """`@asset` with what every ML asset shares: upstream, group, owner, kinds, checks."""
    return dg.asset(
        name=name,
        deps=[dg.AssetKey(upstream)],
        group_name="ml",
        kinds={kind, deployment.kind},
        owners=["team:mlstack"],
        automation_condition=dg.AutomationCondition.eager(),
        check_specs=checks.check_specs(name),
    )


def build_ml_definitions(settings: Settings, deployment: WarehouseDeployment) -> dg.Definitions:
    """The ML assets, with their blocking checks."""

    @ml_asset("ml_dataset", "labeled_projects", deployment)
    def ml_dataset(context: dg.AssetExecutionContext, warehouse: Warehouse):
        """ML: one row per project (id, created_on, text = title + description, tag).

        Rows with an unknown tag or no text are left out and counted in the metadata."""
        tags = known_tags()
        with ml_table("ml_dataset", "labeled_projects", warehouse, settings) as table:
            sql = ml_sql.ml_dataset_sql(table.source, warehouse.kind, tags)
            exclusions = ml_sql.exclusions_sql(table.source, warehouse.kind, tags)
            [(total, unknown, empty)] = warehouse.query(exclusions)
            audited = warehouse.build_audit_table("ml_dataset", sql)
            row_count = checks.row_count_matches_labeled_projects
            outcomes = [row_count(warehouse.query, audited, total, unknown, empty)]
            for reason, count in (("unknown or missing tag", unknown), ("empty text", empty)):
                if count:
                    context.log.warning(f"ml_dataset leaves out {count} rows: {reason}")
            metadata = {
                "labeled_rows": total,
                "excluded_unknown_or_missing_tag": unknown,
                "excluded_empty_text": empty,
                "known_tags": dg.MetadataValue.json(tags),
                "sql": dg.MetadataValue.md(f"```sql\n{sql}\n```"),
            }
            yield from table.publish(context, outcomes, metadata)

    @ml_asset("ml_splits", "ml_dataset", deployment)
    def ml_splits(context: dg.AssetExecutionContext, config: SplitConfig, warehouse: Warehouse):
        """ML: ml_dataset with a `split` column (train / validation / test), stratified by tag."""
        validation, test = config.validation_fraction, config.test_fraction
        with ml_table("ml_splits", "ml_dataset", warehouse, settings) as table:
            sql = ml_sql.ml_splits_sql(table.source, warehouse.kind, config.seed, validation, test)
            audited = warehouse.build_audit_table("ml_splits", sql)
            shares = checks.tag_shares(warehouse.query, audited, validation, test)
            outcomes = [
                checks.every_id_in_one_split(warehouse.query, audited, table.source),
                checks.every_tag_in_every_split(shares),
                checks.fractions_within_one_row(shares, validation, test),
            ]
            counts = warehouse.query(ml_sql.split_counts_sql(audited))  # as it will be published
            records = [dg.TableRecord({"split": s, "tag": t, "rows": int(n)}) for s, t, n in counts]
            types = {"split": "string", "tag": "string", "rows": "int"}
            fractions = {"train": round(1 - validation - test, 4), "validation": validation}
            metadata = {
                "seed": config.seed,
                "fractions": dg.MetadataValue.json({**fractions, "test": test}),
                "sql": dg.MetadataValue.md(f"```sql\n{sql}\n```"),
                "rows_per_split_and_tag": dg.MetadataValue.table(
                    records, dg.TableSchema.from_name_type_dict(types)
                ),
            }
            yield from table.publish(context, outcomes, metadata)

    @ml_asset("tag_distribution", "ml_splits", deployment, kind="pandas")
    def tag_distribution(context: dg.AssetExecutionContext, warehouse: Warehouse):
        """ML: projects per tag and split, as a table and a bar chart (in the metadata)."""
        path = settings.home / "plots" / "tag_distribution.png"
        drawn = path.with_name(f".{path.stem}.audit.png")  # replaces `path` once published
        with ml_table("tag_distribution", "ml_splits", warehouse, settings) as table:
            sql = ml_sql.tag_distribution_sql(table.source)
            audited = warehouse.build_audit_table("tag_distribution", sql)
            outcomes = [checks.sums_to_split_counts(warehouse.query, audited, table.source)]
            rows = warehouse.query(f"select * from {audited} order by total desc, tag")
            counts = pd.DataFrame(rows, columns=["tag", *ml_sql.SPLITS, "total"])  # a row per tag
            metadata: dict[str, Any] = {
                "counts": dg.MetadataValue.md(counts.to_markdown(index=False)),
                "plot_path": dg.MetadataValue.path(str(path)),
            }
            if all(outcome.passed for outcome in outcomes):
                plot.render(counts, drawn)
                metadata["plot"] = dg.MetadataValue.md(plot.markdown_image(drawn))
            yield from table.publish(context, outcomes, metadata)
            os.replace(drawn, path)  # in the session: on DuckDB, no other run draws meanwhile

    assets = [ml_dataset, ml_splits, tag_distribution]
    return dg.Definitions(assets=dg.with_source_code_references(assets))
