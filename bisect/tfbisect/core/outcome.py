"""Outcomes of a run and how a scenario's exit code and document map onto them."""

from __future__ import annotations

import enum
import signal

from tfbisect.core.errors import ExitCode


class Outcome(enum.StrEnum):
    REPRODUCED = "reproduced"  # git bisect: bad
    NOT_REPRODUCED = "not_reproduced"  # git bisect: good
    SKIP = "skip"  # cannot be tested here (exit 125, no wheel, build failure)
    ERROR = "error"  # crashed or wrote an invalid document: never good or bad
    TIMEOUT = "timeout"

    @property
    def decisive(self) -> bool:
        return self in (Outcome.REPRODUCED, Outcome.NOT_REPRODUCED)


# The exit code a scenario must give with each verdict it writes (git bisect run's language).
VERDICT_EXIT = {
    "not_reproduced": ExitCode.NOT_REPRODUCED,
    "reproduced": ExitCode.REPRODUCED,
    "skip": ExitCode.SKIP,
}


def signal_name(exit_code: int | None) -> str | None:
    """SIGSEGV for -11; None for an ordinary exit."""
    if exit_code is None or exit_code >= 0:
        return None
    try:
        return signal.Signals(-exit_code).name
    except ValueError:
        return f"signal {-exit_code}"
