"""Runs ahead of their round: a bisection's next round run on a core the round in progress
leaves idle, so that the round, when it comes, has its answer at once.

The prefetch (search/prefetch.py) prepares the next round's environments on its niced threads,
for both outcomes of the round in progress.  With a core to spare (`BisectRequest.run_ahead`),
`Runner.prefetch` then runs the cell there too, through `RunsAhead.run`: at the prefetch's low
priority (the thread's niceness; a container's fewest CPU shares, envs/backend_docker.py), its
probe lines kept off the console.  The round that comes to the cell takes the record (`take`) as
a run of its own, not a reuse; one it comes to while the run ahead is still going is hurried and
waited for (`hurry`).  One the search moves past is killed (platform/process.py kills what a
dropped preparation started) and keeps no record: killed on purpose, it says nothing about the
version.  One that ends by itself is stored like any run, so it answers a later command too.
"""

from __future__ import annotations

import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tfbisect.core import interrupt, priority
from tfbisect.core.fsio import now_iso
from tfbisect.core.progress import Progress
from tfbisect.core.record import RunRecord
from tfbisect.core.scenario import Scenario
from tfbisect.core.spec import EnvSpec
from tfbisect.core.timing import SPENT, Phase
from tfbisect.envs import locks
from tfbisect.runs.launching import Cell, Launched, Waiting, launch_and_wait

if TYPE_CHECKING:
    from tfbisect.runs.runner import Runner

# A prefetch never fills the disk: below this much free space only the runs themselves build.
PREFETCH_MIN_FREE_BYTES = 20 * 1024**3


@dataclass(frozen=True)
class RunResult:
    """What `Runner.run` did: the record, and whether it was reused or made now (and where it logged)."""

    record: RunRecord
    reused: bool
    seconds: float  # the wall time of this call: ~0 for a reused record
    log: Path | None = None


def cell_key(spec: EnvSpec, scenario: Scenario) -> str:
    """One cell (a scenario's version in an environment), as the runs ahead are kept by."""
    return f"{scenario.sha256}:{spec.backend}:{spec.key}"


