"""Run one GX suite against one warehouse table as a checkpoint on a SQL datasource: every
expectation is a query in the warehouse, so only metrics and a few sample rows come back."""

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
from mlstack_assets.quality.suites import Suite
from mlstack_assets.warehouse import Warehouse

SAMPLE_SIZE = 5
PUBLISHED = re.compile(r"\{published:(\w+)\}")


@dataclass
class Validation:
    """One suite's run: its outcomes (an `Audit`) and the Data Docs page it built."""

    audit: Audit
    data_docs: str | None


def _plain(value: Any) -> Any:
    """A sample as JSON metadata can hold: a failing check must never fail on its samples."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else str(value)
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_plain(item) for item in value]
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    binary = isinstance(value, bytes | bytearray)
    text = bytes(value).decode("utf-8", "backslashreplace") if binary else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _exception_message(exception_info: Any) -> str | None:
    """GX reports errors either flat or keyed by metric; return the first message."""
    exception_info = exception_info or {}
    infos = [exception_info] if "raised_exception" in exception_info else exception_info.values()
    for info in infos:
        if info.get("raised_exception") or info.get("exception_message"):
            message = (info.get("exception_message") or "").strip()
            return message.splitlines()[-1] if message else "GX raised an exception"
    return None


def _outcome(check: CheckOutcome, kind: str, result: Any, table: str) -> CheckOutcome:
    """`check` as its expectation's GX result (of type `kind`) says: passed, summary, metadata."""
    details = result.result or {}
    inner = details.get("details") or {}
    metadata: dict[str, Any] = {"table": table, "expectation": check.label}
    error = _exception_message(result.exception_info)
    if error:
        metadata["error"] = error
        return replace(check, summary=f"could not be evaluated: {error}", metadata=metadata)
    if "observed_value" in details:
        observed = {"value": _plain(details["observed_value"])}
        metadata["observed_value"] = MetadataValue.json(observed)
    notice = None
    if "unexpected_count" in details:  # a column expectation: the rows that failed, samples
        count, total = details["unexpected_count"], details.get("element_count", 0)
        percent = details.get("unexpected_percent") or 0.0
        samples = _plain(details.get("partial_unexpected_list") or [])[:SAMPLE_SIZE]
        indexed = _plain(details.get("partial_unexpected_index_list") or [])
        ids = [row.get("id") for row in indexed if isinstance(row, dict)][:SAMPLE_SIZE]
        metadata |= {
            "element_count": total,
            "unexpected_count": count,
            "unexpected_percent": float(percent),
            "sample_unexpected_values": MetadataValue.json(samples),
            "sample_unexpected_ids": MetadataValue.json(ids),
        }
        if details.get("unexpected_index_query") and count:
            query = details["unexpected_index_query"]
            metadata["unexpected_rows_query"] = MetadataValue.md(f"```sql\n{query}\n```")
        summary = f"{count} of {total} rows ({percent:.1f}%) unexpected"
        if count:
            summary += f"; e.g. ids {ids}" if any(i is not None for i in ids) else ""
            summary += f"; values {samples}"
    elif kind == "expect_table_columns_to_match_set":  # missing fails; extra ones are notices
        mismatched = inner.get("mismatched") or {}
        missing = mismatched.get("missing") or []
        extra = [c for c in mismatched.get("unexpected") or [] if not c.startswith("_airbyte_")]
        metadata["missing_columns"] = MetadataValue.json(missing)
        metadata["unexpected_columns"] = MetadataValue.json(extra)
        summary = f"missing columns {missing}" if missing else "all expected columns present"
        notice = f"unexpected columns {extra} (reported, not blocking)" if extra else None
        summary += f"; {notice}" if notice else ""
    elif "unexpected_rows" in inner or kind == "unexpected_rows_expectation":
        observed = details.get("observed_value", 0)
        metadata["unexpected_count"] = observed
        summary = f"{observed} rows unexpected"
        if "unexpected_rows" in inner:
            rows = _plain(inner["unexpected_rows"] or [])[:SAMPLE_SIZE]
            metadata["sample_unexpected_rows"] = MetadataValue.json(rows)
            summary += f"; e.g. {rows}" if observed else ""
    else:
        summary = f"observed {_plain(details.get('observed_value'))}"
    passed = bool(result.success)
    return replace(check, passed=passed, summary=summary, metadata=metadata, notice=notice)


def _with_sample_rows(outcome: CheckOutcome, query: str, warehouse: Warehouse) -> CheckOutcome:
    """GX returns such a query's rows only in COMPLETE format (all of them): ask for a few."""
    try:
        rows = warehouse.query(f"select * from ({query}) as unexpected limit {SAMPLE_SIZE}")
    except Exception:  # the samples illustrate a failure; they must not replace it
        return outcome
    samples = _plain([row[0] if len(row) == 1 else list(row) for row in rows])
    outcome = outcome.with_metadata(sample_unexpected_values=MetadataValue.json(samples))
    return replace(outcome, summary=outcome.summary + f"; e.g. {samples}") if samples else outcome


