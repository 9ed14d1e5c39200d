"""The runs a search waits for go before the work ahead (core/priority.py): a preparation ahead
starts only once the runs have prepared their own environments, a run that comes to wait for
an environment a prefetch is still preparing hurries that preparation, and a stopped search
waits (briefly) for what it halted, so that a cancelled build can clean up after itself.  The
preparations are scripted here; what hurrying and cancelling do to a real build is checked on
the engine in test_prefetch_priority.py."""

from __future__ import annotations

import functools
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tfbisect.core import priority
from tfbisect.core.progress import Progress
from tfbisect.core.spec import EnvSpec, Flavour, KerasVariant
from tfbisect.envs.docker_builds import StepTrail
from tfbisect.runs import ahead as ahead_module
from tfbisect.runs.runner import Runner, Settings
from tfbisect.search.prefetch import Prefetcher

SPECS = [EnvSpec(version, "3.10") for version in ("2.10.0", "2.11.0", "2.12.0")]


def until(condition: Any, seconds: float = 30) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_nothing_is_prepared_ahead_while_the_runs_prepare_their_own() -> None:
    foreground = priority.Foreground()
    started: list[str] = []
    release = threading.Event()

    def work(spec: EnvSpec) -> object:
        started.append(spec.tf_version)
        assert release.wait(30)
        return True

    ahead = Prefetcher(work, 2, lambda _: None, halt=lambda: None, gate=foreground)
    try:
        with foreground.preparing():
            ahead.prepare([(i, spec, spec.tf_version) for i, spec in enumerate(SPECS)])
            time.sleep(0.5)
            assert started == [], "a run's own build is in progress: nothing ahead starts"
        assert until(lambda: len(started) == 2), "the run's environment is ready: both start"
        assert sorted(started) == ["2.10.0", "2.11.0"]
    finally:
        release.set()
        ahead.stop()


def test_a_preparation_ahead_already_running_goes_on_when_a_run_starts_preparing() -> None:
    """The gate holds back what has not started; it never stops what runs (that is `stop`'s)."""
    foreground = priority.Foreground()
    started: list[str] = []
    finished: list[str] = []
    release = threading.Event()

    def work(spec: EnvSpec) -> object:
        started.append(spec.tf_version)
        assert release.wait(30)
        finished.append(spec.tf_version)
        return True

    ahead = Prefetcher(work, 1, lambda _: None, halt=lambda: None, gate=foreground)
    ahead.prepare([(0, SPECS[0], "2.10.0")])
    assert until(lambda: started == ["2.10.0"])
    with foreground.preparing():
        release.set()
        assert until(lambda: finished == ["2.10.0"])
    ahead.stop()


def test_a_stopped_search_waits_for_the_preparations_it_halted_and_leaves_none_running() -> None:
    """Stop halts what runs and waits for it to end (a cancelled build removes its step images
    then): nothing ahead is left running, and nothing queued starts afterwards."""
    foreground = priority.Foreground()
    halted = threading.Event()
    ended: list[str] = []
    started: list[str] = []

    def work(spec: EnvSpec) -> object:
        started.append(spec.tf_version)
        assert halted.wait(30)
        time.sleep(0.3)  # the cleanup after the cancel
        ended.append(spec.tf_version)
        return False

    ahead = Prefetcher(work, 1, lambda _: None, halt=halted.set, gate=foreground)
    ahead.prepare([(i, spec, spec.tf_version) for i, spec in enumerate(SPECS)])
    assert until(lambda: started == ["2.10.0"])
    ahead.stop()
    assert ended == ["2.10.0"], "stop returned before the halted preparation had ended"
    time.sleep(0.3)
    assert started == ["2.10.0"], "nothing queued starts after the stop"


def test_the_rounds_own_run_is_prepared_at_once_at_full_priority_and_the_next_rounds_after() -> None:
    """A run of the round waiting for a worker goes past the gate, hurried from the start (a run
    waits for it soon); the next round's candidate waits for the round's own preparations."""
    foreground = priority.Foreground()
    started: list[tuple[str, bool]] = []
    release = threading.Event()

    def work(spec: EnvSpec) -> object:
        urgency = priority.current()
        assert urgency is not None
        started.append((spec.tf_version, urgency.urgent))
        assert release.wait(30)
        return True

    ahead = Prefetcher(work, 2, lambda _: None, halt=lambda: None, gate=foreground)
    try:
        with foreground.preparing():
            ahead.prepare([(1, SPECS[1], "2.11.0"), (2, SPECS[2], "2.12.0")], urgent=1)
            assert until(lambda: started == [("2.11.0", True)])
            time.sleep(0.5)
            assert started == [("2.11.0", True)], "the next round's waits for the round's own"
        assert until(lambda: started == [("2.11.0", True), ("2.12.0", False)])
    finally:
        release.set()
        ahead.stop()


