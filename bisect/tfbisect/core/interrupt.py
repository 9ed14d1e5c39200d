"""Ctrl-C, SIGTERM and SIGHUP: stop at once, start nothing new, keep what finished.

The handler turns each of the three signals into `Interrupted` (a KeyboardInterrupt, so every
`except KeyboardInterrupt` cleanup path serves all three) in the main thread, and sets a flag
that worker threads check before starting anything and after every child process ends: a run
whose process was killed because the driver is stopping is never stored as a result.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable, Iterator
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

_stopping = threading.Event()
_signum: list[int] = []
_on_stop: list[Callable[[], None]] = []


class Interrupted(KeyboardInterrupt):
    """The driver was told to stop; exits 128 + the signal's number (130, 143, 129)."""

    def __init__(self, signum: int = signal.SIGINT) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name


def stopping() -> bool:
    return _stopping.is_set()


def check() -> None:
    """Raise `Interrupted` if the driver is stopping: called before any new work starts."""
    if _stopping.is_set():
        raise Interrupted(_signum[0] if _signum else signal.SIGINT)


def current() -> Interrupted:
    return Interrupted(_signum[0] if _signum else signal.SIGINT)


def on_stop(callback: Callable[[], None]) -> None:
    """Run `callback` (e.g. kill every child process) the moment a stop signal arrives."""
    _on_stop.append(callback)


def _handle(signum: int, frame: FrameType | None) -> None:
    first = not _stopping.is_set()
    if first:
        _signum.append(signum)
        _stopping.set()
    for callback in list(_on_stop):
        with contextlib.suppress(Exception):
            callback()
    if first:  # a second signal during the cleanup must not cut the cleanup short
        raise Interrupted(signum)


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Install the handlers for the duration (main thread only), then restore the old ones."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.signal(s, _handle) for s in SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def hold() -> set[int]:
    """Make stop signals wait (main thread only: elsewhere they run no handler); returns the mask
    to give `release`. For a step that must finish once started, such as arming a child's kill."""
    if threading.current_thread() is not threading.main_thread():
        return set()
    return set(signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS))


def release(previous: set[int]) -> None:
    """Let the signals `hold` held back through: one that came meanwhile is handled now."""
    if threading.current_thread() is threading.main_thread():
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def held() -> Iterator[None]:
    """`hold` for the duration of a block, such as removing a container."""
    previous = hold()
    try:
        yield
    finally:
        release(previous)


def reset() -> None:
    """Forget a stop (tests that call `main` more than once in one process)."""
    _stopping.clear()
    _signum.clear()