def _left_out(
    suite: Suite, warehouse: Warehouse, columns: set[str], empty: bool
) -> tuple[dict[str, Any], dict[str, tuple[bool, str]]]:
    """The suite GX runs, spelled for this warehouse, and per check it cannot run (passed, why):
    the column-set and row-count expectations already fail a missing column or an empty table;
    a table not published yet (an empty warehouse's first sync) leaves nothing to compare."""

    def quoted(text: str) -> str:  # as it reads inside a JSON string
        return json.dumps(text)[1:-1]

    text = json.dumps(suite.document).replace("{try_cast}", quoted(warehouse.dialect.try_cast))
    text = PUBLISHED.sub(lambda m: quoted(warehouse.qualified(warehouse.dataset, m[1])), text)
    document = json.loads(text)
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
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")  # unless set; GX reads it at import
    import great_expectations
    import great_expectations.checkpoint  # noqa: F401


def gx_table_asset(context: Any, warehouse: Warehouse, schema: str, table: str) -> tuple[Any, Any]:
    """A GX SQL datasource on `warehouse` and its table asset `<schema>.<table>`; the caller
    closes the engine. GX's metric queries run on that engine, set up as the warehouse says."""
    url = warehouse.sqlalchemy_url(schema)
    if warehouse.kind == "bigquery":
        datasource = context.data_sources.add_bigquery(name="warehouse", connection_string=url)
        return datasource, datasource.add_table_asset(name=table, table_name=table)
    from mlstack_assets.compat import gx_duckdb  # noqa: F401  registers add_mlstack_duckdb

    datasource = context.data_sources.add_mlstack_duckdb(name="warehouse", connection_string=url)
    warehouse.prepare_sqlalchemy_engine(datasource.get_execution_engine().engine)
    return datasource, datasource.add_table_asset(name=table, table_name=table, schema_name=schema)


def _run_checkpoint(
    warehouse: Warehouse, schema: str, table: str, document: dict, columns: set[str], site: Path
) -> tuple[Any, str | None]:
    """Run `document` as a GX checkpoint on `<schema>.<table>`: its result, Data Docs page."""
    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction

    from mlstack_assets.quality import data_docs

    context = gx.get_context(mode="ephemeral")
    store = {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(site)}
    index = {"class_name": "HistorySiteIndexBuilder", "module_name": data_docs.__name__}
    config = {"class_name": "SiteBuilder", "store_backend": store, "site_index_builder": index}
    context.add_data_docs_site("mlstack", config)
    context.delete_data_docs_site("local_site")
    data_docs.prune_history(site)
    datasource, table_asset = gx_table_asset(context, warehouse, schema, table)
    try:
        batch = table_asset.add_batch_definition_whole_table("whole table")
        gx_suite = context.suites.add(gx.ExpectationSuite(**document))
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(name=f"{schema}.{table}", data=batch, suite=gx_suite)
        )
        result_format = {"result_format": "SUMMARY", "partial_unexpected_count": SAMPLE_SIZE}
        # sample offending ids, when the table has an id to show
        result_format["unexpected_index_column_names"] = ["id"] if "id" in columns else []
        checkpoint = gx.Checkpoint(
            name=f"audit {schema}.{table}",
            validation_definitions=[definition],
            actions=[UpdateDataDocsAction(name="data_docs", site_names=["mlstack"])],
            result_format=result_format,
        )
        result = context.checkpoints.add(checkpoint).run()
    finally:
        datasource.get_execution_engine().close()
        datasource.get_engine().dispose()
    identifier, suite_result = next(iter(result.run_results.items()))
    urls = context.get_docs_sites_urls(resource_identifier=identifier, site_name="mlstack")
    return suite_result, urls[0]["site_url"] if urls else None


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
    columns = {name for name, _ in warehouse.table_columns(schema, table) or []}
    # before GX opens its connection (DuckDB allows one configuration per file and process)
    empty = warehouse.row_count(schema, table) == 0
    document, left_out = _left_out(suite, warehouse, columns, empty)
    results, docs = _run_checkpoint(warehouse, schema, table, document, columns, data_docs_dir)
    by_check = {r.expectation_config.meta["check"]: r for r in results.results}
    relation = warehouse.qualified(schema, table)
    outcomes = []
    for expectation in suite.expectations:
        name = expectation.check_name
        outcome = CheckOutcome(key, name, False, "", expectation.blocking, expectation.label)
        if name in left_out:
            passed, why = left_out[name]
            outcome = replace(outcome, passed=passed, summary=why, evaluated=False)
        else:
            kind = expectation.config["type"]
            outcome = _outcome(outcome, kind, by_check[name], f"{schema}.{table}")
            if not outcome.passed and kind == "unexpected_rows_expectation":
                query = by_check[name].expectation_config.kwargs["unexpected_rows_query"]
                outcome = _with_sample_rows(outcome, query.replace("{batch}", relation), warehouse)
        if docs:
            outcome = outcome.with_metadata(data_docs=MetadataValue.url(docs))
        outcomes.append(outcome)
    return Validation(Audit(outcomes), docs)