class RunsAhead:
    """The cells a runner has run ahead of their round: those running, and those done that no
    round has taken yet."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self._lock = threading.Lock()
        self._running: dict[str, priority.Urgency] = {}
        self._done: dict[str, RunResult] = {}
        self._told_short_disk = False  # the pause for a short disk is said once a command
        self._settled: set[str] = set()  # the cells this command has a record of, run or ahead

    def _tell_short_disk(self, free: int) -> None:
        with self._lock:
            told, self._told_short_disk = self._told_short_disk, True
        if not told:
            self.runner.progress.say(
                f"prefetch paused: {free / 1024**3:.1f} GiB free on the cache's disk, under the "
                f"{PREFETCH_MIN_FREE_BYTES // 1024**3} GiB that work ahead leaves; only the runs prepare "
                "their own environments (free some space, e.g. `tfbisect cache prune`)"
            )

    def prefetch(self, spec: EnvSpec, scenario: Scenario, *, run: bool) -> bool:
        """Prepare a cell's environment ahead of its run (a bisection's next round), quietly: a
        failure here is no finding, and the run itself retries and records it.  Nothing when the
        cell has a stored result or the disk is short.  With `run`, the cell is then run ahead
        too, unless a run of the round already waits for it.  True when the environment is ready;
        priority.Deferred (not caught here) when it would wait for another's long work."""
        runner = self.runner
        if runner.stored(spec, scenario) is not None or interrupt.stopping():
            return False
        cache = runner.settings.cache_dir
        free = shutil.disk_usage(cache if cache.exists() else Path.home()).free
        if free < PREFETCH_MIN_FREE_BYTES:
            self._tell_short_disk(free)
            return False
        try:
            lock, prepared = runner.preparing.ahead(
                f"{spec.backend}:{spec.key}", lambda: runner.prepare_now(spec, scenario)
            )
        except runner.PREPARE_FAILURES:
            return False
        urgency = priority.current()
        if run and urgency is not None and not urgency.urgent:
            self.run(spec, scenario, lock, prepared, urgency)
        return True

    def run(
        self, spec: EnvSpec, scenario: Scenario, lock: locks.Lock, prepared: object, urgency: priority.Urgency
    ) -> None:
        """Run the cell in its prepared environment under the preparation's `urgency`, unless it
        has a stored result already, this command has run it, the search has moved past it or
        the driver stops."""
        runner, key = self.runner, cell_key(spec, scenario)
        with self._lock:  # known as running before the cell's lock: a round that comes now hurries it
            self._running[key] = urgency
        try:
            with runner.cell_lock(spec, scenario):
                if runner.stored(spec, scenario) is not None or key in self._settled or urgency.dropped:
                    return
                interrupt.check()
                self._run(spec, scenario, lock, prepared, urgency)
        finally:
            with self._lock:
                self._running.pop(key, None)

    def _run(
        self, spec: EnvSpec, scenario: Scenario, lock: locks.Lock, prepared: object, urgency: priority.Urgency
    ) -> None:
        runner, key = self.runner, cell_key(spec, scenario)
        start, started, log_path = time.monotonic(), now_iso(), runner.run_log(spec, scenario)
        runner.progress.say(f"[{spec.label}] running {scenario.name} ahead of its round, at low priority")
        quiet = Waiting(runner.settings.timeout, Progress(quiet=True))  # the round's run shows its lines
        with SPENT.measure(Phase.RUN):
            done = launch_and_wait(
                runner.environment(spec.backend), spec, scenario, prepared, log_path, "", quiet
            )
        why = unkept(done, urgency)
        if why is not None:
            runner.progress.say(f"[{spec.label}] its run ahead keeps no record ({why}); its round runs it")
            return
        record = runner.judged(Cell(spec, scenario, started, runner.settings.timeout), done, lock, log_path)
        with self._lock:  # with `_running` still set: `holds` never misses it
            self._done[key] = RunResult(record, False, time.monotonic() - start, log_path)
            self._settled.add(key)

    def settle(self, spec: EnvSpec, scenario: Scenario) -> None:
        """The round has run the cell itself: no run ahead of it in this command (not even
        with --force, where no stored result says so)."""
        with self._lock:
            self._settled.add(cell_key(spec, scenario))

    def hurry(self, spec: EnvSpec, scenario: Scenario) -> bool:
        """A run of the round comes to a cell running ahead: it now waits for that run, which
        gets the default priority back (and is no longer dropped).  True when it does."""
        with self._lock:
            urgency = self._running.get(cell_key(spec, scenario))
        if urgency is None:
            return False
        self.runner.progress.say(f"[{spec.label}] its run ahead of the round is in progress; waiting for it")
        urgency.hurry()
        return True

    def holds(self, spec: EnvSpec, scenario: Scenario) -> bool:
        """Whether the cell is running ahead, or has run ahead and no round has taken it yet."""
        key = cell_key(spec, scenario)
        with self._lock:
            return key in self._running or key in self._done

    def take(self, spec: EnvSpec, scenario: Scenario) -> RunResult | None:
        """The result of the cell's run ahead, once: the round's own run."""
        with self._lock:
            done = self._done.pop(cell_key(spec, scenario), None)
        if done is not None:
            outcome = done.record.outcome.value
            self.runner.progress.say(
                f"[{spec.label}] ran ahead of its round: {outcome} in {done.seconds:.1f}s"
            )
        return done


def unkept(done: Launched, urgency: priority.Urgency) -> str | None:
    """Why a run ahead's end says nothing about its version (no record is kept, its round runs
    it at full priority), or None.  Beside the round's own run, at the fewest CPU shares, a run
    ahead may starve into the timeout or a memory limit, or be killed when dropped."""
    ended = done.ended
    if ended.unstarted is not None:
        return ended.unstarted.splitlines()[0]
    if urgency.dropped or interrupt.stopping():
        return "the search no longer needs it"
    if done.finished.timed_out or ended.exit_code is None:
        return "it ran into the timeout at low priority"
    if ended.memory_limit is not None:
        return "it hit the memory limit beside the round's run"
    if ended.exit_code < 0:
        return f"it was killed by signal {-ended.exit_code}"
    return None
