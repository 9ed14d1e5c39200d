"""The steps of a run, each small enough to test alone: resolve, lock, reuse, install, run, store.

`Runner.trace` is the narrowing's measuring run beside them: some probes alone, in an environment
prepared (or reused) exactly as for `run`, under the probe tracer, read back and never stored.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
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
    TraceError,
)
from tfbisect.core.fsio import file_lock, now_iso, stamp
from tfbisect.core.outcome import Outcome
from tfbisect.core.packagedata import data_file
from tfbisect.core.process import Finished, run_logged
from tfbisect.core.progress import Progress
from tfbisect.core.record import Failure, RunRecord, classify, ran_on
from tfbisect.core.resultfile import read_result
from tfbisect.core.scenario import Scenario, scenarios_dir
from tfbisect.core.spec import Backend, EnvSpec, Flavour, KerasVariant, legacy_keras_applies
from tfbisect.core.store import ResultStore
from tfbisect.envs import interpreters, locks
from tfbisect.envs.backend_docker import DockerBackend
from tfbisect.envs.backend_swarm import SwarmAddress, SwarmBackend, address_from
from tfbisect.envs.backend_venv import VenvBackend
from tfbisect.envs.environments import Ended, Environments, Launch, Traced, place
from tfbisect.envs.interpreters import Interpreter

TRACER = "probe_tracer.py"  # package data: the tracer a traced run runs the scenario under
# A trace of one TF probe is a few hundred files' line numbers (well under a MB); the cap bounds
# what a hostile environment can make the driver read.
TRACE_MAX_BYTES = 64 * 1024 * 1024
PROBE_NAME = re.compile(r"[a-z0-9_]{1,100}")  # as the result schema names probes; part of a log's name
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
    keep_containers: bool = False  # leave containers behind for debugging
    base_image: str | None = None  # a user-named base image for the Docker backend
    swarm: SwarmAddress | None = None  # the swarm manager and registry (--backend swarm)

    @property
    def logs_dir(self) -> Path:
        return self.reports_dir / "logs"


# A prefetch never fills the disk: below this much free space only the runs themselves build.
PREFETCH_MIN_FREE_BYTES = 20 * 1024**3


def default_cache_dir() -> Path:
    if os.environ.get("TFBISECT_CACHE"):
        return Path(os.environ["TFBISECT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tfbisect"


@dataclass(frozen=True)
class RunResult:
    """What `Runner.run` did: the record, and whether it was reused or made now (and where it logged)."""

    record: RunRecord
    reused: bool
    seconds: float  # the wall time of this call: ~0 for a reused record
    log: Path | None = None


@dataclass(frozen=True)
class TraceRun:
    """What `Runner.trace` did: some probes run alone, traced (or not: the tracer's yardstick)."""

    spec: EnvSpec
    probes: tuple[str, ...]
    document: dict[str, Any]  # the tracer's document, parsed, not checked further ({} when untraced)
    result: dict[str, Any] | None  # the scenario's result document, parsed, unchecked; None without one
    seconds: float  # the wall time of the (traced) process
    exit_code: int | None  # the scenario's, through the tracer; None when it timed out
    log: Path


class Runner:
    """Runs one scenario in one environment, reusing the stored result when there is one.

    It knows backends only through `environments.Environments`: which one a spec names is
    looked up in `environment`, and nothing below here switches on the kind of backend."""

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
        self._environments: dict[Backend, Environments] = {}
        self._environments_lock = threading.Lock()
        self._preparing: dict[str, threading.Lock] = {}  # one build of an environment at a time

    def environment(self, kind: Backend) -> Environments:
        """The backend of that kind, made on first use (bisect rounds call this from several threads)."""
        with self._environments_lock:
            if kind not in self._environments:
                self._environments[kind] = self._make(kind)
            return self._environments[kind]

    def _make(self, kind: Backend) -> Environments:
        if kind is Backend.SWARM:
            return SwarmBackend(
                self.settings.cache_dir,
                self.progress,
                self.settings.swarm or address_from(None, None, None),
                user_base=self.settings.base_image,
            )
        if kind is Backend.DOCKER:
            return DockerBackend(
                self.settings.cache_dir,
                self.progress,
                keep=self.settings.keep_containers,
                user_base=self.settings.base_image,
            )
        return VenvBackend(self.settings.cache_dir, self.progress, self.have)

    # -- step 1: which environment ----------------------------------------------------
    def spec_for(
        self,
        version: str,
        *,
        python: str | None = None,
        flavour: Flavour = Flavour.CPU,
        keras: KerasVariant = KerasVariant.DEFAULT,
        backends: Sequence[Backend] = (Backend.VENV,),
        pre: bool = False,
    ) -> EnvSpec:
        """The environment a version runs in: the first of `backends` that can place it."""
        release = self.catalogue.resolve(version, pre=pre)
        if keras is KerasVariant.LEGACY and not legacy_keras_applies(release.version):
            keras = KerasVariant.DEFAULT  # before 2.16, tf.keras already is Keras 2
        chosen, environments = place(release, python, [self.environment(b) for b in backends])
        return EnvSpec(release.version, chosen, flavour, keras, environments.kind)

    # -- step 2: the lock ---------------------------------------------------------------
    def lock_for(self, spec: EnvSpec) -> locks.Lock:
        lock_spec = self.environment(spec.backend).lock_spec(spec)
        try:
            return locks.load(lock_spec)
        except LockError:
            if not self.settings.lock_missing:
                raise
        interpreter = self.have.get(spec.python)
        with self.progress.step(spec.label, "no committed lock; resolving one as of the release date"):
            return locks.compile_lock(lock_spec, self.catalogue, interpreter.path if interpreter else None)

    # -- step 3..5: reuse, or install, run and store ----------------------------------
    def run(self, spec: EnvSpec, scenario: Scenario) -> RunResult:
        interrupt.check()  # a stopping driver starts nothing new
        start = time.monotonic()
        with self.cell_lock(spec, scenario):
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
                lock, prepared = self._prepare(spec, self.log_dir(scenario))
            except _PREPARE_FAILURES as exc:
                record = self.infrastructure_skip(spec, scenario, started, exc)
                return RunResult(record, reused=False, seconds=time.monotonic() - start)
            record = self.execute(spec, scenario, prepared, lock, started)
            log = record.extra.get("log")
            return RunResult(record, False, time.monotonic() - start, Path(str(log)) if log else None)

    def _prepare(self, spec: EnvSpec, log_dir: Path) -> tuple[locks.Lock, object]:
        """The lock and the prepared environment (a venv, an image), one build at a time per
        environment: a run waits for a prefetch of the same environment instead of building twice."""
        with self._environments_lock:
            building = self._preparing.setdefault(f"{spec.backend.value}:{spec.key}", threading.Lock())
        with building:
            lock = self.lock_for(spec)
            return lock, self.environment(spec.backend).prepare(spec, lock, log_dir)

    def source_places(self, spec: EnvSpec, scenario: Scenario) -> list[Path]:
        """Where the spec's environment's installed Python sources can be read (its site-packages,
        or the wheels it was built from); the environment is prepared (reused) first."""
        try:
            lock, prepared = self._prepare(spec, self.log_dir(scenario))
        except _PREPARE_FAILURES as exc:
            raise TraceError(
                f"{spec.label}: the environment's sources cannot be read: {exc.what}", exc.todo
            ) from exc
        return self.environment(spec.backend).source_places(spec, prepared, lock)

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
        the yardstick of what tracing costs.  Same timeout as `run`; nothing is stored.

        Raises TraceError when the environment cannot be prepared or the run cannot start, and
        when a traced run leaves no trace document (a timeout, a crash of the tracer itself)."""
        interrupt.check()
        names = tuple(probes)
        if not names or not all(PROBE_NAME.fullmatch(name) for name in names):
            raise TraceError(
                f"Cannot run the probes {', '.join(repr(n[:60]) for n in names[:5]) or '(none)'} alone: a probe is "
                "named by lower-case letters, digits and underscores.",
                "name the probes as the scenario's result document does (e.g. gradient_eager_plain).",
            )
        if traced and spec.python == "3.6":
            raise TraceError(
                f"{spec.label}: the probe tracer needs Python 3.7 or newer.",
                "bisect (or narrow) with a newer Python for these releases (--python 3.7).",
            )
        try:
            _, prepared = self._prepare(spec, self.log_dir(scenario))
        except _PREPARE_FAILURES as exc:
            raise TraceError(
                f"{spec.label}: the environment for running {', '.join(names)} alone could not be "
                f"prepared: {exc.what}",
                exc.todo,
            ) from exc
        request = Traced(
            Path(str(data_file(TRACER))) if traced else None, tuple(packages), names, window_only
        )
        what = f"{'trace' if traced else 'probes'}-{'+'.join(names)[:120]}"
        log_path = self.log_dir(scenario) / f"{spec.key}.{what}.{stamp()}-{os.getpid()}.log"
        done = self._launched(
            spec,
            scenario,
            prepared,
            log_path,
            f"running {', '.join(names)} alone{' under the tracer' if traced else ''}",
            request,
        )
        finished, raw, ended = done.finished, done.raw, done.ended
        document, problem = done.trace
        if ended.unstarted is not None:
            raise TraceError(
                ended.unstarted, f"see {log_path}; run again (the image is rebuilt if it went missing)."
            )
        if document is None:
            ending = "timed out" if finished.timed_out else f"exited {ended.exit_code}"
            last = (finished.log_tail.strip().splitlines() or ["(no output)"])[-1]
            raise TraceError(
                f"{spec.label}: the traced run of {', '.join(names)} {ending} and {problem}; its last "
                f"output: {last[:300]}",
                f"see its log at {log_path}.",
            )
        result = parse_json_object(raw)[0] if raw is not None else None
        self.progress.say(
            f"[{spec.label}] {', '.join(names)} alone: exit {ended.exit_code} in {finished.seconds:.1f}s"
        )
        return TraceRun(spec, names, document, result, finished.seconds, ended.exit_code, log_path)

    def _launched(
        self,
        spec: EnvSpec,
        scenario: Scenario,
        prepared: object,
        log_path: Path,
        doing: str,
        traced: Traced | None = None,
    ) -> _Launched:
        """Launch a run in a prepared environment and wait for it (the settings' timeout), probe
        lines shown as they come; its result (and trace) are read before its folder is removed."""
        environments = self.environment(spec.backend)
        with (
            # A container's user may leave files the driver cannot remove unless it is root.
            tempfile.TemporaryDirectory(prefix="tfbisect-run-", ignore_cleanup_errors=True) as tmp,
            environments.launch(spec, scenario, prepared, Path(tmp), traced) as launch,
        ):
            self.progress.say(f"[{spec.label}] {doing} (timeout {self.settings.timeout:g}s)")
            finished = run_logged(
                launch.argv,
                log_path=log_path,
                timeout=self.settings.timeout,
                env=launch.env,
                on_line=lambda line: self.progress.line(spec.label, line) if _is_probe_line(line) else None,
            )
            raw, unreadable = read_result(launch.results or Path(tmp))
            trace = read_json_object(launch.trace) if launch.trace else ({}, "")
            ended = environments.ended(launch, finished, raw is not None or unreadable is not None)
        return _Launched(launch, finished, raw, unreadable, ended, trace)

    def prefetch(self, spec: EnvSpec, scenario: Scenario) -> bool:
        """Prepare a cell's environment ahead of its run (a bisection's next round), quietly: a
        failure here is no finding, and the run itself retries and records it.  Nothing when the
        cell has a stored result or the disk is short.  True when the environment is ready."""
        if self.stored(spec, scenario) is not None or interrupt.stopping():
            return False
        free = shutil.disk_usage(
            self.settings.cache_dir if self.settings.cache_dir.exists() else Path.home()
        ).free
        if free < PREFETCH_MIN_FREE_BYTES:
            return False
        try:
            self._prepare(spec, self.log_dir(scenario))
        except _PREPARE_FAILURES:
            return False
        return True

    def run_given(
        self, spec: EnvSpec, scenario: Scenario, python: Path, tags: dict[str, object]
    ) -> RunRecord:
        """Run in an environment made elsewhere (a tox env), through the same `execute`.

        `givenenv.spec_for` has checked that `python` is the spec's Python with the spec's TF.
        Nothing is built and no stored result is reused: the run happens and replaces the
        cell's stored record, with `tags` (via, tox env, interpreter) in its `extra`."""
        interrupt.check()
        with self.cell_lock(spec, scenario):
            lock = locks.load(locks.LockSpec(spec.tf_version, spec.python, spec.flavour, spec.keras))
            record = self.execute(spec, scenario, python, lock, now_iso())
            record = replace(record, extra={**record.extra, **tags})
            self.store.put(record)
            return record

    @contextlib.contextmanager
    def cell_lock(self, spec: EnvSpec, scenario: Scenario) -> Iterator[None]:
        """One run of a cell at a time, across threads and processes: a second one waits for the
        first and then reuses its result instead of running the same thing twice."""
        path = (
            self.settings.reports_dir / ".locks" / f"{scenario.slug}-{scenario.sha256[:12]}-{spec.key}.lock"
        )
        with file_lock(
            path,
            on_wait=lambda: self.progress.say(
                f"[{spec.label}] another run of this cell is in progress; waiting to reuse its result"
            ),
        ):
            yield

    def infrastructure_skip(
        self, spec: EnvSpec, scenario: Scenario, started: str, exc: TfbisectError
    ) -> RunRecord:
        """Infrastructure, not behaviour: a skip, stored with its reason, that a later run retries."""
        interrupt.check()  # an install killed because the driver is stopping is no finding
        record = RunRecord(
            spec=spec,
            scenario=scenario.name,
            scenario_sha256=scenario.sha256,
            outcome=Outcome.SKIP,
            exit_code=None,
            document=None,
            failure=Failure(type(exc).__name__, exc.what),
            log_tail=exc.what[-4000:],
            command="",
            started_at=started,
            duration_s=0.0,
            extra={"todo": exc.todo},
            infrastructure=True,
            timeout_s=self.settings.timeout,
        )
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
        self, spec: EnvSpec, scenario: Scenario, prepared: object, lock: locks.Lock, started: str
    ) -> RunRecord:
        """Launch one run in a prepared environment, classify how it ended, store the record."""
        # Every run has a log of its own: a rerun (--force, a longer --timeout) keeps the old one.
        log_path = self.log_dir(scenario) / f"{spec.key}.{stamp()}-{os.getpid()}.log"
        done = self._launched(spec, scenario, prepared, log_path, f"running {scenario.name}")
        launch, finished, raw, unreadable, ended = (
            done.launch,
            done.finished,
            done.raw,
            done.unreadable,
            done.ended,
        )
        if ended.unstarted is not None:
            return self.infrastructure_skip(
                spec,
                scenario,
                started,
                DockerError(
                    ended.unstarted, f"see {log_path}; run again (the image is rebuilt if it went missing)."
                ),
            )
        outcome, document, failure = classify(
            ended.exit_code,
            raw,
            finished.log_tail,
            timed_out=finished.timed_out,
            expected_sha256=scenario.sha256,
            unreadable=unreadable,
            timeout=self.settings.timeout,
            memory_limit=ended.memory_limit,
        )
        extra = dict(launch.extra)
        if spec.flavour is Flavour.CUDA:
            extra["ran_on"] = ran_on(document)
        if finished.leftovers:
            extra["leftover_processes_killed"] = finished.leftovers
        record = RunRecord(
            spec=spec,
            scenario=scenario.name,
            scenario_sha256=scenario.sha256,
            outcome=outcome,
            exit_code=ended.exit_code,
            document=document,
            failure=failure,
            log_tail=finished.log_tail,
            command=launch.shown,
            started_at=started,
            duration_s=round(finished.seconds, 3),  # as stored, so a reload compares equal
            lock_sha256=lock.sha256,
            extra={
                "log": str(log_path),
                "lock": lock.path.name,
                "reproduce": reproduce_command(spec, scenario, self.settings.timeout),
                **extra,
            },
            timeout_s=self.settings.timeout,
        )
        path = self.store.put(record)
        where = f" on {extra['ran_on']}" if "ran_on" in extra else ""
        self.progress.say(f"[{spec.label}] {outcome.value} in {finished.seconds:.1f}s{where} → {path}")
        return record


