"""The bisection log: what a bisection asked, every step it took and what it found, as typed
data with a version, written after every round and read back by `bisect log`, the reports and a
resumed run.  No prose is made here (findings.py has the words) and nothing runs here
(bisection.py drives the search)."""

from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tfbisect.search.narrowlog import Narrowing
from tfbisect.search.steps import Step as Step
from tfbisect.search.steps import StepOutcome as StepOutcome

# 1: the first landing (request values flattened with str(), steps' fields as plain strings);
# 2: typed request values, steps' outcome and class as enums, this field;
# 3: the narrowing below the releases.
LOG_VERSION = 3


class Status(enum.StrEnum):
    FOUND = "found"  # one change point, both sides run
    AMBIGUOUS = "ambiguous"  # skips next to the change: the first new is one of several
    NON_MONOTONIC = "non_monotonic"  # old, new, old: more than one change point
    NO_CHANGE = "no_change"  # both ends in the same state
    UNDECIDABLE = "undecidable"  # an end could not be tested at all
    END_FAILS = "end_fails"  # an end fails (crash, error, timeout): the question cannot be judged there
    INTERRUPTED = "interrupted"


@dataclass
class BisectReport:
    request: dict[str, Any]
    command: str
    versions: list[str]
    steps: list[Step] = field(default_factory=list)
    status: Status = Status.INTERRUPTED
    message: str = ""  # read from logs of version 1 only: the words are findings.explain's now
    old_state: str | None = None
    new_state: str | None = None
    term_old: str = "good"
    term_new: str = "bad"
    last_old: str | None = None
    first_new: str | None = None
    candidates: list[str] = field(default_factory=list)
    changes: list[tuple[str, str]] = field(default_factory=list)
    git_versions: dict[str, str | None] = field(default_factory=dict)
    compare_url: str | None = None
    started_at: str = ""
    finished_at: str = ""
    # What was asked, in words: "probe gradient_eager_plain", "the scenario's verdict", or for
    # `--regress error` "where the scenario starts to fail".
    question: str = ""
    regress: str = "state"  # "state": good/bad as the question's two states; "error": failing or not
    # Ends of the range that fail (version -> "Type: real message"): never good or bad.
    end_failures: dict[str, str] = field(default_factory=dict)
    # Where a failure itself began, a finding of its own: {"failure": "Type: message",
    # "last_without": V or None, "first_with": X, "candidates": [...]} (candidates: X alone when resolved).
    failure_finding: dict[str, Any] | None = None
    # The two versions the answer rests on (the range's ends, or the nearest testable ones).
    ends: list[str] = field(default_factory=list)
    # Below the releases: RCs, nightlies, dependency changes and suspect code (narrowlog.py).
    narrowing: Narrowing | None = None

    @property
    def first_new_text(self) -> str:
        """The first new version as it may be shown anywhere: "one of A, B, C" when unresolved."""
        if len(self.candidates) > 1:
            return "one of " + ", ".join(self.candidates)
        return self.first_new or "?"

    @property
    def runs(self) -> int:
        return sum(1 for s in self.steps if not s.reused and s.outcome is not StepOutcome.UNAVAILABLE)

    @property
    def reused(self) -> int:
        return sum(1 for s in self.steps if s.reused)

    @property
    def rounds(self) -> int:
        return max((s.round for s in self.steps), default=0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["log_version"] = LOG_VERSION
        data["status"] = self.status.value
        data["steps"] = [s.to_dict() for s in self.steps]
        data["narrowing"] = self.narrowing.to_dict() if self.narrowing else None
        data["summary"] = {"runs": self.runs, "reused": self.reused, "rounds": self.rounds}
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BisectReport:
        data = dict(data)
        version = data.pop("log_version", 1)
        if version > LOG_VERSION:
            raise ValueError(f"log version {version} is newer than this tfbisect reads ({LOG_VERSION})")
        data.pop("summary", None)
        data["steps"] = [Step.from_dict(s) for s in data.get("steps", [])]
        data["status"] = Status(data["status"])
        data["changes"] = [tuple(c) for c in data.get("changes", [])]
        try:
            data["narrowing"] = Narrowing.from_dict(data["narrowing"]) if data.get("narrowing") else None
        except (KeyError, TypeError, ValueError, AttributeError):
            data["narrowing"] = None  # a damaged narrowing never costs the bisection: `narrow` redoes it
        if version == 1:  # requests were flattened with str(): "True", "1", "None"
            data["request"] = {k: _typed(v) for k, v in dict(data.get("request") or {}).items()}
        return cls(**data)


def _typed(value: Any) -> Any:
    if value in ("True", "False"):
        return value == "True"
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def load_report(path: Path) -> BisectReport:
    return BisectReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
