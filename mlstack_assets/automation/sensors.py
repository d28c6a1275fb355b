"""Keep the graph current: rerun what depends on a source when that source changes.

`source_change_sensor` (running by default) fingerprints each source every interval.
When one changed, it requests a run of that raw asset and everything downstream of it,
keyed by the new fingerprint so the same change never launches two runs, and records an
observation of the source file (data version = fingerprint). When nothing changed it
skips, saying what it checked. When a source cannot be reached the tick fails with the
reason, the cursor stays as it was, and the next tick tries again.
"""

import json

from dagster import (
    AssetKey,
    AssetObservation,
    AssetSelection,
    DefaultSensorStatus,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from mlstack_assets.ingestion.assets import source_file_key
from mlstack_assets.ingestion.fingerprint import fingerprint
from mlstack_assets.ingestion.sources import SourceSpec
from mlstack_assets.settings import Settings

DATA_VERSION_TAG = "dagster/data_version"  # how an observation carries its data version


def run_key(changes: dict[str, str]) -> str:
    """The same set of source versions always gives the same key (Dagster runs a key once)."""
    return "sources:" + ";".join(f"{name}={value}" for name, value in sorted(changes.items()))


def build_source_change_sensor(settings: Settings, specs: list[SourceSpec]) -> SensorDefinition:
    raw_assets = AssetSelection.assets(*(AssetKey(spec.name) for spec in specs))

    @sensor(
        name="source_change_sensor",
        description=(
            "Fingerprints projects.csv and tags.csv (ETag / Last-Modified / size+mtime, then a"
            " content hash) and reruns a changed source's raw asset and everything downstream."
        ),
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=DefaultSensorStatus.RUNNING
        if settings.source_sensor_on
        else DefaultSensorStatus.STOPPED,
        target=raw_assets.downstream(),
    )
    def source_change_sensor(context: SensorEvaluationContext) -> SensorResult:
        previous = json.loads(context.cursor) if context.cursor else {}
        # A SourceError raised here fails the tick with its message; the cursor is kept.
        seen = {spec.name: fingerprint(spec, previous.get(spec.name)) for spec in specs}
        cursor = json.dumps({name: result.state for name, result in seen.items()})
        changed = {name: result.value for name, result in seen.items() if result.changed}
        if not changed:
            checked = "; ".join(f"{name}: {result.how}" for name, result in seen.items())
            return SensorResult(
                skip_reason=SkipReason(f"no source changed ({checked})"), cursor=cursor
            )
        selection = AssetSelection.assets(*(AssetKey(name) for name in changed)).downstream()
        keys = selection.resolve(context.repository_def.asset_graph)
        observations = [
            AssetObservation(
                asset_key=source_file_key(spec),
                tags={DATA_VERSION_TAG: changed[spec.name]},
                metadata={"fingerprint": changed[spec.name], "checked_by": seen[spec.name].how},
            )
            for spec in specs
            if spec.name in changed
        ]
        context.log.info(f"changed: {', '.join(sorted(changed))}; requesting {len(keys)} assets")
        return SensorResult(
            run_requests=[RunRequest(run_key=run_key(changed), asset_selection=sorted(keys))],
            asset_events=observations,
            cursor=cursor,
        )

    return source_change_sensor
