"""Prefetch: the environments the next round may need, prepared while this round runs (both
outcomes of a midpoint, as mozregression does), up to --prefetch of them at once on daemon
threads, at a lower CPU priority than the runs the search waits for (an image's build in the
engine too: envs/docker_builds.py gives a build from a niced thread the fewest CPU shares).

None starts while the runs prepare their own environments, except a run of the round waiting
for a worker, which goes at once and at full priority; one a run comes to wait for is hurried,
one the search has moved past dropped (core/priority.py).

What to prepare is the search's choice; this module only queues it, prepares it through a
`prefetch` callable, and stops what is still being prepared once the search is over.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence

from tfbisect.core.priority import Foreground, Urgency, ahead
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
    never waits long for one).  `want` replaces what is queued, and drops what is being prepared
    that the search has moved past.

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
        self.urgent: set[int] = set()  # the round's own runs: prepared at once, at full priority
        self.sure: set[int] = set()  # the next round's runs whatever this round finds
        self.running: dict[int, Urgency] = {}
        self.done: set[int] = set()
        self.stopped = False
        for n in range(max(1, workers)):
            threading.Thread(target=self._loop, name=f"tfbisect-prefetch-{n}", daemon=True).start()

    def want(
        self,
        items: list[tuple[int, EnvSpec]],
        urgent: Sequence[int] = (),
        keep: Sequence[int] = (),
        sure: Sequence[int] = (),
    ) -> list[int]:
        """Queue these (in order) instead of what was queued; the ones new to the queue.  Those
        of `urgent` are a run's of this round: a run waits for them soon; those of `sure` the
        next round runs whatever this one finds (the others are bets: core/priority.py).  A
        preparation running that is neither among `items` nor in `keep` (this round's runs) is
        dropped: no later round of the search can need it."""
        with self.lock:
            before = {i for i, _ in self.queue}
            self.queue = [(i, spec) for i, spec in items if i not in self.running and i not in self.done]
            self.urgent = set(urgent)
            self.sure = set(sure)
            fresh = [i for i, _ in self.queue if i not in before]
            wanted = {i for i, _ in items} | set(keep)
            unneeded = [urgency for i, urgency in self.running.items() if i not in wanted]
            for i, urgency in self.running.items():
                if i in self.urgent:
                    urgency.hurry()
        for urgency in unneeded:
            urgency.drop()
        self.wake.set()
        return fresh

    def stop(self) -> bool:
        """Nothing more starts, and what is being prepared is dropped: the search is over and no
        run will need it (so a preparation halted next says dropped, never failed: core/progress.py);
        True when a preparation is still running."""
        with self.lock:
            self.stopped = True
            self.queue.clear()
            running = list(self.running.values())
        for urgency in running:
            urgency.drop()
        self.wake.set()
        return bool(running)

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` for the preparations running to end; True when none runs."""
        with self.settled:
            return self.settled.wait_for(lambda: not self.running, timeout)

    def _next(self) -> tuple[int, EnvSpec, Urgency] | bool | None:
        """The next item to prepare; None: wait to be woken; False: stopped; True: look again
        once the foreground has prepared its own."""
        with self.lock:
            if self.stopped:
                return False
            if not self.queue:
                self.wake.clear()
                return None
            gated = self.gate is not None and self.gate.busy and len(self.running) >= self.alongside
            # A run of this round goes past the gate: it is as much the round's as the run preparing.
            pick = next((k for k, (i, _) in enumerate(self.queue) if i in self.urgent or not gated), None)
            if pick is None:
                return True
            index, spec = self.queue.pop(pick)
            urgency = self.running[index] = Urgency(sure=index in self.sure)
            if index in self.urgent:
                urgency.hurry()
            return index, spec, urgency

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
            index, spec, urgency = item
            # Work ahead yields the CPU to the runs the search waits for: the processes this
            # thread starts (installs) inherit its niceness (Linux sets it per thread).  Again
            # for every item: a preparation a run came to wait for was given the default back.
            # A run of this round's own is not niced (where the thread may lower it again).
            with contextlib.suppress(OSError, AttributeError):
                own = os.getpriority(os.PRIO_PROCESS, os.getpid())
                niceness = own if urgency.urgent else AHEAD_NICENESS
                os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)
            try:
                with ahead(urgency):
                    self.work(spec)
            except BaseException:
                pass
            finally:
                with self.lock:
                    self.running.pop(index, None)
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

    def prepare(
        self,
        wanted: Sequence[tuple[int, EnvSpec, str]],
        urgent: int = 0,
        keep: Sequence[int] = (),
        sure: Sequence[int] = (),
    ) -> None:
        """Prepare these (index, spec, version), most wanted first, at most `limit` of them; the
        first `urgent` are runs of the round in progress (waiting for a worker), prepared at once
        and at full priority, the others (the next round's) once the round's runs have prepared
        their own.  A queued one no longer wanted is dropped, and so is one being prepared unless
        it is in `keep` (the round's runs): the search has moved past it.  Those of `sure` the
        next round runs whatever this round finds; the others are bets (core/priority.py)."""
        if self.ahead is None:
            return
        wanted = list(wanted)[: self.limit]
        fresh = self.ahead.want(
            [(i, spec) for i, spec, _ in wanted],
            urgent=[i for i, _, _ in wanted[:urgent]],
            keep=keep,
            sure=sure,
        )
        if fresh:
            version = {i: name for i, _, name in wanted}
            names = ", ".join(version[i] for i in fresh)
            self.say(f"   preparing ahead for the next round: {names}")

    def stop(self) -> None:
        """The search is over: nothing more is prepared ahead.  A preparation still running is
        stopped (its processes and builds), since no run will need it, and waited for up to
        STOP_PATIENCE (a cancelled build removes its step images); its thread is a daemon, so
        nothing waits for it longer."""
        if self.ahead is not None and self.ahead.stop():
            self.halt()
            self.ahead.join(STOP_PATIENCE)
        self.ahead = None
