"""Prefetch: the environments the next round may need, prepared while this round runs (both
outcomes of a midpoint, as mozregression does), up to --prefetch of them at once on daemon
threads, at a lower CPU priority than the runs the search waits for (an image's build in the
engine too: envs/docker_builds.py gives a build from a niced thread the fewest CPU shares).

What to prepare is the search's choice; this module only queues it, prepares it through a
`prefetch` callable, and stops what is still being prepared once the search is over.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence

from tfbisect.core.priority import Foreground
from tfbisect.core.spec import EnvSpec
from tfbisect.envs.registry import cancel_all as cancel_builds
from tfbisect.platform.process import kill_all

# Preparing an environment ahead of its run: `Runner.prefetch` (none when a test scripts the runs).
Prefetch = Callable[[EnvSpec], object]


AHEAD_NICENESS = 10


# How long a preparation ahead waits between looks at the foreground, and how long a stopped
# search waits for the preparations it halted to wind down (a cancelled image build removes the
# step images it made, envs/docker_builds.py) before the driver goes on without them.
GATE_POLL = 0.2
STOP_PATIENCE = 15.0


class Ahead:
    """Environments prepared ahead, `workers` at a time, on daemon threads (a driver that stops
    never waits long for one).  `want` replaces what is queued; what is being prepared finishes.

    Several at once because a cold image takes far longer to build than a run takes: one at a
    time, the second image of a round (its other end, the next midpoint) waits behind the first
    while the CPUs idle on downloads and unpacking.  But none starts while the runs prepare an
    environment of their own (`gate`, beyond `alongside` already running): the build a round
    waits for goes first, since two cold builds side by side slow each other."""

    def __init__(
        self, work: Prefetch, workers: int = 1, gate: Foreground | None = None, alongside: int = 0
    ) -> None:
        self.work = work
        self.gate = gate
        self.alongside = alongside
        self.lock = threading.Lock()
        self.settled = threading.Condition(self.lock)
        self.wake = threading.Event()
        self.queue: list[tuple[int, EnvSpec]] = []
        self.running: set[int] = set()
        self.done: set[int] = set()
        self.stopped = False
        for n in range(max(1, workers)):
            threading.Thread(target=self._loop, name=f"tfbisect-prefetch-{n}", daemon=True).start()

    def want(self, items: list[tuple[int, EnvSpec]]) -> list[int]:
        """Queue these (in order) instead of what was queued; the ones new to the queue."""
        with self.lock:
            before = {i for i, _ in self.queue}
            self.queue = [(i, spec) for i, spec in items if i not in self.running and i not in self.done]
            fresh = [i for i, _ in self.queue if i not in before]
        self.wake.set()
        return fresh

    def stop(self) -> bool:
        """Nothing more starts; True when a preparation is still running."""
        with self.lock:
            self.stopped = True
            self.queue.clear()
            busy = bool(self.running)
        self.wake.set()
        return busy

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` for the preparations running to end; True when none runs."""
        with self.settled:
            return self.settled.wait_for(lambda: not self.running, timeout)

    def _next(self) -> tuple[int, EnvSpec] | bool | None:
        """The next item to prepare; None: wait to be woken; False: stopped; True: look again
        once the foreground has prepared its own."""
        with self.lock:
            if self.stopped:
                return False
            if not self.queue:
                self.wake.clear()
                return None
            if self.gate is not None and self.gate.busy and len(self.running) >= self.alongside:
                return True
            index, spec = self.queue.pop(0)
            self.running.add(index)
            return index, spec

    def _loop(self) -> None:
        while True:
            self.wake.wait()
            item = self._next()
            if item is False:
                return
            if item is None:
                continue
            if item is True:
                assert self.gate is not None
                self.gate.wait_idle(GATE_POLL)
                continue
            index, spec = item
            # Work ahead yields the CPU to the runs the search waits for: the processes this
            # thread starts (installs) inherit its niceness (Linux sets it per thread).  Again
            # for every item: a preparation a run came to wait for was given the default back.
            with contextlib.suppress(OSError, AttributeError):
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), AHEAD_NICENESS)
            try:
                self.work(spec)
            except BaseException:
                pass
            finally:
                with self.lock:
                    self.running.discard(index)
                    self.done.add(index)
                    self.settled.notify_all()


def halt_preparations() -> None:
    """Stop what a preparation started: its processes (installs) and its image builds."""
    kill_all()
    cancel_builds()


class Prefetcher:
    """At most `limit` environments a round prepared ahead through `work` (nothing when there is
    no `work` or the limit is 0); `say` tells the user which."""

    def __init__(
        self,
        work: Prefetch | None,
        limit: int,
        say: Callable[[str], None],
        halt: Callable[[], None] = halt_preparations,
        gate: Foreground | None = None,
    ) -> None:
        # Up to `limit` environments prepared at once, next to the round's runs, none while the
        # runs prepare their own (`gate`: the runner's foreground).
        self.ahead = Ahead(work, workers=limit, gate=gate) if work and limit > 0 else None
        self.limit = limit
        self.say = say
        self.halt = halt

    def prepare(self, wanted: Sequence[tuple[int, EnvSpec, str]]) -> None:
        """Prepare these (index, spec, version), most wanted first, at most `limit` of them.  A
        queued one no longer wanted is dropped; one already being prepared finishes and stays in
        the cache."""
        if self.ahead is None:
            return
        wanted = list(wanted)[: self.limit]
        fresh = self.ahead.want([(i, spec) for i, spec, _ in wanted])
        if fresh:
            version = {i: name for i, _, name in wanted}
            names = ", ".join(version[i] for i in fresh)
            self.say(f"   preparing ahead for the next round: {names}")

    def stop(self) -> None:
        """The search is over: nothing more is prepared ahead.  A preparation still running is
        stopped (its processes and builds), since no run will need it; its thread is a daemon,
        so nothing waits for it."""
        if self.ahead is not None and self.ahead.stop():
            self.halt()
            self.ahead.join(STOP_PATIENCE)
        self.ahead = None