def test_a_preparation_the_search_moved_past_is_dropped_and_one_of_the_round_is_kept() -> None:
    """Round r prepared both outcomes; round r+1 runs one of them (kept) and wants new ones:
    the other is dropped (an image build is cancelled) and the rest goes on."""
    dropped: list[str] = []
    started: list[str] = []
    release = threading.Event()

    def work(spec: EnvSpec) -> object:
        urgency = priority.current()
        assert urgency is not None
        urgency.on_drop(lambda: dropped.append(spec.tf_version))
        started.append(spec.tf_version)
        assert release.wait(30)
        return True

    ahead = Prefetcher(work, 3, lambda _: None, halt=lambda: None)
    try:
        ahead.prepare([(0, SPECS[0], "2.10.0"), (1, SPECS[1], "2.11.0")])
        assert until(lambda: sorted(started) == ["2.10.0", "2.11.0"])
        ahead.prepare([(2, SPECS[2], "2.12.0")], keep=[1])
        assert until(lambda: dropped == ["2.10.0"])
        assert until(lambda: "2.12.0" in started)
        time.sleep(0.2)
        assert dropped == ["2.10.0"], "the round's own (kept) and the new one are not dropped"
    finally:
        release.set()
        ahead.stop()


def test_a_hurried_preparation_is_never_dropped_and_a_dropped_one_never_hurried() -> None:
    waited, moved_past = priority.Urgency(), priority.Urgency()
    calls: list[str] = []
    for name, urgency in (("waited", waited), ("moved past", moved_past)):
        urgency.on_hurry(functools.partial(calls.append, f"hurry {name}"))
        urgency.on_drop(functools.partial(calls.append, f"drop {name}"))
    waited.hurry()
    waited.drop()
    moved_past.drop()
    moved_past.hurry()
    assert calls == ["hurry waited", "drop moved past"]
    assert waited.urgent and not waited.dropped and moved_past.dropped and not moved_past.urgent


def test_hurrying_calls_each_listener_once_and_a_late_listener_at_once() -> None:
    urgency = priority.Urgency()
    calls: list[str] = []
    forget = urgency.on_hurry(lambda: calls.append("forgotten"))
    urgency.on_hurry(lambda: calls.append("a"))
    urgency.on_hurry(lambda: (_ for _ in ()).throw(RuntimeError("a step already gone")))
    forget()
    assert not urgency.urgent and calls == []
    urgency.hurry()
    urgency.hurry()
    assert urgency.urgent and calls == ["a"], "a failing listener never stops the others"
    urgency.on_hurry(lambda: calls.append("late"))
    assert calls == ["a", "late"]


def test_only_a_prefetching_thread_prepares_ahead() -> None:
    urgency = priority.Urgency()
    seen: list[priority.Urgency | None] = []
    with priority.ahead(urgency):
        seen.append(priority.current())
        other = threading.Thread(target=lambda: seen.append(priority.current()))
        other.start()
        other.join()
    seen.append(priority.current())
    assert seen == [urgency, None, None]


class Scenario:
    name, sha256, dependencies = "s", "0" * 64, ()


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Runner:
    monkeypatch.setattr(ahead_module, "PREFETCH_MIN_FREE_BYTES", 0)
    nothing: Any = None  # the catalogue: no version is resolved here
    found = Runner(nothing, Settings(tmp_path / "reports", tmp_path / "cache"), Progress(quiet=True), have={})
    monkeypatch.setattr(found, "stored", lambda spec, scenario: None)
    return found


