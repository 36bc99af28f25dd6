"""The outcome of validating a dataset: one result per named check, and the error raised on failure.

`core.validation.runner` produces a `ValidationOutcome`; `core.validation.validation_report` renders it and
the validation step raises `DataValidationError` when a critical check failed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class CheckResult:
    """Outcome of one named check (one or more GX expectations sharing `meta.check`)."""

    check: str
    expectation: str
    critical: bool
    success: bool
    unexpected_count: int
    examples: list[str]
    message: str
    remedy: str = ""


@dataclass
class ValidationOutcome:
    """All check results of one dataset, in suite order, and what the run will train and test on."""

    rows: int
    checks: list[CheckResult]
    skipped: list[str] = field(default_factory=list)
    severity_overrides: dict[str, str] = field(default_factory=dict)
    preparation: dict[str, Any] | None = None
    label_counts: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)

    @property
    def success(self) -> bool:
        """True when every critical check passed."""
        return not self.failures()

    def failures(self) -> list[CheckResult]:
        """Returns the failed critical checks."""
        return [c for c in self.checks if c.critical and not c.success]

    def warnings(self) -> list[CheckResult]:
        """Returns the failed non-critical checks."""
        return [c for c in self.checks if not c.critical and not c.success]

    def failure_message(self) -> str:
        """Returns a multi-line summary of the failed critical checks (empty when validation passed)."""
        failed = self.failures()
        if not failed:
            return ""
        lines = [f"Data validation failed: {len(failed)} critical check(s)"]
        for check in failed:
            lines.append(check.message)
            if check.remedy:
                lines.append(f"  how to go on: {check.remedy}")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """Returns a JSON-able summary."""
        return {
            "success": self.success,
            "rows": self.rows,
            "critical_failures": len(self.failures()),
            "warnings": len(self.warnings()),
            "checks": [asdict(c) for c in self.checks],
            "skipped": list(self.skipped),
            "severity_overrides": dict(self.severity_overrides),
            "preparation": self.preparation,
            "label_counts": self.label_counts,
        }


class DataValidationError(RuntimeError):
    """A dataset failed at least one critical check; `outcome` holds all results."""

    def __init__(self, outcome: ValidationOutcome) -> None:
        super().__init__(outcome.failure_message() or "Data validation failed")
        self.outcome = outcome
