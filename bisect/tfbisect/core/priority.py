"""The runs a search waits for before the work ahead of them: which preparations are the
foreground's, and which preparation ahead a run has come to wait for.

On 2 cores two cold image builds side by side slow each other, on the CPU and on the disk, and
the engine's CPU shares do not hold back a build's writes.  So a prefetch (search/prefetch.py)
starts nothing while a run's own environment is being prepared (`Foreground`), and when a run
comes to wait for an environment a prefetch is still preparing, that preparation is hurried
(`Urgency`): what gave it a low priority (an image build's step containers, envs/docker_builds.py;
the prefetch thread's niceness) is raised to the default, since the search now waits for it.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator

from tfbisect.core.errors import DockerError


class Foreground:
    """How many preparations the runs themselves are doing (or waiting for) right now."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._busy = 0

    @contextlib.contextmanager
    def preparing(self) -> Iterator[None]:
        with self._changed:
            self._busy += 1
        try:
            yield
        finally:
            with self._changed:
                self._busy -= 1
                self._changed.notify_all()

    @property
    def busy(self) -> int:
        with self._changed:
            return self._busy

    def wait_idle(self, timeout: float) -> bool:
        """True once no run prepares an environment; False when `timeout` passed first."""
        with self._changed:
            return self._changed.wait_for(lambda: self._busy == 0, timeout)


_LONG_BUILDS = [0]  # Debian bases being built in this process (`long_build`)
_LONG_LOCK = threading.Lock()


@contextlib.contextmanager
def long_build() -> Iterator[None]:
    """A build of half a minute that keeps one core busy and leaves the other (a Debian base,
    envs/bases.py).  While one lasts in this process, the runs' own preparations hold no work
    ahead back (search/prefetch.py's gate): work ahead that needs the build parks until it is
    done (`defer_ahead`), and the rest can use the core it leaves."""
    with _LONG_LOCK:
        _LONG_BUILDS[0] += 1
    try:
        yield
    finally:
        with _LONG_LOCK:
            _LONG_BUILDS[0] -= 1


def long_build_running() -> bool:
    with _LONG_LOCK:
        return _LONG_BUILDS[0] > 0


class DroppedError(DockerError):
    """A build ahead was cancelled on purpose: the search moved past it (`Urgency.drop`), or is
    over.  No failure of the build: nothing to retry, and progress says dropped, not failed."""


class _Once:
    """A one-shot signal under a lock it shares: fired at most once, each listener called once
    (at once when it has fired already), outside the lock."""

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock
        self.fired = False  # read under the shared lock
        self._listeners: list[Callable[[], None]] = []

    def listen(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` when fired; the callable returned forgets it."""
        with self._lock:
            now = self.fired
            if not now:
                self._listeners.append(listener)
        if now:
            _quietly(listener)

        def forget() -> None:
            with self._lock, contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return forget

    def fire(self, unless: Callable[[], bool]) -> None:
        """Fire, unless it has or `unless()` (asked under the lock) says no."""
        with self._lock:
            if self.fired or unless():
                return
            self.fired = True
            listeners, self._listeners = self._listeners, []
        for listener in listeners:
            _quietly(listener)


class Urgency:
    """Whether a run now waits for one preparation ahead; `on_hurry` says what then raises its
    priority (called at once when it is urgent already).  Or whether the search no longer needs
    it (`drop`): `on_drop` says what then stops it (an image build, which is cancelled).  The two
    exclude each other: whichever comes first holds.

    `sure`: the search runs it whatever the round in progress finds (the midpoint after the
    ends); else it is one of a round's outcomes only, a bet (`speculative`)."""

    def __init__(self, *, sure: bool = False) -> None:
        self.sure = sure
        self._lock = threading.Lock()
        self._hurried = _Once(self._lock)
        self._dropped = _Once(self._lock)

    @property
    def dropped(self) -> bool:
        with self._lock:
            return self._dropped.fired

    def on_drop(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` when the preparation is dropped; the callable returned forgets it."""
        return self._dropped.listen(listener)

    def drop(self) -> None:
        """No run of this search will need the preparation: it stops where it can (once).  One
        that a run waits for (hurried) is never dropped."""
        self._dropped.fire(unless=lambda: self._hurried.fired)

    @property
    def urgent(self) -> bool:
        with self._lock:
            return self._hurried.fired

    @property
    def bet(self) -> bool:
        """Prepared for one outcome of the round in progress only, no run waiting for it yet."""
        return not self.sure and not self.urgent

    def on_hurry(self, listener: Callable[[], None]) -> Callable[[], None]:
        """Call `listener` when the preparation is hurried; the callable returned forgets it."""
        return self._hurried.listen(listener)

    def hurry(self) -> None:
        """A run waits for this preparation: every listener raises its priority (once)."""
        self._hurried.fire(unless=lambda: self._dropped.fired)


def _quietly(listener: Callable[[], None]) -> None:
    # Raising a priority is a speed-up only: one that fails (a step container already gone, no
    # permission to renice) leaves the preparation as it was, never fails it.
    with contextlib.suppress(Exception):
        listener()


_AHEAD = threading.local()


@contextlib.contextmanager
def ahead(urgency: Urgency) -> Iterator[Urgency]:
    """The calling thread prepares ahead of need under `urgency` (what it builds can listen)."""
    before = getattr(_AHEAD, "urgency", None)
    _AHEAD.urgency = urgency
    try:
        yield urgency
    finally:
        _AHEAD.urgency = before


def current() -> Urgency | None:
    """The urgency of the preparation ahead this thread is doing, or None (a run's own)."""
    found = getattr(_AHEAD, "urgency", None)
    return found if isinstance(found, Urgency) else None


def dropped() -> bool:
    """Whether this thread prepares ahead for a search that has moved past it (what it started
    was killed: platform/process.py), so that its end is no failure."""
    urgency = current()
    return urgency is not None and urgency.dropped


def speculative() -> bool:
    """Whether this thread prepares ahead on a bet: for one outcome of the round in progress
    only, no run waiting for it yet.  What costs far more than a round (a Debian base built
    here, envs/bases.py) is not started on a bet."""
    urgency = current()
    return urgency is not None and urgency.bet


class Deferred(Exception):
    """A preparation ahead that would wait for another's long work (a Debian base being built):
    it goes back to the prefetch's queue, to be taken again once `ready()` says the wait is over,
    and its worker does something else meanwhile (search/prefetch.py)."""

    def __init__(self, awaited: str, ready: Callable[[], bool]) -> None:
        super().__init__(f"waits for {awaited}")
        self.awaited = awaited
        self.ready = ready


def defer_ahead(awaited: str, ready: Callable[[], bool]) -> None:
    """Raise Deferred when this thread prepares ahead: its worker has better to do than wait
    (even for a run's preparation: the run, once free, prepares its own and waits there).  A
    run's own preparation waits like any other."""
    if current() is not None:
        raise Deferred(awaited, ready)


def unnice_on_hurry(urgency: Urgency) -> Callable[[], None]:
    """When `urgency` is hurried, the calling thread (a prefetch's, niced) gets the process's
    niceness back, so that what it starts from then on runs as a run's own preparation would.
    Lowering a niceness takes a privilege; without it the thread stays as it is.  Returns what
    forgets it."""
    thread, niceness = threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, os.getpid())
    return urgency.on_hurry(lambda: os.setpriority(os.PRIO_PROCESS, thread, niceness))
