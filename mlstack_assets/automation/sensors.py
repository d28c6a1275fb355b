"""Rerun what depends on a source when that source changes.

A changed source gets one run (keyed by its fingerprint) of its raw asset and everything
downstream, and an observation of its file. One it cannot reach is reported in one line and
an observation, keeps its cursor for the next tick, and does not stop the others' checks.
"""

import json

import dagster as dg

from mlstack_assets.ingestion.assets import source_file_key
from mlstack_assets.ingestion.fingerprint import Fingerprint, fingerprint
from mlstack_assets.ingestion.sources import SourceError, SourceSpec
from mlstack_assets.settings import Settings

DATA_VERSION_TAG = "dagster/data_version"  # how an observation carries its data version


def build_source_change_sensor(settings: Settings, specs: list[SourceSpec]) -> dg.SensorDefinition:
    """`source_change_sensor` over `specs`, running unless `MLSTACK_SOURCE_SENSOR=off`."""
    files = {spec.name: source_file_key(spec) for spec in specs}
    on = settings.source_sensor == "on"

    @dg.sensor(
        name="source_change_sensor",
        description=(
            "Fingerprints projects.csv and tags.csv (ETag / Last-Modified / size+mtime, then a"
            " content hash) and reruns a changed source's raw asset and everything downstream."
        ),
        minimum_interval_seconds=settings.sensor_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING if on else dg.DefaultSensorStatus.STOPPED,
        target=dg.AssetSelection.assets(*files).downstream(),
    )
    def source_change_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
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
            dg.AssetObservation(asset_key=files[name], metadata={"unreachable": why})
            for name, why in unreachable.items()
        ]
        down = "; ".join(f"{name} unreachable: {why}" for name, why in unreachable.items())
        if down:
            context.log.warning(down)
        if not changed:
            checked = "; ".join(f"{name}: {result.how}" for name, result in seen.items())
            reason = f"no source changed ({checked})" if checked else "no source checked"
            return dg.SensorResult(
                skip_reason=dg.SkipReason(reason + (f"; {down}" if down else "")),
                cursor=cursor,
                asset_events=problems,
            )
        selection = dg.AssetSelection.assets(*changed).downstream()
        keys = selection.resolve(context.repository_def.asset_graph)
        observations = [
            dg.AssetObservation(
                asset_key=files[name],
                tags={DATA_VERSION_TAG: value},
                metadata={"fingerprint": value, "checked_by": seen[name].how},
            )
            for name, value in changed.items()
        ]
        context.log.info(f"changed: {', '.join(sorted(changed))}; requesting {len(keys)} assets")
        # the same source versions always give the same run key, and Dagster runs a key once
        run_key = "sources:" + ";".join(
            f"{name}={value}" for name, value in sorted(changed.items())
        )
        return dg.SensorResult(
            run_requests=[dg.RunRequest(run_key=run_key, asset_selection=sorted(keys))],
            asset_events=observations + problems,
            cursor=cursor,
        )

    return source_change_sensor
