"""Progress output, kept apart from the work: long steps say what they do and how long they took."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

from tfbisect.core import interrupt
from tfbisect.core.priority import DroppedError, current
from tfbisect.core.textsafe import clip, printable

_LOCK = threading.Lock()


class Progress:
    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet

    def say(self, message: str) -> None:
        if not self.quiet:
            # Messages carry scenario text: no escape sequence of a scenario reaches the terminal.
            # One write per line under a lock: parallel runs (--jobs) never splice lines.
            with _LOCK:
                self.stream.write(printable(message) + "\n")
                self.stream.flush()

    @contextmanager
    def step(self, label: str, message: str) -> Iterator[None]:
        self.say(f"[{label}] {message} …")
        start = time.monotonic()
        try:
            yield
        except BaseException as exc:
            self.say(f"[{label}] {message}: {ended(exc, time.monotonic() - start)}")
            raise
        self.say(f"[{label}] {message}: done in {time.monotonic() - start:.1f}s")

    def line(self, label: str, text: str) -> None:
        self.say(f"[{label}]   {printable(clip(text, 300), newlines=False)}")


def ended(exc: BaseException, seconds: float) -> str:
    """How a step that raised `exc` after `seconds` ended: a preparation the search dropped (a
    build ahead it moved past, cancelled on purpose; an install ahead halted when the search was
    over, whatever the killed process made it raise) did not fail, and nothing is to be done; nor
    did one stopped with tfbisect itself (a stop signal)."""
    urgency = current()  # set on the thread of a preparation ahead (search/prefetch.py)
    if isinstance(exc, DroppedError) or (urgency is not None and urgency.dropped):
        return f"dropped after {seconds:.1f}s (the search no longer needs it)"
    if isinstance(exc, KeyboardInterrupt) or interrupt.stopping():
        return f"stopped after {seconds:.1f}s (tfbisect was told to stop)"
    return f"failed after {seconds:.1f}s"
