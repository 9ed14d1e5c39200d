"""The round executor and the work ahead, apart from any search: what a stop signal does to a
round's runs, and what stopping the search does to a preparation still running."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from tfbisect.core.outcome import Outcome
from tfbisect.core.record import RunRecord
from tfbisect.core.spec import EnvSpec
from tfbisect.runs.runner import RunResult
from tfbisect.search.prefetch import Prefetcher
from tfbisect.search.rounds import RoundExecutor

SPECS = [EnvSpec(version, "3.10") for version in ("2.10.0", "2.11.0", "2.12.0")]


def result(spec: EnvSpec) -> RunResult:
    record = RunRecord(
        spec=spec,
        scenario="s",
        scenario_sha256="0",
        outcome=Outcome.REPRODUCED,
        exit_code=0,
        document=None,
        failure=None,
        log_tail="",
        command="",
        started_at="",
        duration_s=1.0,
    )
    return RunResult(record, reused=False, seconds=1.0, log=Path("log"))


def test_a_round_hands_back_every_result_in_its_order_and_prepares_meanwhile() -> None:
    events: list[str] = []
    executor = RoundExecutor(result, jobs=2, halt=lambda: events.append("halt"))
    executor.run(
        list(enumerate(SPECS)),
        lambda i, done: events.append(f"{i}:{done.record.spec.tf_version}"),
        lambda: events.append("meanwhile"),
    )
    assert events == ["meanwhile", "0:2.10.0", "1:2.11.0", "2:2.12.0"]


def test_a_stopped_round_kills_its_runs_and_keeps_the_ones_that_finished() -> None:
    """The second run is stopped (Ctrl-C) after the third finished: the runs are killed, the
    first and the third still reach the log, and the stop goes on."""
    third_done = threading.Event()

    def execute(spec: EnvSpec) -> RunResult:
        if spec is SPECS[1]:
            assert third_done.wait(30)
            raise KeyboardInterrupt
        if spec is SPECS[2]:
            third_done.set()
        return result(spec)

    halted: list[bool] = []
    done: list[int] = []
    executor = RoundExecutor(execute, jobs=3, halt=lambda: halted.append(True))
    with pytest.raises(KeyboardInterrupt):
        executor.run(list(enumerate(SPECS)), lambda i, _: done.append(i))
    assert halted == [True]
    assert done == [0, 2]


def test_stopping_the_search_stops_a_preparation_still_running_and_nothing_idle() -> None:
    started, release = threading.Event(), threading.Event()
    prepared: list[str] = []
    said: list[str] = []

    def work(spec: EnvSpec) -> object:
        prepared.append(spec.tf_version)
        started.set()
        assert release.wait(30)
        return True

    halted: list[bool] = []
    ahead = Prefetcher(work, 1, said.append, halt=lambda: halted.append(True))
    ahead.prepare([(i, spec, spec.tf_version) for i, spec in enumerate(SPECS)])
    assert said == ["   preparing ahead for the next round: 2.10.0"], "at most the limit (1)"
    assert started.wait(30)
    ahead.stop()
    release.set()
    assert halted == [True] and prepared == ["2.10.0"]
    ahead.stop()  # a second stop (the driver's `finally`) does nothing more
    assert halted == [True]

    idle = Prefetcher(work, 2, said.append, halt=lambda: halted.append(True))
    idle.stop()
    assert halted == [True], "nothing was being prepared: nothing to stop"
    assert Prefetcher(work, 0, said.append).ahead is None, "--prefetch 0 prepares nothing"


def test_up_to_the_limit_are_prepared_at_once() -> None:
    """--prefetch 2: the round's other end and the next midpoint build side by side (an image
    takes minutes; one at a time, the second waits while the CPUs idle on its downloads)."""
    started: list[str] = []
    both, release = threading.Barrier(2, timeout=30), threading.Event()

    def work(spec: EnvSpec) -> object:
        started.append(spec.tf_version)
        both.wait()  # broken (an error) unless two preparations run at the same time
        assert release.wait(30)
        return True

    ahead = Prefetcher(work, 2, lambda _: None, halt=lambda: None)
    ahead.prepare([(i, spec, spec.tf_version) for i, spec in enumerate(SPECS)])
    deadline = time.monotonic() + 30
    while len(started) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(started) == sorted(spec.tf_version for spec in SPECS[:2]) and not both.broken
    release.set()
    ahead.stop()