@dataclass(frozen=True)
class _Launched:
    """One launched process, waited for, with what it left read before its folder went."""

    launch: Launch
    finished: Finished
    raw: bytes | None  # the result document's bytes
    unreadable: Failure | None  # why a result document there could not be read
    ended: Ended
    trace: tuple[dict[str, Any] | None, str]  # the trace document (or None and why); ({}, "") untraced


def _is_probe_line(line: str) -> bool:
    return line.startswith(("probe ", "verdict:"))


def read_json_object(path: Path, limit: int = TRACE_MAX_BYTES) -> tuple[dict[str, Any] | None, str]:
    """A JSON object a run left (hostile input), or None and why not: only a regular file, never
    through a link, never past the cap."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY)
    except FileNotFoundError:
        return None, "wrote no trace"
    except OSError as exc:  # a link (ELOOP), a FIFO with no writer …
        return None, f"left a trace that cannot be opened safely ({exc.strerror})"
    with os.fdopen(fd, "rb") as stream:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None, "left a trace that is not a regular file"
        raw = stream.read(limit + 1)
    if len(raw) > limit:
        return None, f"left a trace larger than the {limit // (1024 * 1024)} MiB cap"
    return parse_json_object(raw)


def parse_json_object(raw: bytes) -> tuple[dict[str, Any] | None, str]:
    try:
        found = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # not UTF-8, not JSON, nested too deeply
        return None, f"left a trace that is not JSON ({str(exc)[:200]})"
    if not isinstance(found, dict):
        return None, "left a trace that is not a JSON object"
    return found, ""


def reproduce_command(spec: EnvSpec, scenario: Scenario, timeout: float = DEFAULT_TIMEOUT) -> str:
    """The `tfbisect run` that repeats one run, from any directory."""
    env = argv.EnvOptions(
        backend=spec.backend.value,
        base=spec.flavour.value,
        keras=spec.keras.value,
        scenario=scenario_argument(scenario),
        timeout=timeout,
        pre=Version(spec.tf_version).is_prerelease,
    )
    return shlex.join(argv.RunOptions(tf=spec.tf_version, env=env, python=spec.python).to_argv())


def scenario_argument(scenario: Scenario) -> str:
    """How a command names the scenario: by name when that finds this very file, else by its
    absolute path, so that the command works as printed from any directory."""
    by_name = scenarios_dir() / f"{scenario.name}.py"
    return scenario.name if by_name.is_file() and by_name.resolve() == scenario.path else str(scenario.path)
