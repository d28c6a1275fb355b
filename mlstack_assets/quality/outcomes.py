"""One outcome type for every check that audits a table before its publish (GX, dbt, ML checks,
the volume guard): an `Audit` gives Dagster's check results and the one failure report."""

from dataclasses import dataclass, field, replace
from typing import Any

from dagster import AssetCheckResult, AssetCheckSeverity, AssetKey


@dataclass(frozen=True)
class CheckOutcome:
    """One evaluated check of one asset."""

    asset_key: AssetKey
    name: str
    passed: bool
    summary: str  # one line: the observed numbers, a few examples
    blocking: bool = True  # ERROR severity: a failure stops the publish
    label: str = ""  # what the check is, e.g. `expect_column_values_to_be_unique(column=id)`
    metadata: dict[str, Any] = field(default_factory=dict)
    evaluated: bool = True  # False: it could not run (a column it reads is missing, ...)
    notice: str | None = None  # something a passing check still wants reported

    @property
    def blocks(self) -> bool:
        return self.blocking and not self.passed

    @property
    def warning(self) -> str | None:
        """What to log as a warning: a failed warn-only check, or a notice."""
        return self.summary if not self.passed and not self.blocking else self.notice

    def with_metadata(self, **metadata: Any) -> "CheckOutcome":
        return replace(self, metadata={**self.metadata, **metadata})

    def result(self) -> AssetCheckResult:
        return AssetCheckResult(
            asset_key=self.asset_key,
            check_name=self.name,
            passed=self.passed,
            severity=AssetCheckSeverity.ERROR if self.blocking else AssetCheckSeverity.WARN,
            description=self.summary,
            metadata=self.metadata,
        )

    def line(self, with_asset: bool) -> str:
        asset = f"{self.asset_key.to_user_string()}: " if with_asset else ""
        label = f" [{self.label}]" if self.label else ""
        return f"- {asset}{self.name}{label}: {self.summary}"


@dataclass
class Audit:
    """The outcomes of the checks of one publish, and what failed to build at all."""

    outcomes: list[CheckOutcome] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # e.g. dbt build itself failed

    def __add__(self, other: "Audit") -> "Audit":
        return Audit([*self.outcomes, *other.outcomes], [*self.errors, *other.errors])

    @property
    def blocking_failures(self) -> list[CheckOutcome]:
        return [outcome for outcome in self.outcomes if outcome.blocks]

    @property
    def passed(self) -> bool:
        return not self.blocking_failures and not self.errors

    @property
    def failed_checks(self) -> list[str]:
        """`check` per blocking failure (`asset: check` when the audit spans assets)."""
        several = len({o.asset_key for o in self.outcomes}) > 1
        return [
            f"{o.asset_key.to_user_string()}: {o.name}" if several else o.name
            for o in self.blocking_failures
        ]

    def results(self) -> list[AssetCheckResult]:
        return [outcome.result() for outcome in self.outcomes]

    def warnings(self) -> list[str]:
        return [f"{o.name}: {o.warning}" for o in self.outcomes if o.warning]

    def report(self, name_assets: bool | None = None) -> str:
        """Blocking failures, then the checks that could not run (a line per reason), then build
        errors; lines name their asset if `name_assets` (default: when there are several)."""
        several = len({o.asset_key for o in self.outcomes}) > 1
        several = several if name_assets is None else name_assets
        lines = [o.line(several) for o in self.blocking_failures if o.evaluated]
        skipped = [o for o in self.blocking_failures if not o.evaluated]
        reasons = {o.summary: [s.name for s in skipped if s.summary == o.summary] for o in skipped}
        lines += [f"- {reason}: {', '.join(names)}" for reason, names in reasons.items()]
        return "\n".join([*lines, *(f"- {error}" for error in self.errors)])
