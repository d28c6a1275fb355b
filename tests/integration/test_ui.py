"""The Dagster UI as users meet it: a real `dg dev` on loopback, GraphQL and a browser.

One `dg dev` (`make dev`'s command: webserver + daemon) serves the tests, on a temporary
DAGSTER_HOME and DuckDB file, with the fixture sources. The browser test drives Debian's
Chromium with Playwright (`make test` installs Chromium); it is skipped only when no
Chromium exists.
"""

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pytest
import requests

from mlstack_assets.cli import dg_environment
from tests.conftest import REPO_ROOT
from tests.support.fixture_data import PROJECTS, write_projects, write_tags
from tests.support.processes import dagster_home, stop

pytestmark = pytest.mark.slow
ARTIFACTS = REPO_ROOT / "test-artifacts"
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@dataclass
class DagsterDev:
    url: str
    home: Path
    log: Path
    lake: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        response = requests.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        response.raise_for_status()
        body = response.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def dagster_dev(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DagsterDev]:
    """`make dev`'s command on a free loopback port; stopped, with its children, at the end."""
    root = tmp_path_factory.mktemp("ui")
    home = dagster_home(root / "dagster_home")
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "MLSTACK_DUCKDB_PATH": str(root / "warehouse.duckdb"),
        "MLSTACK_LAKE": str(root / "lake"),
        "MLSTACK_WAREHOUSE": "duckdb",
        "MLSTACK_AIRBYTE": "embedded",
        "MLSTACK_PROJECTS_URL": str(write_projects(root / "src" / "projects.csv")),
        "MLSTACK_TAGS_URL": str(write_tags(root / "src" / "tags.csv")),
        "MLSTACK_SOURCE_SENSOR": "off",  # the test clicks "Materialize all" itself
    }
    log = root / "dagster_dev.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "dg"),
                "dev",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            cwd=REPO_ROOT,
            env=dg_environment(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = DagsterDev(url=f"http://127.0.0.1:{port}", home=home, log=log, lake=root / "lake")
    try:
        deadline = time.monotonic() + 300
        while True:
            assert process.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, (
                "dagster dev did not come up\n" + log.read_text()[-4000:]
            )
            try:
                loaded = server.graphql(
                    "{ workspaceOrError { ... on Workspace { locationEntries {"
                    " loadStatus locationOrLoadError { __typename } } } } }"
                )
                entries = loaded["workspaceOrError"]["locationEntries"]
                if entries and all(e["loadStatus"] == "LOADED" for e in entries):
                    assert (
                        entries[0]["locationOrLoadError"]["__typename"] == "RepositoryLocation"
                    ), log.read_text()[-4000:]
                    break
            except requests.RequestException:
                pass
            time.sleep(1)
        yield server
    finally:
        stop(process, grace=60)


ASSET_NODES = """
{ assetNodes {
    assetKey { path }
    dependencyKeys { path }
    groupName
    kinds
    description
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    metadataEntries { label }
    assetChecksOrError { ... on AssetChecks { checks { name blocking description } } }
} }
"""


def test_dg_dev_serves_the_project_without_supersession_or_deprecation_warnings(
    dagster_dev: DagsterDev,
):
    served = dagster_dev.graphql(
        "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
    )
    names = [e["name"] for e in served["workspaceOrError"]["locationEntries"]]
    assert names == ["mlstack"]
    log = dagster_dev.log.read_text().lower()
    assert "superseded" not in log and "deprecat" not in log, log[-3000:]
    assert "virtual environment does not match" not in log
    # nothing a user cannot act on: no dagster.yaml in the folder next to DAGSTER_HOME's
    assert "found a dagster instance configuration value" not in log


def test_graphql_shows_the_lineage_groups_and_checks(dagster_dev: DagsterDev):
    nodes = {
        "/".join(n["assetKey"]["path"]): n for n in dagster_dev.graphql(ASSET_NODES)["assetNodes"]
    }

    edges = {("/".join(d["path"]), key) for key, n in nodes.items() for d in n["dependencyKeys"]}
    assert {
        ("projects_csv", "projects"),
        ("tags_csv", "tags"),
        ("projects", "stg_mlops_course__projects"),
        ("tags", "stg_mlops_course__tags"),
        ("stg_mlops_course__projects", "labeled_projects"),
        ("stg_mlops_course__tags", "labeled_projects"),
        ("labeled_projects", "ml_dataset"),
        ("ml_dataset", "ml_splits"),
        ("ml_splits", "tag_distribution"),
    } <= edges
    groups = {key: n["groupName"] for key, n in nodes.items()}
    assert groups["projects"] == groups["tags_csv"] == "ingestion"
    assert groups["labeled_projects"] == "transform"
    assert groups["ml_splits"] == "ml"
    assert {"airbyte", "duckdb", "great_expectations"} <= set(nodes["projects"]["kinds"])
    assert {"dbt", "duckdb", "great_expectations"} <= set(nodes["labeled_projects"]["kinds"])
    assert "pandas" in nodes["tag_distribution"]["kinds"]
    for key, node in nodes.items():
        assert node["description"], key
        assert node["owners"] == [{"team": "mlstack"}], key
        if key not in ("projects_csv", "tags_csv"):
            labels = {entry["label"] for entry in node["metadataEntries"]}
            assert "dagster/code_references" in labels, key
    checks = {
        key: {c["name"]: c for c in n["assetChecksOrError"]["checks"]} for key, n in nodes.items()
    }
    assert {"id_is_unique", "title_description_are_unique", "row_count_is_positive"} <= set(
        checks["projects"]
    )
    assert {"id_is_unique", "tag_is_known"} <= set(checks["tags"])
    assert {"tag_is_not_null", "unique_labeled_projects_id"} <= set(checks["labeled_projects"])
    assert checks["tags"]["id_is_unique"]["blocking"]
    assert not checks["tags"]["tag_is_known"]["blocking"]
    assert "expect_column_values_to_be_unique" in checks["tags"]["id_is_unique"]["description"]


LAUNCH_ALL = """
mutation { launchPipelineExecution(executionParams: {
    selector: { repositoryLocationName: "mlstack", repositoryName: "__repository__",
                jobName: "__ASSET_JOB" } }) {
    __typename ... on PythonError { message } ... on InvalidStepError { invalidStepKey }
} }
"""
RESTORED = """
query ($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
    assetMaterializations(limit: 1) { metadataEntries { label ... on TextMetadataEntry { text } } }
} } }
"""
RUNS = """
{ runsOrError(limit: 10) { ... on Runs { results {
    runId jobName status assetSelection { path } assetCheckSelection { name }
} } } }
"""
LATEST = """
query ($key: AssetKeyInput!) { assetNodeOrError(assetKey: $key) { ... on AssetNode {
    assetMaterializations(limit: 1) {
        metadataEntries { label ... on IntMetadataEntry { intValue } }
    }
    assetChecksOrError { ... on AssetChecks { checks { name executionForLatestMaterialization {
        status evaluation { success } } } } }
} } }
"""


def open_asset_graph(browser, url: str):
    """The global lineage in a fresh browser context: navigation and group list hidden, every
    group expanded, zoomed in until each asset shows its status, checks and kinds (this is
    the README's screenshot). Returns the page."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
    from playwright.sync_api import expect

    page = browser.new_context(viewport={"width": 1920, "height": 1000}).new_page()
    # Dagster's first-visit newsletter dialog opens when it likes (seconds late on a busy
    # machine) and covers the page: skip it whenever it shows up before an action
    skip = page.get_by_role("button", name="Skip")
    page.add_locator_handler(skip, lambda: skip.click())
    page.goto(f"{url}/asset-groups", wait_until="networkidle")
    page.get_by_role("button", name="Hide navigation").click()
    page.get_by_role("button", name="panel_show_right", exact=True).click()
    settings = page.get_by_role("button", name="settings", exact=True).last
    expand = page.get_by_role("menuitem", name="Expand all groups")
    collapse = page.get_by_role("menuitem", name="Collapse all groups")
    for _ in range(3):  # the dialog's "Skip" also closes an open menu: open it again
        settings.click()
        try:
            expect(expand.or_(collapse)).to_be_visible(timeout=5_000)
            if expand.count():
                expand.click(timeout=5_000)
            break
        except (AssertionError, PlaywrightTimeoutError):
            continue
    page.keyboard.press("Escape")
    page.wait_for_timeout(1_000)
    for _ in range(5):  # zoom in until the nodes show their details
        if page.get_by_text("Latest event").count():
            break
        page.get_by_role("button", name="zoom_in").click()
        page.wait_for_timeout(800)
    return page


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def need_chromium() -> str:
    found = chromium()
    if found is None:
        message = "no Chromium on this machine (`make test` installs Debian's chromium)"
        if in_ci():  # CI must run the browser test, not count a skip as a pass
            pytest.fail(message)
        pytest.skip(message)
    return found


def wait_for_run(dagster_dev: DagsterDev, seconds: float = 420, job: str | None = None) -> dict:
    """The latest run (of `job`, if given) once it has ended. With `job`: the Launchpad's
    page shows the op's name before its run exists, so the latest run may still be the
    previous one."""
    deadline = time.monotonic() + seconds
    while True:
        runs = dagster_dev.graphql(RUNS)["runsOrError"]["results"]
        if job is not None:
            runs = [run for run in runs if run["jobName"] == job]
        if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
            return runs[0]
        assert time.monotonic() < deadline, f"run did not finish: {runs}"
        time.sleep(2)


@contextmanager
def browser_page(failure: str) -> Iterator[Any]:
    """A Chromium page on a large viewport, Dagster's "Skip" prompts dismissed; a screenshot
    to `test-artifacts/<failure>` when the block fails."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1920, "height": 1000})
        skip = page.get_by_role("button", name="Skip")
        page.add_locator_handler(skip, lambda: skip.click())
        try:
            yield page
        except Exception:
            page.screenshot(path=ARTIFACTS / failure, full_page=True)
            raise
        finally:
            browser.close()


def test_materialize_all_from_the_browser(dagster_dev: DagsterDev):
    need_chromium()
    from playwright.sync_api import expect, sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium(), args=CHROMIUM_FLAGS)
        page = browser.new_page(viewport={"width": 1920, "height": 1000})
        try:
            page = open_asset_graph(browser, dagster_dev.url)
            for name in ("projects", "tags", "labeled_projects", "ml_splits"):
                expect(page.get_by_text(name, exact=True).first).to_be_visible(timeout=60_000)
            page.screenshot(path=ARTIFACTS / "asset_graph_before.png")

            page.get_by_role("button", name="Materialize all").click()
            expect(page.get_by_text("Launched run")).to_be_visible(timeout=60_000)
            deadline = time.monotonic() + 420
            while True:
                runs = dagster_dev.graphql(RUNS)["runsOrError"]["results"]
                if runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED"):
                    break
                assert time.monotonic() < deadline, f"run did not finish: {runs}"
                time.sleep(2)
            assert runs[0]["status"] == "SUCCESS", dagster_dev.log.read_text()[-4000:]

            page = open_asset_graph(browser, dagster_dev.url)
            expect(page.get_by_text("Materialized").first).to_be_visible(timeout=60_000)
            # labeled_projects: 6 dbt tests, 15 GX expectations, the volume guard
            expect(page.get_by_text("22 / 22 Passed")).to_be_visible()
            page.screenshot(path=ARTIFACTS / "asset_graph.png")

            page.goto(f"{dagster_dev.url}/assets/labeled_projects", wait_until="networkidle")
            expect(page.get_by_text("Row count").first).to_be_visible(timeout=60_000)
            expect(page.get_by_text(str(len(PROJECTS)), exact=True).first).to_be_visible()
            page.screenshot(path=ARTIFACTS / "labeled_projects.png", full_page=True)
            page.goto(
                f"{dagster_dev.url}/assets/labeled_projects?view=checks", wait_until="networkidle"
            )
            expect(page.get_by_text("title_description_are_unique").first).to_be_visible(
                timeout=60_000
            )
            expect(page.get_by_text("Succeeded").first).to_be_visible()
            expect(page.get_by_text("Passed", exact=True).first).to_be_visible()
            page.screenshot(path=ARTIFACTS / "labeled_projects_checks.png", full_page=True)
        except Exception:
            page.screenshot(path=ARTIFACTS / "failure.png", full_page=True)
            raise
        finally:
            browser.close()

    latest = dagster_dev.graphql(LATEST, {"key": {"path": ["labeled_projects"]}})[
        "assetNodeOrError"
    ]
    [materialization] = latest["assetMaterializations"]
    rows = {e["label"]: e.get("intValue") for e in materialization["metadataEntries"]}
    assert rows["dagster/row_count"] == len(PROJECTS)
    checks = latest["assetChecksOrError"]["checks"]
    assert checks and all(
        c["executionForLatestMaterialization"]["evaluation"]["success"] for c in checks
    )


