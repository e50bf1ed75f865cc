"""Counting what fault-injection cases found, for one summary line at the end of the run.

A case collects its problems in a :class:`CaseResult`; the kind of each problem decides which count it
raises, so the summary tells lost data apart from wrong answers and from confusing errors.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class CaseResult:
    """The problems one fault-injection case found (none: it passed)."""

    name: str
    lost_writes: int = 0  # acknowledged changes that are gone (or deleted documents that came back)
    silently_wrong: int = 0  # a result that differs from the truth, with no error raised
    unclear_errors: int = 0  # a traceback instead of a RankstackError that says what is wrong
    misreported_repairs: int = 0  # ``repair`` reported a different loss than it caused
    problems: list[str] = field(default_factory=list)

    def lost(self, count: int, detail: str) -> None:
        self.lost_writes += count
        self.problems.append(f"acknowledged writes lost ({count}): {detail}")

    def wrong(self, detail: str) -> None:
        self.silently_wrong += 1
        self.problems.append(f"silently wrong result: {detail}")

    def unclear(self, detail: str) -> None:
        self.unclear_errors += 1
        self.problems.append(f"unclear error: {detail}")

    def misreported(self, detail: str) -> None:
        self.misreported_repairs += 1
        self.problems.append(f"repair report wrong: {detail}")

    def other(self, detail: str) -> None:
        """A broken promise that is none of the above (e.g. leftovers a writer should have removed)."""
        self.problems.append(detail)

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self) -> str:
        return f"{self.name}:\n  " + "\n  ".join(self.problems)


@dataclass
class FaultTally:
    tried: int = 0
    passed: int = 0
    lost_writes: int = 0
    silently_wrong: int = 0
    unclear_errors: int = 0
    misreported_repairs: int = 0
    failures: list[str] = field(default_factory=list, repr=False)

    def record(self, case: CaseResult) -> None:
        self.tried += 1
        self.passed += case.ok
        self.lost_writes += case.lost_writes
        self.silently_wrong += case.silently_wrong
        self.unclear_errors += case.unclear_errors
        self.misreported_repairs += case.misreported_repairs
        if not case.ok:
            self.failures.append(case.report())

    def summary(self) -> str:
        return (f"fault injection: {self.tried} cases tried, {self.passed} passed; "
                f"acknowledged writes lost: {self.lost_writes}; silently wrong results: {self.silently_wrong}; "
                f"unclear errors: {self.unclear_errors}; misreported repairs: {self.misreported_repairs}")
