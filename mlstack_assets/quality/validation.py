"""Run one GX suite against one warehouse table, inside the warehouse, once.

The suite runs as a GX checkpoint on a SQL datasource (DuckDB or BigQuery), so every
expectation is a query in the warehouse; only metric values and up to five sample rows
come back. The checkpoint also builds the local Data Docs. Each expectation becomes an
`CheckOutcome` of the asset (`outcomes.py`), as every check that audits a publish is.
"""

import datetime as dt
import json
import math
import os
import re
from dataclasses import dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

from dagster import AssetKey, MetadataValue

from mlstack_assets.quality.outcomes import Audit, CheckOutcome
from mlstack_assets.quality.suites import Expectation, Suite
from mlstack_assets.warehouse import Warehouse

SAMPLE_SIZE = 5


def _cut(text: str) -> str:
    return text if len(text) <= 80 else text[:77] + "..."


def _plain(value: Any) -> Any:
    """Any sampled value as JSON Dagster metadata can hold: numbers and text as they are
    (long text cut), whole Decimals as ints, and everything else (dates, times, other
    Decimals, bytes, UUIDs...) as text. A failing check must never fail on its samples."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, str):
        return _cut(value)
    if isinstance(value, bytes | bytearray):
        return _cut(bytes(value).decode("utf-8", "backslashreplace"))
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    return _cut(str(value))


def _exception_message(exception_info: Any) -> str | None:
    """GX reports errors either flat or keyed by metric; return the first message."""
    if not exception_info:
        return None
    infos = [exception_info] if "raised_exception" in exception_info else exception_info.values()
    for info in infos:
        if info.get("raised_exception") or info.get("exception_message"):
            message = (info.get("exception_message") or "").strip()
            return message.splitlines()[-1] if message else "GX raised an exception"
    return None


def _expectation_outcome(
    key: AssetKey,
    expectation: Expectation,
    passed: bool,
    summary: str,
    metadata: dict[str, Any] | None = None,
    notice: str | None = None,
    evaluated: bool = True,
) -> CheckOutcome:
    return CheckOutcome(
        asset_key=key,
        name=expectation.check_name,
        passed=passed,
        summary=summary,
        blocking=expectation.blocking,
        label=expectation.label,
        metadata=metadata or {},
        evaluated=evaluated,
        notice=notice,
    )


def _summarize_unexpected_values(details: dict[str, Any], metadata: dict[str, Any]) -> str:
    """A column expectation: how many rows failed, with sample ids and values."""
    count, total = details["unexpected_count"], details.get("element_count", 0)
    percent = details.get("unexpected_percent") or 0.0
    samples = _plain(details.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]
    ids = [
        row.get("id")
        for row in _plain(details.get("partial_unexpected_index_list") or [])
        if isinstance(row, dict)
    ][:SAMPLE_SIZE]
    metadata |= {
        "element_count": total,
        "unexpected_count": count,
        "unexpected_percent": float(percent),
        "sample_unexpected_values": MetadataValue.json(samples),
        "sample_unexpected_ids": MetadataValue.json(ids),
    }
    if details.get("unexpected_index_query") and count:
        metadata["unexpected_rows_query"] = MetadataValue.md(
            f"```sql\n{details['unexpected_index_query']}\n```"
        )
    summary = f"{count} of {total} rows ({percent:.1f}%) unexpected"
    if count:
        summary += f"; e.g. ids {ids}" if any(i is not None for i in ids) else ""
        summary += f"; values {samples}"
    return summary


def _columns_outcome(
    key: AssetKey,
    expectation: Expectation,
    result: Any,
    details: dict[str, Any],
    metadata: dict[str, Any],
) -> CheckOutcome:
    """The column set: a missing column fails; an extra one (not Airbyte's) is a notice."""
    mismatched = (details.get("details") or {}).get("mismatched") or {}
    missing = mismatched.get("missing") or []
    extra = [c for c in mismatched.get("unexpected") or [] if not c.startswith("_airbyte_")]
    metadata |= {
        "missing_columns": MetadataValue.json(missing),
        "unexpected_columns": MetadataValue.json(extra),
    }
    summary = f"missing columns {missing}" if missing else "all expected columns present"
    notice = f"unexpected columns {extra} (reported, not blocking)" if extra else None
    summary += f"; {notice}" if notice else ""
    return _expectation_outcome(
        key, expectation, bool(result.success), summary, metadata, notice=notice
    )


def _summarize_unexpected_rows(details: dict[str, Any], metadata: dict[str, Any]) -> str:
    """An unexpected-rows query: how many rows it found, with a few of them when GX has them."""
    observed = details.get("observed_value", 0)
    metadata["unexpected_count"] = observed
    rows = _plain(((details.get("details") or {}).get("unexpected_rows")) or [])[:SAMPLE_SIZE]
    if "unexpected_rows" not in (details.get("details") or {}):
        return f"{observed} rows unexpected"
    metadata["sample_unexpected_rows"] = MetadataValue.json(rows)
    return f"{observed} rows unexpected" + (f"; e.g. {rows}" if observed else "")


def _outcome(key: AssetKey, expectation: Expectation, result: Any, table: str) -> CheckOutcome:
    """One expectation's GX result as a check outcome: passed, a one-line summary, metadata."""
    details = result.result or {}
    metadata: dict[str, Any] = {"table": table, "expectation": expectation.label}
    error = _exception_message(result.exception_info)
    if error:
        metadata["error"] = error
        return _expectation_outcome(
            key, expectation, False, f"could not be evaluated: {error}", metadata
        )
    if "observed_value" in details:
        metadata["observed_value"] = MetadataValue.json(
            {"value": _plain(details["observed_value"])}
        )
    kind = expectation.config["type"]
    if "unexpected_count" in details:
        summary = _summarize_unexpected_values(details, metadata)
    elif kind == "expect_table_columns_to_match_set":
        return _columns_outcome(key, expectation, result, details, metadata)
    elif "unexpected_rows" in (details.get("details") or {}) or kind == (
        "unexpected_rows_expectation"
    ):
        summary = _summarize_unexpected_rows(details, metadata)
    else:
        summary = f"observed {_plain(details.get('observed_value'))}"
    return _expectation_outcome(key, expectation, bool(result.success), summary, metadata)


def _with_sample_rows(
    outcome: CheckOutcome, config: dict[str, Any], warehouse: Warehouse, relation: str
) -> CheckOutcome:
    """GX returns an unexpected-rows query's rows only in COMPLETE format, which would bring
    every offending row into Python; ask the warehouse for a few instead."""
    query = config["kwargs"]["unexpected_rows_query"].replace("{batch}", relation)
    try:
        rows = warehouse.query(f"select * from ({query}) as unexpected limit {SAMPLE_SIZE}")
    except Exception:  # the samples illustrate a failure; they must not replace it
        return outcome
    samples = _plain([row[0] if len(row) == 1 else list(row) for row in rows])
    outcome = outcome.with_metadata(sample_unexpected_values=MetadataValue.json(samples))
    return replace(outcome, summary=outcome.summary + f"; e.g. {samples}") if samples else outcome


@dataclass
class Validation:
    """One suite's run: its outcomes (an `Audit`) and the Data Docs page it built."""

    audit: Audit
    data_docs: str | None

    @property
    def outcomes(self) -> list[CheckOutcome]:
        return self.audit.outcomes


PUBLISHED = re.compile(r"\{published:(\w+)\}")


def _suite_document(suite: Suite, warehouse: Warehouse) -> dict[str, Any]:
    """The suite as GX runs it here: `{try_cast}` spelled for this warehouse, and
    `{published:<table>}` naming `<dataset>.<table>` (a check against another source's
    published table, e.g. every published project has a tag)."""

    def spelled(value: Any) -> Any:
        if isinstance(value, str):
            value = value.replace("{try_cast}", warehouse.dialect.try_cast)
            return PUBLISHED.sub(
                lambda m: warehouse.qualified(warehouse.dataset, m.group(1)), value
            )
        if isinstance(value, dict):
            return {key: spelled(item) for key, item in value.items()}
        if isinstance(value, list):
            return [spelled(item) for item in value]
        return value

    return spelled(suite.document)


def _left_out(
    suite: Suite,
    document: dict[str, Any],
    warehouse: Warehouse,
    columns: set[str],
    empty: bool,
) -> tuple[dict[str, Any], dict[str, tuple[bool, str]]]:
    """The expectations that cannot run here, and why, out of the document GX runs:
    - one reading a column the table does not have: it fails, "not evaluated: column id
      is missing" (the column-set expectation says what is missing, once);
    - one reading the rows of an empty table: it fails, "not evaluated: the table is
      empty" (the row-count expectation says so);
    - one comparing with a table not published yet (the first sync of an empty
      warehouse): it passes, saying there is nothing to compare with.
    Returns the document to run and, per left-out check, (passed, why)."""
    left: dict[str, tuple[bool, str]] = {}
    kept = []
    for expectation, config in zip(suite.expectations, document["expectations"], strict=True):
        missing = [c for c in expectation.columns if c not in columns]
        tables = PUBLISHED.findall(json.dumps(expectation.config))
        absent = [t for t in tables if warehouse.table_columns(warehouse.dataset, t) is None]
        if missing:
            left[expectation.check_name] = (False, f"not evaluated: column {missing[0]} is missing")
        elif empty and expectation.reads_rows:
            left[expectation.check_name] = (False, "not evaluated: the table is empty")
        elif absent:
            why = f"nothing to compare with: {warehouse.dataset}.{absent[0]} is not published yet"
            left[expectation.check_name] = (True, why)
        else:
            kept.append(config)
    return {**document, "expectations": kept}, left


def import_great_expectations() -> None:
    """Import GX ahead of the first audit (it takes seconds), e.g. while a connector reads."""
    # GX's own variable, set (unless the user set it) before GX reads it at import
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    import great_expectations
    import great_expectations.checkpoint  # noqa: F401


def _gx_context(data_docs_dir: Path) -> Any:
    """An ephemeral GX context whose Data Docs go to `data_docs_dir` (with run history)."""
    import great_expectations as gx

    from mlstack_assets.quality.data_docs import prune_history

    context = gx.get_context(mode="ephemeral")
    context.add_data_docs_site(
        "mlstack",
        {
            "class_name": "SiteBuilder",
            "store_backend": {
                "class_name": "TupleFilesystemStoreBackend",
                "base_directory": str(data_docs_dir),
            },
            "site_index_builder": {
                "class_name": "HistorySiteIndexBuilder",
                "module_name": "mlstack_assets.quality.data_docs",
            },
        },
    )
    context.delete_data_docs_site("local_site")
    prune_history(data_docs_dir)
    return context


def gx_table_asset(context: Any, warehouse: Warehouse, schema: str, table: str) -> tuple[Any, Any]:
    """A GX SQL datasource on `warehouse`, and its table asset for `<schema>.<table>`; the
    caller closes the datasource's engine. From the warehouse GX asks only its SQLAlchemy
    URL and the set-up every engine on it needs (DuckDB's memory cap)."""
    url = warehouse.sqlalchemy_url(schema)
    if warehouse.kind == "bigquery":
        datasource = context.data_sources.add_bigquery(name="warehouse", connection_string=url)
        return datasource, datasource.add_table_asset(name=table, table_name=table)
    from mlstack_assets.compat import gx_duckdb  # noqa: F401  registers add_mlstack_duckdb

    datasource = context.data_sources.add_mlstack_duckdb(name="warehouse", connection_string=url)
    # GX's metric queries run on its execution engine's own SQLAlchemy engine
    warehouse.prepare_sqlalchemy_engine(datasource.get_execution_engine().engine)
    return datasource, datasource.add_table_asset(name=table, table_name=table, schema_name=schema)


def _run_checkpoint(
    context: Any,
    warehouse: Warehouse,
    schema: str,
    table: str,
    document: dict[str, Any],
    index_columns: list[str],
) -> Any:
    """The suite `document` as a GX checkpoint on `<schema>.<table>`, in the warehouse."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    datasource, table_asset = gx_table_asset(context, warehouse, schema, table)
    try:
        batch = table_asset.add_batch_definition_whole_table("whole table")
        gx_suite = context.suites.add(gx.ExpectationSuite(**document))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{schema}.{table}", data=batch, suite=gx_suite)
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=f"audit {schema}.{table}",
                validation_definitions=[definition],
                actions=[UpdateDataDocsAction(name="data_docs", site_names=["mlstack"])],
                result_format={
                    "result_format": "SUMMARY",
                    "partial_unexpected_count": SAMPLE_SIZE,
                    "unexpected_index_column_names": index_columns,
                },
            )
        )
        return checkpoint.run()
    finally:
        datasource.get_execution_engine().close()
        datasource.get_engine().dispose()


def validate_table(
    warehouse: Warehouse,
    schema: str,
    table: str,
    suite: Suite,
    data_docs_dir: Path,
    asset_key: AssetKey | None = None,
) -> Validation:
    """Validate `<schema>.<table>` with `suite` in the warehouse; build Data Docs locally.
    The outcomes are `asset_key`'s checks (default: the asset named as the suite)."""
    key = asset_key or AssetKey(suite.name)
    import_great_expectations()
    context = _gx_context(data_docs_dir)
    columns = {name for name, _ in warehouse.table_columns(schema, table) or []}
    # before GX opens its connection (DuckDB allows one configuration per file and process)
    empty = warehouse.row_count(schema, table) == 0
    document, left_out = _left_out(
        suite, _suite_document(suite, warehouse), warehouse, columns, empty
    )
    # sample offending ids, when the table has an id to show
    result = _run_checkpoint(
        context, warehouse, schema, table, document, ["id"] if "id" in columns else []
    )
    identifier, suite_result = next(iter(result.run_results.items()))
    by_check = {r.expectation_config.meta["check"]: r for r in suite_result.results}
    outcomes = [
        _outcome(key, expectation, by_check[expectation.check_name], f"{schema}.{table}")
        if expectation.check_name in by_check
        else _expectation_outcome(
            key, expectation, *left_out[expectation.check_name], evaluated=False
        )
        for expectation in suite.expectations
    ]
    configs = {config["meta"]["check"]: config for config in document["expectations"]}
    relation = warehouse.qualified(schema, table)
    outcomes = [
        _with_sample_rows(outcome, configs[outcome.name], warehouse, relation)
        if not outcome.passed
        and configs.get(outcome.name, {}).get("type") == "unexpected_rows_expectation"
        else outcome
        for outcome in outcomes
    ]
    urls = context.get_docs_sites_urls(resource_identifier=identifier, site_name="mlstack")
    data_docs = urls[0]["site_url"] if urls else None
    if data_docs:
        outcomes = [o.with_metadata(data_docs=MetadataValue.url(data_docs)) for o in outcomes]
    return Validation(audit=Audit(outcomes), data_docs=data_docs)
