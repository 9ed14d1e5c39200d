"""How outcomes and judged states look, in one table for every view: the terminal, the HTML
report, the Markdown summary and the matrix PNG all take their words, marks and colours here.

Two sets of looks: a run's outcome (the scenario's verdict, or why there is none), and a run
judged by a bisection's question (its two sides, a skip, a failure).  A failure is never good,
bad or reproduced: it has a look of its own in both sets.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, replace

from tfbisect.core.outcome import Outcome

RED = (220, 38, 38)
GREEN = (22, 163, 74)
GREY = (156, 163, 175)
AMBER = (217, 119, 6)
PURPLE = (124, 58, 237)


@dataclass(frozen=True)
class Look:
    css: str  # the HTML class (a fixed name from this table, never text from a record)
    word: str  # what the state is called: an outcome, or a bisection's term ("good", "fast" ...)
    icon: str  # a one-character mark for text views
    rgb: tuple[int, int, int]

    @property
    def hex(self) -> str:
        return "#{:02x}{:02x}{:02x}".format(*self.rgb)

    @property
    def mark(self) -> str:
        return f"{self.icon} {self.word}"

    def named(self, word: str) -> Look:
        """The same look under another name (a bisection's own term for a side)."""
        return replace(self, word=word)


OUTCOME_LOOK: dict[Outcome, Look] = {
    Outcome.REPRODUCED: Look("reproduced", "reproduced", "✗", RED),
    Outcome.NOT_REPRODUCED: Look("not_reproduced", "not reproduced", "✓", GREEN),
    Outcome.SKIP: Look("skip", "skip", "-", GREY),
    Outcome.ERROR: Look("error", "error", "!", AMBER),
    Outcome.TIMEOUT: Look("timeout", "timeout", "⧗", PURPLE),
}


class Kind(enum.StrEnum):
    """A run judged by a bisection's question."""

    GOOD = (
        "good"  # the answer without the problem (not reproduced, match), or running at all (--regress error)
    )
    BAD = "bad"  # the state that counts as the problem (reproduced, mismatch)
    SKIP = "skip"  # cannot be tested here
    FAILURE = "failure"  # the run (or the probe) failed: no answer to the question


KIND_LOOK: dict[Kind, Look] = {
    Kind.GOOD: Look("good", "good", "✓", GREEN),
    Kind.BAD: Look("bad", "bad", "✗", RED),
    Kind.SKIP: Look("skip", "skip", "-", GREY),
    Kind.FAILURE: Look("failure", "failure", "!", AMBER),
}

# Every look by its HTML class, for the report's style sheet.
CSS: dict[str, Look] = {look.css: look for look in (*OUTCOME_LOOK.values(), *KIND_LOOK.values())}

# The names other modules have always imported, now read from the table above.
MARK = {outcome: look.mark for outcome, look in OUTCOME_LOOK.items()}  # show.MARK, sweep
OUTCOME_WORDS = {outcome: look.word for outcome, look in OUTCOME_LOOK.items()}  # reportdata
ICON = {look.word: look.icon for look in (*OUTCOME_LOOK.values(), *KIND_LOOK.values())}  # mdsummary
FILL = {outcome: look.rgb for outcome, look in OUTCOME_LOOK.items()}  # matrixpng
