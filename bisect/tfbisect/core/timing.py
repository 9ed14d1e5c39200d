"""Where the time went: seconds spent downloading, building or installing, running and tracing,
added up over a command's work so that its end can say it in one line.

A phase is measured where the work is done (the wheel cache measures its downloads, an
environment its build, the runner its runs) with `spent.measure(Phase.X)`.  Phases nest: a
download inside a build counts as download only, because the inner phase's seconds are taken
off the one around it (per thread: prefetch builds run beside the round's runs, and each
thread's phases nest on their own).  Work done in parallel is added up, so the sum can exceed
the wall time; the line says so.
"""

from __future__ import annotations

import enum
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager


class Phase(enum.Enum):
    DOWNLOAD = "download"  # wheels and bases fetched from the index or the network
    BUILD = "build"  # a venv installed or an image built (downloads inside it excluded)
    RUN = "run"  # scenario runs, judged and stored
    TRACE = "trace"  # the narrowing's traced runs and the proof's patched runs


class TimeSpent:
    """Seconds per phase, thread-safe; nested phases are not counted twice."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seconds: dict[Phase, float] = dict.fromkeys(Phase, 0.0)
        self._local = threading.local()

    def add(self, phase: Phase, seconds: float) -> None:
        with self._lock:
            self._seconds[phase] += max(seconds, 0.0)

    @contextmanager
    def measure(self, phase: Phase) -> Iterator[None]:
        stack: list[float] = self._local.__dict__.setdefault("inner", [])
        stack.append(0.0)  # seconds of phases nested inside this one, taken off it at its end
        start = time.monotonic()
        try:
            yield
        finally:
            elapsed = time.monotonic() - start
            inner = stack.pop()
            self.add(phase, elapsed - inner)
            if stack:
                stack[-1] += elapsed

    def totals(self) -> dict[Phase, float]:
        with self._lock:
            return dict(self._seconds)

    def since(self, before: Mapping[Phase, float]) -> dict[Phase, float]:
        """The seconds per phase spent after `before` (an earlier `totals()`)."""
        now = self.totals()
        return {phase: max(now[phase] - before.get(phase, 0.0), 0.0) for phase in Phase}


SPENT = TimeSpent()  # the process's: one command runs per process


def as_stored(seconds: Mapping[Phase, float]) -> dict[Phase, float]:
    """The seconds as a log keeps them (tenths): what a command's last line adds up, so that the
    line and the logs never round one number two ways (6.54 s is "7 s", its stored 6.5 "6 s")."""
    return {phase: round(seconds.get(phase, 0.0), 1) for phase in Phase}


def total(spent: Iterable[Mapping[Phase, float] | None]) -> dict[Phase, float]:
    """Seconds per phase added up over several logs' (a missing one counts as none)."""
    found = dict.fromkeys(Phase, 0.0)
    for seconds in spent:
        for phase, value in as_stored(seconds or {}).items():
            found[phase] += value
    return found


def to_dict(seconds: Mapping[Phase, float]) -> dict[str, float]:
    """As stored in a log or a report: {"download_s": 12.3, ...}."""
    return {f"{phase.value}_s": value for phase, value in as_stored(seconds).items()}


def from_dict(data: object) -> dict[Phase, float] | None:
    """The stored form read back defensively; None when it is missing or not numbers."""
    if not isinstance(data, dict):
        return None
    found: dict[Phase, float] = {}
    for phase in Phase:
        value = data.get(f"{phase.value}_s", 0.0)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1e9:
            return None
        found[phase] = float(value)
    return found
