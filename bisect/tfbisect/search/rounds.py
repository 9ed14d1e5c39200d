"""The round executor: a round's runs side by side on a pool of --jobs threads, each result
handed back in the round's order, and every run of the round killed when the driver is stopped.

The search decides which versions a round runs and judges what came back; this module only
runs them, through an `execute` callable, so that the search stays free of threads and
processes (and a test can script the runs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

from tfbisect.core.errors import MachineFaultError, as_machine_fault
from tfbisect.core.spec import EnvSpec
from tfbisect.platform.process import abandon, kill_all
from tfbisect.runs.runner import RunResult

# One run of the bisection's scenario in an environment: `Runner.run` unless a test scripts it.
Execute = Callable[[EnvSpec], RunResult]


class RoundExecutor:
    """Runs rounds of at most `jobs` runs at a time through `execute`; `halt` kills every run
    in progress (default: every child process this driver started)."""

    def __init__(
        self,
        execute: Execute,
        jobs: int,
        halt: Callable[[], None] = kill_all,
        abandon: Callable[[MachineFaultError], None] = abandon,
    ) -> None:
        self.execute = execute
        self.jobs = max(1, jobs)
        self.halt = halt
        self.abandon = abandon

    def run(
        self,
        todo: Sequence[tuple[int, EnvSpec]],
        done: Callable[[int, RunResult], None],
        meanwhile: Callable[[], None] = lambda: None,
    ) -> None:
        """Run each (index, spec) of `todo`; `done(index, result)` for each, in `todo`'s order;
        `meanwhile()` once every run is queued (what is prepared for the next round).  On a stop
        (KeyboardInterrupt) the round's other runs are killed, the ones that finished before the
        signal still reach `done` (their results are stored anyway), and the stop goes on."""
        reported: set[int] = set()
        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            futures = {i: pool.submit(self.execute, spec) for i, spec in todo}
            meanwhile()
            try:
                for i, future in futures.items():
                    result = future.result()
                    reported.add(i)
                    done(i, result)
            except (KeyboardInterrupt, MachineFaultError, OSError) as exc:
                fault = None if isinstance(exc, KeyboardInterrupt) else as_machine_fault(exc)
                if fault is not None:
                    # The machine failed under one run: the others are killed now (never
                    # judged), not waited for until their timeout.
                    self.abandon(fault)
                else:
                    self.halt()
                pool.shutdown(wait=True, cancel_futures=True)
                for i, future in futures.items():
                    finished = future.done() and not future.cancelled() and future.exception() is None
                    if i not in reported and finished:
                        reported.add(i)
                        done(i, future.result())
                if fault is not None and fault is not exc:
                    raise fault from exc
                raise
