"""The steps of a run, each small enough to test alone: resolve, lock, reuse, install, run, store.

`Runner` knows backends only through the registry (envs/registry.py) and their
`environments.Environments`; the launch-and-wait step and the record it makes are in
launching.py, the narrowing's traced runs and source reading in tracing.py.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import Version

from tfbisect.core import argv, interrupt
from tfbisect.core.argv import DEFAULT_TIMEOUT
from tfbisect.core.catalogue import Catalogue
from tfbisect.core.errors import (
    BackendUnavailableError,
    DockerError,
    EnvironmentBuildError,
    LockError,
    NoInterpreterError,
    TfbisectError,
)
from tfbisect.core.fsio import file_lock, now_iso, stamp
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.record import RunRecord
from tfbisect.core.scenario import Scenario, scenarios_dir
from tfbisect.core.spec import DEFAULT_BACKEND, EnvSpec, Flavour, KerasVariant, legacy_keras_applies
from tfbisect.core.store import ResultStore
from tfbisect.core.timing import SPENT, Phase
from tfbisect.envs import interpreters, locks, registry
from tfbisect.envs.environments import Context, Environments, Options, place
from tfbisect.envs.interpreters import Interpreter
from tfbisect.runs.ahead import RunResult as RunResult  # where its callers import it from
from tfbisect.runs.ahead import RunsAhead
from tfbisect.runs.launching import Cell, Launched, Waiting, launch_and_wait, record_of, skip_record
from tfbisect.runs.preparing import Preparing
from tfbisect.runs.tracing import Tracer, TraceRun

GIVEN = "given"  # the registered backend of an environment made elsewhere (--interpreter)
# Infrastructure, not behaviour: an environment that cannot be prepared answers nothing.
_PREPARE_FAILURES = (
    EnvironmentBuildError,
    LockError,
    NoInterpreterError,
    DockerError,
    BackendUnavailableError,
)


@dataclass(frozen=True)
class Settings:
    reports_dir: Path
    cache_dir: Path
    timeout: float = DEFAULT_TIMEOUT
    force: bool = False
    lock_missing: bool = True  # resolve a lock on the fly when none is committed
    # The parsed options each backend builds its own config from (registry.configure): the
    # Docker backend's --keep-containers and --base-image, a swarm's address, …
    options: Options = field(default_factory=dict)

    @property
    def logs_dir(self) -> Path:
        return self.reports_dir / "logs"


class Runner:
    """Runs one scenario in one environment, reusing the stored result when there is one.

    It knows backends only through the registry: the one a spec names is made on first use
    (`environment`), and nothing here switches on the kind of backend."""

    PREPARE_FAILURES = _PREPARE_FAILURES

    def __init__(
        self,
        catalogue: Catalogue,
        settings: Settings,
        progress: Progress,
        have: dict[str, Interpreter] | None = None,
    ) -> None:
        self.catalogue = catalogue
        self.settings = settings
        self.progress = progress
        self.store = ResultStore(settings.reports_dir / "results", warn=progress.say)
        self.have = have if have is not None else interpreters.available()
        self.waiting = Waiting(settings.timeout, progress)
        self.tracer = Tracer(self)
        self._environments: dict[str, Environments[Any]] = {}
        self._environments_lock = threading.Lock()
        self.preparing = Preparing()  # one build of an environment at a time, the runs' first
        self.ahead = RunsAhead(self)  # cells run ahead of their round (a bisection's next)

    @property
    def context(self) -> Context:
        """What every backend is made with (the interpreters as found when it is made)."""
        return Context(self.settings.cache_dir, self.progress, self.have)

    def environment(self, name: str) -> Environments[Any]:
        """The backend of that name, made on first use (bisect rounds call this from several threads)."""
        with self._environments_lock:
            if name not in self._environments:
                self._environments[name] = self._make(name)
            return self._environments[name]

    def _make(self, name: str) -> Environments[Any]:
        return registry.make(name, self.settings.options, self.context)

    # -- step 1: which environment ----------------------------------------------------
    def spec_for(
        self,
        version: str,
        *,
        python: str | None = None,
        flavour: Flavour = Flavour.CPU,
        keras: KerasVariant = KerasVariant.DEFAULT,
        backends: Sequence[str] = (DEFAULT_BACKEND,),
        pre: bool = False,
    ) -> EnvSpec:
        """The environment a version runs in: the first of `backends` (names) that can place it."""
        release = self.catalogue.resolve(version, pre=pre)
        if keras is KerasVariant.LEGACY and not legacy_keras_applies(release.version):
            keras = KerasVariant.DEFAULT  # before 2.16, tf.keras already is Keras 2
        chosen, environments = place(release, python, [self.environment(b) for b in backends])
        return EnvSpec(release.version, chosen, flavour, keras, environments.name)

    # -- step 2: the lock ---------------------------------------------------------------
    def lock_for(self, spec: EnvSpec, extras: tuple[str, ...] = ()) -> locks.Lock:
        """The spec's lock; with `extras` (a script's PEP 723 dependencies) the release's
        requirements and those, resolved together as of the release date (cached after the first time)."""
        lock_spec = self.environment(spec.backend).lock_spec(spec)
        try:
            return locks.load_with_dependencies(lock_spec, extras) if extras else locks.load(lock_spec)
        except LockError:
            if not self.settings.lock_missing:
                raise
        interpreter = self.have.get(spec.python)
        what = (
            "the script's dependencies; resolving them with TF's"
            if extras
            else "no committed lock; resolving one"
        )
        with self.progress.step(spec.label, f"{what} as of the release date"):
            return locks.compile_lock(
                lock_spec, self.catalogue, interpreter.path if interpreter else None, dependencies=extras
            )

    # -- step 3..5: reuse, or install, run and store ----------------------------------
    def run(self, spec: EnvSpec, scenario: Scenario) -> RunResult:
        interrupt.check()  # a stopping driver starts nothing new
        start = time.monotonic()
        waits_ahead = self.ahead.hurry(spec, scenario)
        with self.cell_lock(spec, scenario, quiet=waits_ahead):
            ahead = self.ahead.take(spec, scenario)
            if ahead is not None:
                return ahead
            if not self.settings.force:
                stored = self.store.get(scenario.name, scenario.sha256, spec)
                if stored is not None and stored.answers(self.settings.timeout):
                    self.progress.say(f"[{spec.label}] reusing the stored result: {stored.outcome.value}")
                    return RunResult(stored, reused=True, seconds=time.monotonic() - start)
                if stored is not None and stored.outcome is Outcome.TIMEOUT:
                    self.progress.say(
                        f"[{spec.label}] the stored result is a timeout after {stored.timeout_s or 0:g}s; "
                        f"running again with --timeout {self.settings.timeout:g}"
                    )
            started = now_iso()
            try:
                lock, prepared = self.prepare(spec, scenario)
            except _PREPARE_FAILURES as exc:
                record = self.infrastructure_skip(spec, scenario, started, exc)
                return RunResult(record, reused=False, seconds=time.monotonic() - start)
            record = self.execute(spec, scenario, prepared, lock, started)
            self.ahead.settle(spec, scenario)
            log = record.extra.get("log")
            return RunResult(record, False, time.monotonic() - start, Path(str(log)) if log else None)

    def prepare(self, spec: EnvSpec, scenario: Scenario) -> tuple[locks.Lock, object]:
        """The lock and the prepared environment (a venv, an image); a run waits for a prefetch
        of the same environment (hurried) instead of building twice (runs/preparing.py)."""
        return self.preparing.own(f"{spec.backend}:{spec.key}", lambda: self.prepare_now(spec, scenario))

    def prepare_now(self, spec: EnvSpec, scenario: Scenario) -> tuple[locks.Lock, object]:
        with SPENT.measure(Phase.BUILD):  # waiting for a prefetch's build is not building
            lock = self.lock_for(spec, scenario.dependencies)
            return lock, self.environment(spec.backend).prepare(spec, lock, self.log_dir(scenario))

    def source_places(self, spec: EnvSpec, scenario: Scenario) -> list[Path]:
        """Where the spec's environment's installed Python sources can be read (tracing.py)."""
        return self.tracer.source_places(spec, scenario)

    def trace(
        self,
        spec: EnvSpec,
        scenario: Scenario,
        probes: Sequence[str],
        packages: Sequence[str],
        *,
        window_only: bool = True,
        traced: bool = True,
    ) -> TraceRun:
        """Run the probes alone (`--probe`) in the spec's environment, prepared or reused as for
        `run`, under the probe tracer limited to `packages`; with `traced=False` without it, as
        the yardstick of what tracing costs.  Same timeout as `run`; stored like a run (tracing.py).

        Raises TraceError when the environment cannot be prepared or the run cannot start, and
        when a traced run leaves no trace document (a timeout, a crash of the tracer itself)."""
        return self.tracer.trace(spec, scenario, probes, packages, window_only=window_only, traced=traced)

    def prefetch(self, spec: EnvSpec, scenario: Scenario, *, run: bool = False) -> bool:
        """Prepare a cell's environment ahead of its run, and with `run` run it ahead too
        (runs/ahead.py); True when the environment is ready.  Raises priority.Deferred where
        the preparation would wait for another's long work (the prefetch parks it)."""
        return self.ahead.prefetch(spec, scenario, run=run)

    def run_given(
        self, spec: EnvSpec, scenario: Scenario, python: Path, tags: dict[str, object]
    ) -> RunRecord:
        """Run in an environment made elsewhere (a tox env): the "given" backend, made for this
        run alone (never kept for another spec), through the same `execute`.

        `given_interpreter.spec_for` has checked that `python` is the spec's Python with the spec's TF.
        Nothing is built and no stored result is reused: the run happens and replaces the
        cell's stored record, with `tags` (via, tox env, interpreter: what the given backend
        says of its runs, from `via` and `python`) in its `extra`."""
        interrupt.check()
        given = registry.make(GIVEN, {"interpreter": python, "via": tags.get("via")}, self.context)
        with self.cell_lock(spec, scenario):
            lock = locks.load(given.lock_spec(spec))
            prepared = given.prepare(spec, lock, self.log_dir(scenario))
            return self.execute(spec, scenario, prepared, lock, now_iso(), on=given)

    @contextlib.contextmanager
    def cell_lock(self, spec: EnvSpec, scenario: Scenario, *, quiet: bool = False) -> Iterator[None]:
        """One run of a cell at a time, across threads and processes: a second one waits for the
        first and then reuses its result instead of running the same thing twice (saying so
        unless `quiet`: the caller has said why)."""
        path = (
            self.settings.reports_dir / ".locks" / f"{scenario.slug}-{scenario.sha256[:12]}-{spec.key}.lock"
        )
        said = f"[{spec.label}] another run of this cell is in progress; waiting to reuse its result"
        with file_lock(path, on_wait=None if quiet else lambda: self.progress.say(said)):
            yield

    def infrastructure_skip(
        self, spec: EnvSpec, scenario: Scenario, started: str, exc: TfbisectError
    ) -> RunRecord:
        """Infrastructure, not behaviour: a skip, stored with its reason, that a later run retries."""
        interrupt.check()  # an install killed because the driver is stopping is no finding
        record = skip_record(Cell(spec, scenario, started, self.settings.timeout), exc)
        self.store.put(record)
        self.progress.say(f"[{spec.label}] skip: {exc.what.splitlines()[0]}")
        return record

    def stored(self, spec: EnvSpec, scenario: Scenario) -> RunRecord | None:
        """The stored record that a run of this cell would reuse now, or None."""
        if self.settings.force:
            return None
        found = self.store.get(scenario.name, scenario.sha256, spec)
        return found if found is not None and found.answers(self.settings.timeout) else None

    def log_dir(self, scenario: Scenario) -> Path:
        return self.settings.logs_dir / scenario.slug / scenario.sha256[:12]

    def execute(
        self,
        spec: EnvSpec,
        scenario: Scenario,
        prepared: object,
        lock: locks.Lock,
        started: str,
        *,
        on: Environments[Any] | None = None,
    ) -> RunRecord:
        """Launch one run in a prepared environment (of the spec's backend, or `on`), classify how
        it ended, store the record."""
        log_path, doing = self.run_log(spec, scenario), f"running {scenario.name}"
        with SPENT.measure(Phase.RUN):  # only the launch and the wait: the preparation is building
            environments = on or self.environment(spec.backend)
            done = launch_and_wait(environments, spec, scenario, prepared, log_path, doing, self.waiting)
        return self.judged(Cell(spec, scenario, started, self.settings.timeout), done, lock, log_path)

    def run_log(self, spec: EnvSpec, scenario: Scenario) -> Path:
        # Every run has a log of its own: a rerun (--force, a longer --timeout) keeps the old one.
        return self.log_dir(scenario) / f"{spec.key}.{stamp()}-{os.getpid()}.log"

    def judged(self, cell: Cell, done: Launched, lock: locks.Lock, log_path: Path) -> RunRecord:
        """The record of a run that has ended (how it ended, classified), stored."""
        spec, scenario, started = cell.spec, cell.scenario, cell.started
        if done.ended.unstarted is not None:
            return self.infrastructure_skip(
                spec,
                scenario,
                started,
                DockerError(
                    done.ended.unstarted,
                    f"see {log_path}; run again (the image is rebuilt if it went missing).",
                ),
            )
        record = record_of(
            cell,
            done,
            lock,
            {
                "log": str(log_path),
                "lock": lock.path.name,
                "reproduce": reproduce_command(spec, scenario, self.settings.timeout),
            },
        )
        path = self.store.put(record)
        where = f" on {record.extra['ran_on']}" if "ran_on" in record.extra else ""
        self.progress.say(
            f"[{spec.label}] {record.outcome.value} in {done.finished.seconds:.1f}s{where} → {path}"
        )
        return record


def reproduce_command(spec: EnvSpec, scenario: Scenario, timeout: float = DEFAULT_TIMEOUT) -> str:
    """The `tfbisect run` that repeats one run, from any directory."""
    env = argv.EnvOptions(
        backend=spec.backend,
        base=spec.flavour.value,
        keras=spec.keras.value,
        timeout=timeout,
        pre=Version(spec.tf_version).is_prerelease,
        **argv.naming(scenario, scenario_argument(scenario)),
    )
    return shlex.join(argv.RunOptions(tf=spec.tf_version, env=env, python=spec.python).to_argv())


def scenario_argument(scenario: Scenario) -> str:
    """How a command names the scenario: by name when that finds this very file, else by its
    absolute path, so that the command works as printed from any directory."""
    by_name = scenarios_dir() / f"{scenario.name}.py"
    return scenario.name if by_name.is_file() and by_name.resolve() == scenario.path else str(scenario.path)