def test_a_run_waiting_for_a_prefetch_of_its_environment_hurries_it(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The prefetch prepares ahead (its thread knows its urgency, the foreground is idle); the
    run of the same environment waits for it instead of building twice, hurries it, and counts
    as the foreground meanwhile (no other prefetch starts)."""
    inside, release = threading.Event(), threading.Event()
    seen: dict[str, object] = {}

    def scripted(spec: EnvSpec, scenario: object) -> tuple[object, object]:
        if priority.current() is not None:
            seen["ahead"] = priority.current()
            seen["foreground while ahead"] = runner.preparing.foreground.busy
            inside.set()
            assert release.wait(30)
            seen["hurried"] = priority.current().urgent  # type: ignore[union-attr]
            return "lock", "built ahead"
        seen["foreground while the run prepares"] = runner.preparing.foreground.busy
        return "lock", "reused"

    monkeypatch.setattr(runner, "prepare_now", scripted)
    scenario: Any = Scenario()
    ahead = threading.Thread(
        target=lambda: seen.setdefault("prefetched", runner.prefetch(SPECS[0], scenario))
    )
    ahead.start()
    assert inside.wait(30)
    run = threading.Thread(target=lambda: seen.setdefault("run", runner.prepare(SPECS[0], scenario)))
    run.start()
    assert until(lambda: runner.preparing.foreground.busy == 1), "the waiting run is the foreground's"
    urgency = seen["ahead"]
    assert isinstance(urgency, priority.Urgency) and until(lambda: urgency.urgent)
    release.set()
    ahead.join(30)
    run.join(30)
    assert seen["foreground while ahead"] == 0 and seen["hurried"] is True
    assert seen["prefetched"] is True and seen["run"] == ("lock", "reused")
    assert seen["foreground while the run prepares"] == 1
    key = f"{SPECS[0].backend}:{SPECS[0].key}"
    assert runner.preparing.foreground.busy == 0 and runner.preparing.urgency(key) is None, "nothing left"


def test_a_run_of_another_environment_hurries_nothing(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    inside, release = threading.Event(), threading.Event()

    def scripted(spec: EnvSpec, scenario: object) -> tuple[object, object]:
        if priority.current() is not None:
            inside.set()
            assert release.wait(30)
        return "lock", spec.tf_version

    monkeypatch.setattr(runner, "prepare_now", scripted)
    scenario: Any = Scenario()
    ahead = threading.Thread(target=lambda: runner.prefetch(SPECS[0], scenario))
    ahead.start()
    assert inside.wait(30)
    urgency = runner.preparing.urgency(f"{SPECS[0].backend}:{SPECS[0].key}")
    assert urgency is not None
    assert runner.prepare(SPECS[1], scenario) == ("lock", "2.11.0")  # type: ignore[comparison-overlap]
    assert not urgency.urgent
    release.set()
    ahead.join(30)


# What the classic builder streams: two steps made, one from the cache, one cancelled mid-way.
BUILD_OUTPUT = [
    "Step 1/5 : FROM scratch AS cpu\n",
    " ---> \n",
    "Step 2/5 : COPY probe /probe\n",
    " ---> Using cache\n",
    " ---> 0123456789ab\n",
    "Step 3/5 : COPY tag /tag\n",
    " ---> 1111111111aa\n",
    "Step 4/5 : RUN echo\n",
    " ---> Running in 2222222222bb\n",
    "Removing intermediate container 2222222222bb\n",
    " ---> 3333333333cc\n",
    "Step 5/5 : RUN sleep 60\n",
    " ---> Running in 4444444444dd\n",
]


def test_the_step_trail_keeps_the_images_a_build_made_and_its_running_step() -> None:
    trail = StepTrail()
    started = [trail.feed(text) for text in BUILD_OUTPUT]
    assert [s for s in started if s] == ["2222222222bb", "4444444444dd"]
    assert trail.made == ["1111111111aa", "3333333333cc"], "the cached step's image is not the build's"
    assert trail.container == "4444444444dd"
    trail.feed(" ---> 5555555555ee\nSuccessfully built 5555555555ee\n")
    assert trail.container is None and trail.made[-1] == "5555555555ee"


def test_an_install_ahead_halted_when_the_search_ends_says_dropped_and_a_real_failure_failed() -> None:
    """A venv install ahead that the search's end halts (its process killed, so the install raises
    as a failed one would) says dropped, never failed; an install ahead that fails by itself still
    says failed, and a step stopped by a stop signal says stopped."""
    import io

    from tfbisect.core.errors import EnvironmentBuildError

    out = io.StringIO()
    progress = Progress(out)
    halted = threading.Event()
    started = threading.Event()

    def install(spec: EnvSpec) -> object:
        with progress.step(spec.tf_version, "installing lock.txt into a new venv"):
            started.set()
            # A real failure comes by itself; the halted one when the halt kills the install.
            assert spec.tf_version == "2.10.0" or halted.wait(30)
            raise EnvironmentBuildError("Installing TF failed: exit -9", "see the full log.")

    failing = Prefetcher(install, 1, lambda _: None, halt=lambda: None)
    failing.prepare([(0, SPECS[0], "2.10.0")])
    assert until(lambda: "2.10.0] installing lock.txt into a new venv: " in out.getvalue())
    failing.stop()
    halted_one = Prefetcher(install, 1, lambda _: None, halt=halted.set)
    started.clear()
    halted_one.prepare([(1, SPECS[1], "2.11.0")])
    assert started.wait(30)
    halted_one.stop()
    assert until(lambda: "2.11.0] installing lock.txt into a new venv: " in out.getvalue())
    with pytest.raises(KeyboardInterrupt), progress.step("2.12.0", "installing lock.txt into a new venv"):
        raise KeyboardInterrupt
    ended = [line for line in out.getvalue().splitlines() if not line.endswith("…")]
    assert ended[0].startswith("[2.10.0] installing lock.txt into a new venv: failed after "), ended
    assert ended[1].startswith("[2.11.0] installing lock.txt into a new venv: dropped after "), ended
    assert "failed" not in ended[1] and ended[1].endswith("(the search no longer needs it)")
    assert ended[2].startswith("[2.12.0] installing lock.txt into a new venv: stopped after "), ended


def test_a_prefetch_on_a_short_disk_prepares_nothing_and_says_so_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below the free space work ahead leaves, nothing is prepared ahead, and the user learns why
    (once, not once per version): a silent prefetch that stopped would look like a slow one."""
    monkeypatch.setattr(ahead_module, "PREFETCH_MIN_FREE_BYTES", 1 << 62)
    said: list[str] = []
    progress = Progress(quiet=True)
    monkeypatch.setattr(progress, "say", said.append)
    nothing: Any = None
    runner = Runner(nothing, Settings(tmp_path / "reports", tmp_path / "cache"), progress, have={})
    monkeypatch.setattr(runner, "stored", lambda spec, scenario: None)
    monkeypatch.setattr(runner, "prepare_now", lambda spec, scenario: pytest.fail("prepared on a short disk"))
    scenario: Any = Scenario()
    for version in ("2.3.0", "2.4.0"):
        spec = EnvSpec(version, "3.8", Flavour.CPU, KerasVariant.DEFAULT, "venv")
        assert runner.prefetch(spec, scenario, run=True) is False
    assert len(said) == 1 and "prefetch paused" in said[0] and "cache prune" in said[0], said


