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
import time
from collections.abc import Callable, Sequence

from tfbisect.core.priority import Deferred, Foreground, Urgency, ahead, long_build_running
from tfbisect.core.spec import EnvSpec
from tfbisect.envs.registry import cancel_all as cancel_builds
from tfbisect.platform.process import kill_all

# Preparing an environment ahead of its run: `Runner.prefetch` (none when a test scripts the runs).
Prefetch = Callable[[EnvSpec], object]


AHEAD_NICENESS = 10
LATER_NICENESS = 19  # the rounds after next's: beside the next round's runs ahead, they yield to them
# How many of the rounds after next's are queued per worker: with --jobs 1, the two after next,
# the four after those and two more (each a bet), for a worker that waits for a base being built.
LATER_PER_WORKER = 4


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
        self.later: set[int] = set()  # the rounds after next's: the lowest priority
        self.rank: dict[int, int] = {}  # each wanted one's place in the latest `want`
        # Put back while they would wait for another's long work (priority.Deferred): when ready.
        self.parked: dict[int, Callable[[], bool]] = {}
        self.running: dict[int, Urgency] = {}
        self.done: set[int] = set()
        # Not prepared on a bet (a Debian base is not built for one): tried again once sure or urgent.
        self.failed_bets: set[int] = set()
        self.stopped = False
        for n in range(max(1, workers)):
            threading.Thread(target=self._loop, name=f"tfbisect-prefetch-{n}", daemon=True).start()

    def want(
        self,
        items: list[tuple[int, EnvSpec]],
        urgent: Sequence[int] = (),
        keep: Sequence[int] = (),
        sure: Sequence[int] = (),
        later: Sequence[int] = (),
    ) -> list[int]:
        """Queue these (in order) instead of what was queued; the ones new to the queue.  Those
        of `urgent` are a run's of this round: a run waits for them soon; those of `sure` the
        next round runs whatever this one finds (the others are bets: core/priority.py); those
        of `later` the rounds after next may run (the lowest priority).  A preparation running
        that is neither among `items` nor in `keep` (this round's runs) is dropped: no later
        round of the search can need it."""
        with self.lock:
            before = {i for i, _ in self.queue}
            self.urgent, self.sure, self.later = set(urgent), set(sure), set(later)
            self.queue = [(i, spec) for i, spec in items if self._wanted_again(i)]
            self.rank = {i: place for place, (i, _) in enumerate(items)}
            self.parked = {i: ready for i, ready in self.parked.items() if i in self.rank}
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
            self.parked.clear()
            running = list(self.running.values())
        for urgency in running:
            urgency.drop()
        self.wake.set()
        return bool(running)

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` for the preparations running to end; True when none runs."""
        with self.settled:
            return self.settled.wait_for(lambda: not self.running, timeout)

    def _wanted_again(self, index: int) -> bool:
        """Whether a wanted item is queued: not running, not prepared (or failed) already, and
        not failed as a bet unless it is no longer one."""
        if index in self.running or index in self.done:
            return False
        return index not in self.failed_bets or index in self.sure or index in self.urgent

    def _next(self) -> tuple[int, EnvSpec, Urgency] | bool | None:
        """The next item to prepare; None: wait to be woken; False: stopped; True: look again
        soon (once the foreground has prepared its own, or a parked one is ready)."""
        with self.lock:
            if self.stopped:
                return False
            if not self.queue:
                self.wake.clear()
                return None
            gated = self._gated()
            pick = next((k for k, (i, _) in enumerate(self.queue) if self._takeable(i, gated)), None)
            if pick is None:
                return True
            index, spec = self.queue.pop(pick)
            self.parked.pop(index, None)
            self.failed_bets.discard(index)
            urgency = self.running[index] = Urgency(sure=index in self.sure)
            if index in self.urgent:
                urgency.hurry()
            return index, spec, urgency

    def _gated(self) -> bool:
        """Whether the runs are preparing their own environments (beyond `alongside` already
        running ahead), so that nothing new starts ahead: unless they wait for a Debian base
        being built, which leaves a core (core/priority.py `long_build`)."""
        if self.gate is None or self.gate.busy == 0 or len(self.running) < self.alongside:
            return False
        return not long_build_running()

    def _takeable(self, index: int, gated: bool) -> bool:
        """Whether a worker may take this item now.  A parked one once its wait is over (a
        question that fails counts as over: the preparation then waits or fails as it would
        have), past the gate: it had started before, and would have gone on had it waited
        where it was.  A run of this round's past the gate too: it is as much the round's as
        the run preparing."""
        ready = self.parked.get(index)
        if ready is not None:
            try:
                return ready()
            except Exception:
                return True
        return index in self.urgent or not gated

    def _park(self, index: int, spec: EnvSpec, deferred: Deferred, urgency: Urgency) -> bool:
        """Put a deferred item back in its place in the queue, unless the search is past it."""
        if self.stopped or urgency.dropped or index not in self.rank:
            return False
        self.parked[index] = deferred.ready
        # Never queued while it ran (`want` leaves running items out): back in its place.
        self.queue.append((index, spec))
        self.queue.sort(key=lambda item: self.rank.get(item[0], len(self.rank)))
        self.wake.set()
        return True

    def _pause(self) -> None:
        """Nothing to take now: wait for the foreground to prepare its own, or a while for a
        parked item's wait to end."""
        if self._gated():
            assert self.gate is not None
            self.gate.wait_idle(GATE_POLL)
        else:
            time.sleep(GATE_POLL)

    def _loop(self) -> None:
        while True:
            self.wake.wait()
            item = self._next()
            if item is False:
                return
            if item is None:
                continue
            if item is True:
                self._pause()
                continue
            index, spec, urgency = item
            self._nice(urgency, index)
            deferred: Deferred | None = None
            prepared: object = False
            try:
                with ahead(urgency):
                    prepared = self.work(spec)
            except Deferred as waits:
                deferred = waits
            except BaseException:
                pass
            finally:
                with self.lock:
                    self.running.pop(index, None)
                    if deferred is None or not self._park(index, spec, deferred, urgency):
                        failed_bet = prepared is False and urgency.bet
                        (self.failed_bets if failed_bet else self.done).add(index)
                    self.settled.notify_all()

    def _nice(self, urgency: Urgency, index: int) -> None:
        """Work ahead yields the CPU to the runs the search waits for: the processes this thread
        starts (installs) inherit its niceness (Linux sets it per thread), the rounds after next's
        the lowest.  Again for every item: a preparation a run came to wait for was given the
        default back.  A run of this round's own is not niced (where the thread may lower it again)."""
        with contextlib.suppress(OSError, AttributeError):
            own = os.getpriority(os.PRIO_PROCESS, os.getpid())
            niceness = own if urgency.urgent else LATER_NICENESS if index in self.later else AHEAD_NICENESS
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), niceness)


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
        later: bool = True,
    ) -> None:
        # Up to `limit` environments prepared at once, next to the round's runs, none while the
        # runs prepare their own (`gate`: the runner's foreground).  The rounds after next's
        # only with `later`: where they run ahead (prepared alone, so far ahead, they would
        # cost disk rather than save time).
        self.ahead = Ahead(work, workers=limit, gate=gate) if work and limit > 0 else None
        self.limit = limit
        self.later_rounds = later
        self.say = say
        self.halt = halt

    def prepare(
        self,
        wanted: Sequence[tuple[int, EnvSpec, str]],
        urgent: int = 0,
        keep: Sequence[int] = (),
        sure: Sequence[int] = (),
        later: Sequence[tuple[int, EnvSpec, str]] = (),
    ) -> None:
        """Prepare these (index, spec, version), most wanted first, at most `limit` of them at
        once; the first `urgent` are runs of the round in progress (waiting for a worker),
        prepared at once and at full priority, the others (the next round's) once the round's
        runs have prepared their own.  A queued one no longer wanted is dropped, and so is one
        being prepared unless it is in `keep` (the round's runs): the search has moved past it.
        Those of `sure` the next round runs whatever this round finds; the others are bets
        (core/priority.py).  Those of `later` (the rounds after next's, nearest first, up to
        LATER_PER_WORKER per worker) only a worker with nothing nearer to do takes: the next
        round's are all taken, or wait for another's long work (a Debian base being built)."""
        if self.ahead is None:
            return
        # The next round's beyond the limit (with several workers) before the rounds after next's.
        wanted, tail = list(wanted)[: self.limit], list(wanted)[self.limit :]
        taken, nearer = {i for i, _, _ in wanted}, {i for i, _, _ in tail}
        further = [item for item in [*tail, *later] if item[0] not in taken][
            : LATER_PER_WORKER * self.limit if self.later_rounds else 0
        ]
        fresh = self.ahead.want(
            [(i, spec) for i, spec, _ in [*wanted, *further]],
            urgent=[i for i, _, _ in wanted[:urgent]],
            keep=keep,
            sure=sure,
            later=[i for i, _, _ in further if i not in nearer],
        )
        version = {i: name for i, _, name in wanted}
        names = ", ".join(version[i] for i in fresh if i in version)
        if names:
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
