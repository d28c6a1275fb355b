"""One outcome type for every check: how it maps to Dagster's check results and to the one
failure report a failed publish raises."""

from dagster import AssetCheckSeverity, AssetKey

from mlstack_assets.publish import failure_description
from mlstack_assets.quality.outcomes import Audit, CheckOutcome

TAGS, LABELED = AssetKey("tags"), AssetKey("labeled_projects")


def outcome(name: str, passed: bool, **kw) -> CheckOutcome:
    return CheckOutcome(kw.pop("key", TAGS), name, passed, kw.pop("summary", f"{name} said"), **kw)


def test_a_blocking_outcome_is_an_error_check_and_a_warn_only_one_a_warning():
    blocking = outcome("id_is_unique", False, label="unique(id)", metadata={"n": 2}).result()
    warn = outcome("fresh", False, blocking=False).result()
    assert (blocking.passed, blocking.severity) == (False, AssetCheckSeverity.ERROR)
    assert (warn.passed, warn.severity) == (False, AssetCheckSeverity.WARN)
    assert blocking.check_name == "id_is_unique" and blocking.asset_key == TAGS
    assert blocking.description == "id_is_unique said"
    assert blocking.metadata["n"].value == 2


def test_only_a_blocking_failure_or_a_build_error_fails_the_audit():
    assert Audit([outcome("a", True), outcome("fresh", False, blocking=False)]).passed
    assert not Audit([outcome("a", True), outcome("b", False)]).passed
    assert not Audit([outcome("a", True)], errors=["dbt build failed"]).passed
    combined = Audit([outcome("a", True)]) + Audit([outcome("b", False)], errors=["e"])
    assert [o.name for o in combined.outcomes] == ["a", "b"] and combined.errors == ["e"]


def test_warnings_are_failed_warn_only_checks_and_notices():
    audit = Audit(
        [
            outcome("fresh", False, blocking=False, summary="3 hours old"),
            outcome("rows", True, notice="row drop allowed"),
            outcome("quiet", True),
        ]
    )
    assert audit.warnings() == ["fresh: 3 hours old", "rows: row drop allowed"]


def test_the_report_lists_failures_then_checks_that_could_not_run_by_reason_then_errors():
    audit = Audit(
        [
            outcome("ok", True),
            outcome("id_is_unique", False, label="unique(id)", summary="2 duplicates: 7, 9"),
            outcome("tag_known", False, summary="column tag is missing", evaluated=False),
            outcome("tag_not_null", False, summary="column tag is missing", evaluated=False),
        ],
        errors=["dbt build failed"],
    )
    assert audit.report().splitlines() == [
        "- id_is_unique [unique(id)]: 2 duplicates: 7, 9",
        "- column tag is missing: tag_known, tag_not_null",
        "- dbt build failed",
    ]
    assert audit.failed_checks == ["id_is_unique", "tag_known", "tag_not_null"]


def test_an_audit_over_several_assets_names_the_asset_of_each_failure():
    audit = Audit([outcome("a", False), outcome("b", False, key=LABELED, summary="x")])
    assert audit.failed_checks == ["tags: a", "labeled_projects: b"]
    assert audit.report().splitlines() == ["- tags: a: a said", "- labeled_projects: b: x"]


def test_the_failure_report_says_what_failed_what_was_kept_and_where_to_look():
    audit = Audit([outcome("a", True), outcome("b", False)])
    one = failure_description("tags", audit, ["mlops_course.tags"], ["staging.tags"])
    assert one.splitlines()[0] == (
        "tags: 1 of 2 blocking checks failed, so mlops_course.tags was not replaced (it keeps"
        " its previous content); the audited rows are in staging.tags."
    )
    assert one.splitlines()[1] == "- b: b said"
    several = failure_description("dbt", Audit(errors=["boom"]), ["d.x", "d.y"], ["a.x", "a.y"])
    assert "the build failed, so d.x, d.y were not replaced (they keep their" in several
