"""One step of a search (a bisection's, a narrowing's): which version, how its run ended, how it
was judged.  Apart from the logs that hold steps, so that both can use it."""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass
from typing import Any

from tfbisect.core.outcome import Outcome
from tfbisect.search.state import Class


class StepOutcome(enum.StrEnum):
    """A step's run outcome (as `Outcome`), or `unavailable`: nothing could run here."""

    REPRODUCED = Outcome.REPRODUCED.value
    NOT_REPRODUCED = Outcome.NOT_REPRODUCED.value
    SKIP = Outcome.SKIP.value
    ERROR = Outcome.ERROR.value
    TIMEOUT = Outcome.TIMEOUT.value
    UNAVAILABLE = "unavailable"


@dataclass(frozen=True)
class Step:
    round: int  # 0: a stored result taken as evidence before this bisection ran anything
    version: str
    outcome: StepOutcome
    state: str | None  # judge.State name: "reproduced", "match", "error: <signature>" …; None: skip
    cls: Class  # old, new, skip or other under the bisection's terms ("" before the ends are known)
    reused: bool
    seconds: float
    summary: str  # the run's verdict or its real failure, clipped
    key: str = ""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Step:
        data = dict(data)
        data["outcome"] = StepOutcome(data["outcome"])
        data["cls"] = Class(data["cls"]) if data.get("cls") else Class.UNJUDGED
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "outcome": self.outcome.value, "cls": self.cls.value}