def test_the_rollback_job_from_the_launchpad_restores_a_version(dagster_dev: DagsterDev):
    """After two publishes of labeled_projects, the `rollback` job, configured and launched
    from the Launchpad, restores the first (the earlier test materialized everything)."""
    need_chromium()
    from playwright.sync_api import expect

    from mlstack_assets.lake.versions import current_version_id, versions
    from tests.support.lakes import warehouse_lake

    lake = warehouse_lake(  # the part of the lake that `dg dev`'s warehouse reads
        MLSTACK_WAREHOUSE="duckdb",
        MLSTACK_DUCKDB_PATH=str(dagster_dev.lake.parent / "warehouse.duckdb"),
        MLSTACK_LAKE=str(dagster_dev.lake),
    )
    if not versions(lake, "labeled_projects"):
        pytest.fail("the graph was not materialized first (test_materialize_all_from_the_browser)")
    launched = dagster_dev.graphql(LAUNCH_ALL)["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    assert wait_for_run(dagster_dev)["status"] == "SUCCESS", dagster_dev.log.read_text()[-4000:]
    newest, first = (v.id for v in versions(lake, "labeled_projects")[:2])
    assert current_version_id(lake, "labeled_projects") == newest
    config = "ops: {restore_version: {config: {table: labeled_projects, version: '" + first + "'}}}"

    with browser_page("rollback_failure.png") as page:
        page.goto(
            f"{dagster_dev.url}/locations/mlstack/jobs/rollback/playground",
            wait_until="networkidle",
        )
        editor = page.locator(".CodeMirror").first
        expect(editor).to_be_visible(timeout=60_000)
        page.evaluate(
            "(text) => document.querySelector('.CodeMirror').CodeMirror.setValue(text)",
            config,
        )
        page.screenshot(path=ARTIFACTS / "rollback_launchpad.png")
        page.get_by_role("button", name="Launch Run").click()
        expect(page.get_by_text("restore_version").first).to_be_visible(timeout=60_000)

    run = wait_for_run(dagster_dev, 300, job="rollback")
    assert run["status"] == "SUCCESS", dagster_dev.log.read_text()[-4000:]
    assert current_version_id(lake, "labeled_projects") == first
    latest = dagster_dev.graphql(RESTORED, {"key": {"path": ["labeled_projects"]}})
    [materialization] = latest["assetNodeOrError"]["assetMaterializations"]
    entries = {e["label"]: e.get("text") for e in materialization["metadataEntries"]}
    assert entries["restored_from"] == first


CHECK_EXECUTION = """
query ($key: AssetKeyInput!, $check: String!) {
    assetCheckExecutions(assetKey: $key, checkName: $check, limit: 1) {
        runId status evaluation { description metadataEntries {
            label ... on TextMetadataEntry { text } } }
    }
    assetNodeOrError(assetKey: $key) { ... on AssetNode {
        assetMaterializations(limit: 1) { runId } } }
}
"""


def test_a_raw_check_executed_alone_from_the_browser_evaluates_the_published_table(
    dagster_dev: DagsterDev,
):
    """tags' Checks tab, `id_is_unique`, "Execute": one run of that check alone, on the
    published table (a duplicate id put there behind mlstack's back), nothing synced.

    The runs are told apart by what they select: `downstream_automation` may launch its own
    run meanwhile (the previous test's rollback is a new materialization of
    labeled_projects, and the ML assets downstream are eager)."""
    need_chromium()
    from playwright.sync_api import expect

    warehouse = dagster_dev.lake.parent / "warehouse.duckdb"
    variables = {"key": {"path": ["tags"]}, "check": "id_is_unique"}
    found = dagster_dev.graphql(CHECK_EXECUTION, variables)
    published = found["assetNodeOrError"]["assetMaterializations"]
    if not published:
        pytest.fail("tags was not materialized first (test_materialize_all_from_the_browser)")
    with duckdb.connect(str(warehouse)) as conn:
        conn.execute("insert into mlops_course.tags select * from mlops_course.tags limit 1")
        before = conn.execute("select * from mlops_course.tags order by all").fetchall()
    earlier = {run["runId"] for run in dagster_dev.graphql(RUNS)["runsOrError"]["results"]}

    with browser_page("check_alone_failure.png") as page:
        page.goto(f"{dagster_dev.url}/assets/tags?view=checks", wait_until="networkidle")
        page.get_by_text("id_is_unique", exact=True).first.click(timeout=60_000)
        execute = page.get_by_role("button", name="execute Execute", exact=True)
        expect(execute).to_be_enabled(timeout=60_000)
        execute.click()
        deadline = time.monotonic() + 300
        while True:
            runs = dagster_dev.graphql(RUNS)["runsOrError"]["results"]
            new = [
                run
                for run in runs
                if run["runId"] not in earlier
                and {"name": "id_is_unique"} in (run["assetCheckSelection"] or [])
            ]
            if new and all(r["status"] in ("SUCCESS", "FAILURE", "CANCELED") for r in new):
                break
            assert time.monotonic() < deadline, f"the check's run did not finish: {runs}"
            time.sleep(2)
        page.reload(wait_until="networkidle")
        expect(page.get_by_text("Failed").first).to_be_visible(timeout=60_000)
        page.screenshot(path=ARTIFACTS / "tags_check_executed_alone.png", full_page=True)

    [run] = new  # one click, one run
    assert run["assetSelection"] in (None, []), run  # the check alone: tags is not synced
    assert run["status"] == "FAILURE", dagster_dev.log.read_text()[-4000:]  # a blocking check
    found = dagster_dev.graphql(CHECK_EXECUTION, variables)
    [execution] = found["assetCheckExecutions"]
    assert execution["runId"] == run["runId"] and execution["status"] == "FAILED"
    metadata = {e["label"]: e.get("text") for e in execution["evaluation"]["metadataEntries"]}
    assert metadata["table"] == "mlops_course.tags"
    assert "unexpected; e.g. ids" in execution["evaluation"]["description"]
    assert found["assetNodeOrError"]["assetMaterializations"] == published  # not synced
    with duckdb.connect(str(warehouse)) as conn:
        assert conn.execute("select * from mlops_course.tags order by all").fetchall() == before
        conn.execute(
            "delete from mlops_course.tags where rowid = (select max(rowid) from mlops_course.tags)"
        )
