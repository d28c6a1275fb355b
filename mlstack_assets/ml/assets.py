"""ML-ready assets downstream of labeled_projects: dataset, stratified splits, a picture.

`ml_dataset` and `ml_splits` are SQL built here and materialized by the IO manager inside
the warehouse (see `warehouse/relations.py`); `tag_distribution` is a small pandas frame
of counts, stored through the same IO manager, with its bar chart in the metadata.
"""

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    AutomationCondition,
    Config,
    MetadataValue,
    Output,
    TableColumn,
    TableSchema,
    asset,
)
from pydantic import Field, model_validator

from mlstack_assets.ml import plot
from mlstack_assets.ml.sql import exclusions_sql, ml_dataset_sql, ml_splits_sql, split_counts_sql
from mlstack_assets.quality.suites import load_suite
from mlstack_assets.settings import Settings
from mlstack_assets.warehouse import Warehouse
from mlstack_assets.warehouse.relations import WarehouseQuery, WarehouseTable

ML_GROUP = "ml"
OWNER = "team:mlstack"


def known_tags() -> list[str]:
    """The classes the model learns: the same set the GX suites warn about."""
    return list(
        load_suite("labeled_projects").expectation("tag_is_known").config["kwargs"]["value_set"]
    )


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


def build_ml_assets(settings: Settings) -> list[AssetsDefinition]:
    kinds = {"python", settings.warehouse}
    pool = settings.warehouse_pool
    eager = AutomationCondition.eager()

    @asset(group_name=ML_GROUP, kinds=kinds, owners=[OWNER], pool=pool, automation_condition=eager)
    def ml_dataset(
        context: AssetExecutionContext, labeled_projects: WarehouseTable, warehouse: Warehouse
    ) -> Output[WarehouseQuery]:
        """ML: one row per project (id, created_on, text = title + description, tag).

        Rows with an unknown tag or no text are left out and counted in the metadata.
        """
        tags = known_tags()
        with warehouse.exclusive():
            [(total, unknown, empty)] = warehouse.query(
                exclusions_sql(labeled_projects.sql_name, warehouse.kind, tags)
            )
        for reason, count in (("unknown or missing tag", unknown), ("empty text", empty)):
            if count:
                context.log.warning(f"ml_dataset leaves out {count} rows: {reason}")
        query = WarehouseQuery(ml_dataset_sql(labeled_projects.sql_name, warehouse.kind, tags))
        return Output(
            query,
            metadata={
                "labeled_rows": total,
                "excluded_unknown_or_missing_tag": unknown,
                "excluded_empty_text": empty,
                "known_tags": MetadataValue.json(tags),
                "sql": MetadataValue.md(f"```sql\n{query.sql}\n```"),
            },
        )

    @asset(group_name=ML_GROUP, kinds=kinds, owners=[OWNER], pool=pool, automation_condition=eager)
    def ml_splits(
        context: AssetExecutionContext,
        config: SplitConfig,
        ml_dataset: WarehouseTable,
        warehouse: Warehouse,
    ) -> Output[WarehouseQuery]:
        """ML: ml_dataset with a `split` column (train / validation / test), stratified by tag."""
        sql = ml_splits_sql(
            ml_dataset.sql_name,
            warehouse.kind,
            config.seed,
            config.validation_fraction,
            config.test_fraction,
        )
        return Output(
            # the IO manager counts the built table's rows per split and tag
            WarehouseQuery(sql, count_by=("split", "tag")),
            metadata={
                "seed": config.seed,
                "fractions": MetadataValue.json(
                    {
                        "train": round(1 - config.validation_fraction - config.test_fraction, 4),
                        "validation": config.validation_fraction,
                        "test": config.test_fraction,
                    }
                ),
                "sql": MetadataValue.md(f"```sql\n{sql}\n```"),
            },
        )

    @asset(
        group_name=ML_GROUP,
        kinds={"pandas", settings.warehouse},
        owners=[OWNER],
        pool=pool,
        automation_condition=eager,
    )
    def tag_distribution(
        context: AssetExecutionContext, ml_splits: WarehouseTable, warehouse: Warehouse
    ) -> pd.DataFrame:
        """ML: projects per tag and split, as a table and a bar chart (in the metadata)."""
        with warehouse.exclusive():
            counts = warehouse.query(split_counts_sql(ml_splits.sql_name))
        table = plot.distribution_table(counts)
        path = settings.home / "plots" / "tag_distribution.png"
        plot.render(table, path)
        context.add_output_metadata(
            {
                "plot": MetadataValue.md(plot.markdown_image(path)),
                "plot_path": MetadataValue.path(str(path)),
                "counts": MetadataValue.md(plot.markdown_table(table)),
                "dagster/column_schema": TableSchema(
                    columns=[TableColumn(name, str(dtype)) for name, dtype in table.dtypes.items()]
                ),
            }
        )
        return table

    return [ml_dataset, ml_splits, tag_distribution]
