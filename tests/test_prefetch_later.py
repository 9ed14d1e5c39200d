"""Work ahead that never sits waiting: a preparation ahead that would wait for another's long
work (a Debian base being built) is parked (core/priority.py `Deferred`) and its worker takes
the next item, the rounds after next's among them (search/state.py `rounds_ahead`), at the
lowest priority.  The preparations are scripted here; the real base lock is in test_bases.py
and the whole of it in the real flagship bisection (`tox -e bench --docker-prefetch`)."""

from __future__ import annotations

import os
import threading
import time

from test_prefetch_gate import until
from tfbisect.core import priority
from tfbisect.core.spec import EnvSpec
from tfbisect.search.prefetch import AHEAD_NICENESS, LATER_NICENESS, Prefetcher
from tfbisect.search.state import BisectState, Class

SPECS = [EnvSpec(version, "3.10") for version in ("2.10.0", "2.11.0", "2.12.0", "2.13.0")]


def items(*indices: int) -> list[tuple[int, EnvSpec, str]]:
    return [(i, SPECS[i], SPECS[i].tf_version) for i in indices]


def test_a_parked_preparation_lets_its_worker_take_the_next_and_is_taken_again_once_ready() -> None:
    """One worker: the next round's candidate waits for a base being built, so the worker runs
    the round after next's meanwhile; once the base is there the parked one goes first again,
    before the other later one, and it ends as prepared (not as done when it was parked)."""
    base_built = threading.Event()
    started: list[str] = []
    prepared: list[str] = []

    def work(spec: EnvSpec) -> object:
        started.append(spec.tf_version)
        if spec.tf_version == "2.10.0" and not base_built.is_set():
            priority.defer_ahead("the Debian bullseye base", base_built.is_set)
        time.sleep(0.2)
        prepared.append(spec.tf_version)
        return True

    ahead = Prefetcher(work, 1, lambda _: None, halt=lambda: None)
    try:
        ahead.prepare(items(0), later=items(1, 2))
        assert until(lambda: prepared == ["2.11.0"]), started
        assert until(lambda: len(started) >= 3)
        time.sleep(0.3)
        assert started == ["2.10.0", "2.11.0", "2.12.0"], "a parked one is not taken before it is ready"
        base_built.set()
        assert until(lambda: "2.10.0" in prepared)
        assert prepared.index("2.10.0") > 0 and started.count("2.10.0") == 2
    finally:
        ahead.stop()


def test_the_rounds_after_next_wait_for_a_free_worker_and_run_at_the_lowest_priority() -> None:
    """The next round's go first; a later one only on a worker with nothing nearer to do, on a
    thread niced below the next round's (the processes it starts inherit that)."""
    release = threading.Event()
    niceness: dict[str, int] = {}

    def work(spec: EnvSpec) -> object:
        niceness[spec.tf_version] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert release.wait(30)
        return True

    ahead = Prefetcher(work, 2, lambda _: None, halt=lambda: None)
    try:
        ahead.prepare(items(0, 1), later=items(2))
        assert until(lambda: len(niceness) == 2)
        time.sleep(0.3)
        assert sorted(niceness) == ["2.10.0", "2.11.0"], "both workers take the next round's first"
        release.set()
        assert until(lambda: "2.12.0" in niceness)
        assert niceness["2.10.0"] == niceness["2.11.0"] == AHEAD_NICENESS
        assert niceness["2.12.0"] == LATER_NICENESS
    finally:
        release.set()
        ahead.stop()


def test_a_parked_run_of_the_round_is_not_taken_again_and_again_while_it_waits() -> None:
    """A run of this round's own parks too (the run, once free, prepares it itself); its worker
    does not spin on it, and takes it again, hurried, once the wait is over."""
    ready = threading.Event()
    calls: list[bool] = []

    def work(spec: EnvSpec) -> object:
        urgency = priority.current()
        assert urgency is not None
        calls.append(urgency.urgent)
        if not ready.is_set():
            priority.defer_ahead("a base", ready.is_set)
        return True

    ahead = Prefetcher(work, 1, lambda _: None, halt=lambda: None)
    try:
        ahead.prepare(items(0), urgent=1)
        time.sleep(1.0)
        assert calls == [True], "parked: looked at again only once it may go on"
        ready.set()
        assert until(lambda: calls == [True, True])
    finally:
        ahead.stop()


def test_a_parked_preparation_the_search_moved_past_is_forgotten() -> None:
    ready = threading.Event()
    started: list[str] = []

    def work(spec: EnvSpec) -> object:
        started.append(spec.tf_version)
        if spec.tf_version == "2.10.0":
            priority.defer_ahead("a base", ready.is_set)
        return True

    ahead = Prefetcher(work, 1, lambda _: None, halt=lambda: None)
    try:
        ahead.prepare(items(0))
        assert until(lambda: started == ["2.10.0"])
        ahead.prepare(items(1))  # the next round wants another one
        assert until(lambda: started == ["2.10.0", "2.11.0"])
        ready.set()
        time.sleep(0.5)
        assert started == ["2.10.0", "2.11.0"], "no round wants it any more"
    finally:
        ahead.stop()


