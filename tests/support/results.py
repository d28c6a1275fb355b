"""What a test reads from a run and from the warehouse: materialized keys, failure
messages, check evaluations, and a byte-for-byte snapshot of every published table."""

from dagster import AssetKey

from tests.conftest import Stack

PUBLISHED = (
    "mlops_course.projects",
    "mlops_course.tags",
    "mlops_course.labeled_projects",
    "mlops_course.ml_dataset",
    "mlops_course.ml_splits",
    "mlops_course.tag_distribution",
)


def snapshot(stack: Stack) -> dict[str, list[tuple]]:
    return {table: stack.table_bytes(table) for table in PUBLISHED}


def checks(result, asset: str) -> dict[str, object]:
    return {
        e.check_name: e
        for e in result.get_asset_check_evaluations()
        if e.asset_key == AssetKey(asset)
    }


def materialized_keys(result) -> set[str]:
    return {event.asset_key.to_user_string() for event in result.get_asset_materialization_events()}


def failure_messages(result) -> str:
    """Every failed step's error message, with the errors it was caused by."""
    messages = []
    for event in result.all_events:
        if not event.is_step_failure:
            continue
        error = event.step_failure_data.error
        while error is not None:
            messages.append(error.message)
            error = error.cause
    return "\n".join(messages)


def materialization(result, asset: str):
    """The materialization of `asset` in `result` (whichever step materialized it)."""
    [event] = [
        e.materialization
        for e in result.get_asset_materialization_events()
        if e.asset_key == AssetKey(asset)
    ]
    return event
