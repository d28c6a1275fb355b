"""Keep the graph current: rerun what depends on a source when that source changes.

`source_change_sensor` (running by default) fingerprints each source every interval.
When one changed, it requests a run of that raw asset and everything downstream of it,
keyed by the new fingerprint so the same change never launches two runs, and records an
observation of the source file (data version = fingerprint). When nothing changed it
skips, saying what it checked. A source it cannot reach is reported in one line (in the
tick's skip reason or log, and as an observation of that source's file asset naming the
error), keeps its place in the cursor for the next tick, and does not stop the others
from being checked: a change to one source is acted on while the other is down.
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
from mlstack_assets.ingestion.fingerprint import Fingerprint, fingerprint
from mlstack_assets.ingestion.sources import SourceError, SourceSpec
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
        if settings.source_sensor == "on"
        else DefaultSensorStatus.STOPPED,
        target=raw_assets.downstream(),
    )
    def source_change_sensor(context: SensorEvaluationContext) -> SensorResult:
        previous = json.loads(context.cursor) if context.cursor else {}
        seen: dict[str, Fingerprint] = {}
        unreachable: dict[str, str] = {}
        for spec in specs:
            try:
                seen[spec.name] = fingerprint(spec, previous.get(spec.name))
            except SourceError as error:  # this one waits for the next tick
                unreachable[spec.name] = str(error)
        state = {name: result.state for name, result in seen.items()}
        state |= {name: previous[name] for name in unreachable if name in previous}
        cursor = json.dumps(state)
        changed = {name: result.value for name, result in seen.items() if result.changed}
        problems = [
            AssetObservation(
                asset_key=source_file_key(spec),
                metadata={"unreachable": unreachable[spec.name]},
            )
            for spec in specs
            if spec.name in unreachable
        ]
        down = "; ".join(f"{name} unreachable: {why}" for name, why in unreachable.items())
        if down:
            context.log.warning(down)
        if not changed:
            checked = "; ".join(f"{name}: {result.how}" for name, result in seen.items())
            reason = f"no source changed ({checked})" if checked else "no source checked"
            return SensorResult(
                skip_reason=SkipReason(reason + (f"; {down}" if down else "")),
                cursor=cursor,
                asset_events=problems,
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
            asset_events=observations + problems,
            cursor=cursor,
        )

    return source_change_sensor