def test_the_gate_opens_while_a_debian_base_is_built() -> None:
    """The runs preparing their own hold work ahead back, unless what they wait for is a Debian
    base being built: that leaves a core, and work ahead needing the base parks anyway."""
    foreground = priority.Foreground()
    started: list[str] = []
    building, built = threading.Event(), threading.Event()

    def build_base() -> None:
        with priority.long_build():
            building.set()
            assert built.wait(30)

    ahead = Prefetcher(
        lambda spec: started.append(spec.tf_version), 1, lambda _: None, halt=lambda: None, gate=foreground
    )
    builder = threading.Thread(target=build_base)
    try:
        with foreground.preparing():
            ahead.prepare(items(0))
            time.sleep(0.5)
            assert started == [], "a run prepares its own: nothing ahead starts"
            builder.start()
            assert building.wait(30)
            assert until(lambda: started == ["2.10.0"]), "the run only waits for the base"
    finally:
        built.set()
        builder.join(30)
        ahead.stop()


def test_defer_ahead_parks_work_ahead_only() -> None:
    ready = lambda: True  # noqa: E731
    priority.defer_ahead("a base", ready)  # a run's own preparation: it waits where it is
    for urgency in (priority.Urgency(), priority.Urgency(sure=True)):
        with priority.ahead(urgency):
            try:
                priority.defer_ahead("the Debian bullseye base", ready)
            except priority.Deferred as parked:
                assert parked.awaited == "the Debian bullseye base" and parked.ready()
            else:
                raise AssertionError("work ahead was not parked")


def replay(size: int, jobs: int, change: int) -> list[tuple[list[int], list[int], list[int]]]:
    """Each round of a bisection with one change point: (todo, after_round, rounds_ahead)."""
    state, rounds = BisectState(size, jobs), []
    todo = state.first_round()
    while todo:
        rounds.append((todo, state.after_round(todo), state.rounds_ahead(todo)))
        for i in todo:
            state.record(i, Class.OLD if i < change else Class.NEW)
        todo = state.next_round()
    return rounds


def test_the_rounds_after_next_hold_every_such_round_nearest_first() -> None:
    """For every single change point: the round after next is among the rounds ahead proposed
    two rounds before (with one worker, the two after that too), none of them among the next
    round's or what is known, and the nearer rounds come first."""
    for jobs in (1, 2, 3):
        for size in (3, 5, 17, 71):
            for change in range(1, size):
                rounds = replay(size, jobs, change)
                for k, (todo, nearer, later) in enumerate(rounds):
                    assert not set(later) & (set(nearer) | set(todo)), (size, change, k)
                    two_on = rounds[k + 2][0] if k + 2 < len(rounds) else []
                    assert set(two_on) <= set(later), (jobs, size, change, k, two_on, later)
                    for on in (3, 4) if jobs == 1 else ():
                        if k + on < len(rounds):
                            assert set(rounds[k + on][0]) <= set(later), (size, change, k, on)
    state = BisectState(17, 1)
    assert state.rounds_ahead([0, 16], depth=2) == [4, 12]
    assert state.rounds_ahead([0, 16], depth=3) == [4, 12, 2, 6, 10, 14]
    assert state.rounds_ahead([0, 16])[:6] == [4, 12, 2, 6, 10, 14]
    assert BisectState(3, 1).rounds_ahead([0, 2]) == []


def test_without_runs_ahead_the_rounds_after_next_are_not_prepared() -> None:
    """Where nothing runs ahead (a swarm, --no-run-ahead, no core to spare), preparing alone so
    far ahead would cost disk (an image a bet) rather than time."""
    started: list[str] = []
    ahead = Prefetcher(
        lambda spec: started.append(spec.tf_version), 2, lambda _: None, halt=lambda: None, later=False
    )
    try:
        ahead.prepare(items(0), later=items(1, 2))
        assert until(lambda: started == ["2.10.0"])
        time.sleep(0.5)
        assert started == ["2.10.0"]
    finally:
        ahead.stop()


def test_a_bet_that_could_not_be_prepared_is_tried_again_once_sure() -> None:
    """A bet is not prepared where that would build a Debian base; once the next round surely
    runs it (or a run of the round waits for it), it is tried again."""
    tries: list[tuple[str, bool]] = []

    def work(spec: EnvSpec) -> object:
        urgency = priority.current()
        assert urgency is not None
        tries.append((spec.tf_version, urgency.sure))
        return urgency.sure  # a bet: "the base is not built yet"

    ahead = Prefetcher(work, 1, lambda _: None, halt=lambda: None)
    try:
        ahead.prepare(items(0, 1))
        assert until(lambda: len(tries) == 2)
        ahead.prepare(items(0, 1))  # still bets: not again
        time.sleep(0.5)
        assert tries == [("2.10.0", False), ("2.11.0", False)]
        ahead.prepare(items(1), sure=[1])
        assert until(lambda: tries[-1] == ("2.11.0", True))
        ahead.prepare(items(1), sure=[1])  # prepared now: never again
        time.sleep(0.5)
        assert tries.count(("2.11.0", True)) == 1
    finally:
        ahead.stop()


def test_the_next_rounds_beyond_the_limit_go_before_the_rounds_after_next() -> None:
    """With several workers a round has more candidates than --prefetch: the rest of them are
    likelier to be needed than anything further on, so a free worker takes them first, at the
    next round's priority."""
    order: list[tuple[str, int]] = []

    def work(spec: EnvSpec) -> object:
        order.append((spec.tf_version, os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
        return True

    ahead = Prefetcher(work, 1, lambda _: None, halt=lambda: None)
    try:
        ahead.prepare(items(0, 1, 2), later=items(3))
        assert until(lambda: len(order) == 4)
        assert order == [
            ("2.10.0", AHEAD_NICENESS),
            ("2.11.0", AHEAD_NICENESS),
            ("2.12.0", AHEAD_NICENESS),
            ("2.13.0", LATER_NICENESS),
        ]
    finally:
        ahead.stop()
