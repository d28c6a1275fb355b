"""The source-change sensor, tick by tick, on a real instance (`build_sensor_context`)."""

import json
import time

import pytest
from dagster import AssetKey, build_sensor_context

from tests.conftest import Stack
from tests.support.fixture_data import PROJECT_TAGS, write_tags
from tests.support.graph import ALL_DOWNSTREAM, TAGS_DOWNSTREAM, touch_later
from tests.support.https_server import HTTPSServer, Route


class Ticker:
    """Evaluates the sensor the way the daemon does, carrying the cursor between ticks."""

    def __init__(self, stack: Stack):
        self.stack = stack
        self.cursor: str | None = None

    def tick(self, cursor: str | None = ...):
        defs = self.stack.definitions()
        sensor = defs.get_sensor_def("source_change_sensor")
        with build_sensor_context(
            instance=self.stack.instance,
            cursor=self.cursor if cursor is ... else cursor,
            repository_def=defs.get_repository_def(),
        ) as context:
            data = sensor.evaluate_tick(context)
        self.cursor = data.cursor
        return data


def selected(data) -> set[str]:
    [request] = data.run_requests
    return {key.to_user_string() for key in request.asset_selection}


def test_first_tick_requests_everything_and_observes_both_sources(stack: Stack):
    data = Ticker(stack).tick()

    assert selected(data) == ALL_DOWNSTREAM
    assert data.run_requests[0].run_key.startswith("sources:projects=sha256:")
    observed = {e.asset_key: e.tags["dagster/data_version"] for e in data.asset_events}
    assert set(observed) == {AssetKey("projects_csv"), AssetKey("tags_csv")}
    assert all(version.startswith("sha256:") for version in observed.values())


def test_unchanged_sources_skip_with_what_was_checked(stack: Stack):
    ticker = Ticker(stack)
    ticker.tick()

    data = ticker.tick()

    assert data.run_requests == []
    assert data.skip_message == (
        "no source changed (projects: size and mtime unchanged; tags: size and mtime unchanged)"
    )


def test_changed_local_file_requests_that_source_and_its_downstream_only(stack: Stack):
    ticker = Ticker(stack)
    ticker.tick()
    write_tags(stack.root / "src" / "tags.csv", {**PROJECT_TAGS, 6: "mlops"})
    touch_later(stack.root / "src" / "tags.csv")

    data = ticker.tick()

    assert selected(data) == TAGS_DOWNSTREAM
    assert data.run_requests[0].run_key.startswith("sources:tags=sha256:")
    assert [e.asset_key for e in data.asset_events] == [AssetKey("tags_csv")]


def test_the_same_change_seen_twice_gets_one_run_key(stack: Stack):
    ticker = Ticker(stack)
    ticker.tick()
    before_change = ticker.cursor
    write_tags(stack.root / "src" / "tags.csv", {**PROJECT_TAGS, 6: "mlops"})
    touch_later(stack.root / "src" / "tags.csv")

    first = ticker.tick(before_change)
    second = ticker.tick(before_change)  # e.g. a tick retried before its cursor was saved

    assert first.run_requests[0].run_key == second.run_requests[0].run_key


def test_a_touched_but_identical_file_is_not_a_change(stack: Stack):
    ticker = Ticker(stack)
    ticker.tick()
    touch_later(stack.root / "src" / "projects.csv")

    data = ticker.tick()

    assert data.run_requests == []
    assert "projects: content hash unchanged" in data.skip_message
    assert ticker.tick().skip_message.startswith("no source changed (projects: size and mtime")


def test_an_unreachable_source_is_one_line_and_the_other_is_still_checked(stack: Stack):
    ticker = Ticker(stack)
    ticker.tick()
    tags_state = json.loads(ticker.cursor)["tags"]
    stack.set_source("tags", stack.root / "gone.csv")

    down = ticker.tick()

    assert down.run_requests == []
    [line] = [part for part in down.skip_message.split("; ") if "unreachable" in part]
    assert line.startswith("tags unreachable: source 'tags'") and "file not found" in line
    assert "\n" not in down.skip_message and "projects: size and mtime" in down.skip_message
    [observed] = down.asset_events
    assert observed.asset_key.path == ["tags_csv"] and "file not found" in str(
        observed.metadata["unreachable"].value
    )
    assert json.loads(ticker.cursor)["tags"] == tags_state  # tried again next tick
    # a change to projects while tags is down is still acted on
    projects = stack.root / "src" / "projects.csv"
    projects.write_bytes(projects.read_bytes() + b'99,2021-01-01 00:00:00,"A title","Text"\n')

    changed = ticker.tick()

    assert selected(changed) >= {"projects"} and "tags" not in selected(changed)


@pytest.mark.parametrize("validators", ["etag", "last-modified", "none"])
def test_https_source_is_checked_with_conditional_requests(
    stack: Stack, https_server: HTTPSServer, validators: str
):
    body = (stack.root / "src" / "tags.csv").read_bytes()
    route = Route(
        body=body,
        etag='"v1"' if validators == "etag" else None,
        last_modified=time.time() - 60 if validators == "last-modified" else None,
    )
    https_server.routes["/tags.csv"] = route
    stack.set_source("tags", https_server.url("/tags.csv"))
    ticker = Ticker(stack)
    assert "tags" in selected(ticker.tick())

    unchanged = ticker.tick()

    how = {
        "etag": "304 Not Modified",
        "last-modified": "304 Not Modified",
        "none": "content hash unchanged",
    }[validators]
    assert unchanged.run_requests == [] and f"tags: {how}" in unchanged.skip_message
    sent = https_server.requests[-1][2]
    assert ("If-None-Match" in sent) == (validators == "etag")
    assert ("If-Modified-Since" in sent) == (validators == "last-modified")

    route.body = body + b"40,mlops\n"
    route.etag = '"v2"' if validators == "etag" else None
    route.last_modified = time.time() if validators == "last-modified" else None
    changed = ticker.tick()

    assert selected(changed) == TAGS_DOWNSTREAM