def test_a_run_ahead_keeps_a_record_only_of_an_end_that_speaks_for_its_version() -> None:
    """At the fewest CPU shares beside the round's run, a run ahead may starve into the timeout
    or a memory limit, or be killed when dropped: none of those is a verdict to store and
    reuse; its round runs it at full priority instead.  A scenario's own exit is kept."""
    from types import SimpleNamespace

    from tfbisect.envs.environments import Ended

    def done(ended: Ended, timed_out: bool = False) -> Any:
        return SimpleNamespace(ended=ended, finished=SimpleNamespace(timed_out=timed_out))

    calm = priority.Urgency()
    assert ahead_module.unkept(done(Ended(exit_code=0)), calm) is None
    assert ahead_module.unkept(done(Ended(exit_code=1)), calm) is None  # reproduced: kept
    assert "timeout" in str(ahead_module.unkept(done(Ended(exit_code=None), timed_out=True), calm))
    assert "memory" in str(ahead_module.unkept(done(Ended(exit_code=-9, memory_limit="8g")), calm))
    assert "signal 9" in str(ahead_module.unkept(done(Ended(exit_code=-9)), calm))
    assert "could not start" in str(
        ahead_module.unkept(done(Ended(exit_code=125, unstarted="The container could not start: x")), calm)
    )
    dropped = priority.Urgency()
    dropped.drop()
    assert "no longer needs" in str(ahead_module.unkept(done(Ended(exit_code=0)), dropped))
