"""The steps of a run, each small enough to test alone: resolve, lock, reuse, install, run, store."""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import os
import shlex
import signal
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.version import Version

from tfbisect import docker_engine, interpreters, interrupt, locks
from tfbisect.backend_docker import MEMORY, DockerBackend, Image
from tfbisect.backend_venv import VenvBackend
from tfbisect.catalogue import Catalogue, Release
from tfbisect.docker_engine import DockerError
from tfbisect.errors import EnvironmentBuildError, LockError, NoInterpreterError, TfbisectError
from tfbisect.interpreters import Interpreter
from tfbisect.outcome import Outcome
from tfbisect.process import run_logged
from tfbisect.progress import Progress
from tfbisect.record import Failure, RunRecord, classify
from tfbisect.resultfile import read_result
from tfbisect.scenario import Scenario, scenarios_dir
from tfbisect.spec import Backend, EnvSpec, Flavour, KerasVariant
from tfbisect.store import ResultStore

DEFAULT_TIMEOUT = 900.0


@dataclass(frozen=True)
class Settings:
    reports_dir: Path
    cache_dir: Path
    timeout: float = DEFAULT_TIMEOUT
    force: bool = False
    lock_missing: bool = True  # resolve a lock on the fly when none is committed
    keep_containers: bool = False  # leave containers behind for debugging
    base_image: str | None = None  # a user-named base image for the Docker backend

    @property
    def store(self) -> ResultStore:
        return ResultStore(self.reports_dir / "results")

    @property
    def logs_dir(self) -> Path:
        return self.reports_dir / "logs"


def default_cache_dir() -> Path:
    if os.environ.get("TFBISECT_CACHE"):
        return Path(os.environ["TFBISECT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tfbisect"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


class Runner:
    """Runs one scenario in one environment, reusing the stored result when there is one."""

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
        self.store = settings.store
        self.have = have if have is not None else interpreters.available()
        self.backend = VenvBackend(settings.cache_dir, progress)
        self._docker: DockerBackend | None = None
        self._docker_lock = threading.Lock()

    def docker(self) -> DockerBackend:
        """The Docker backend, connected on first use (a clear error when no engine answers)."""
        with self._docker_lock:  # bisect rounds call this from several threads
            return self._connect_docker()

    def _connect_docker(self) -> DockerBackend:
        if self._docker is None:
            engine = docker_engine.connect(self.progress)
            self._docker = DockerBackend(
                engine,
                self.settings.cache_dir,
                self.progress,
                keep=self.settings.keep_containers,
                user_base=self.settings.base_image,
            )
        return self._docker

    # -- step 1: which environment ----------------------------------------------------
    def spec_for(
        self,
        version: str,
        *,
        python: str | None = None,
        flavour: Flavour = Flavour.CPU,
        keras: KerasVariant = KerasVariant.DEFAULT,
        backend: Backend = Backend.VENV,
        pre: bool = False,
    ) -> EnvSpec:
        release = self.catalogue.resolve(version, pre=pre)
        chosen = self.python_for(release, python, backend)
        return EnvSpec(
            tf_version=release.version, python=chosen, flavour=flavour, keras=keras, backend=backend
        )

    def python_for(self, release: Release, pinned: str | None, backend: Backend = Backend.VENV) -> str:
        if backend is Backend.DOCKER:
            return self.docker().python_for(release, pinned)
        wanted = [p for p in release.pythons if p.startswith("3.")]
        return interpreters.choose(wanted, self.have, pinned).version

    # -- step 2: the lock ---------------------------------------------------------------
    def lock_for(self, spec: EnvSpec) -> locks.Lock:
        if spec.backend is Backend.DOCKER:
            lock_spec = self.docker().lock_spec(spec)
        else:
            lock_spec = locks.LockSpec(spec.tf_version, spec.python, spec.flavour, spec.keras)
        try:
            return locks.load(lock_spec)
        except LockError:
            if not self.settings.lock_missing:
                raise
        interpreter = self.have.get(spec.python)
        with self.progress.step(spec.label, "no committed lock; resolving one as of the release date"):
            return locks.compile_lock(lock_spec, self.catalogue, interpreter.path if interpreter else None)

    # -- step 3..5: reuse, or install, run and store ----------------------------------
    def run(self, spec: EnvSpec, scenario: Scenario) -> RunRecord:
        interrupt.check()  # a stopping driver starts nothing new
        with self.cell_lock(spec, scenario):
            if not self.settings.force:
                stored = self.store.get(scenario.name, scenario.sha256, spec)
                if stored is not None and stored.answers(self.settings.timeout):
                    self.progress.say(f"[{spec.label}] reusing the stored result: {stored.outcome.value}")
                    return stored
                if stored is not None and stored.outcome is Outcome.TIMEOUT:
                    self.progress.say(
                        f"[{spec.label}] the stored result is a timeout after {stored.timeout_s or 0:g}s; "
                        f"running again with --timeout {self.settings.timeout:g}"
                    )
            started = now_iso()
            try:
                lock = self.lock_for(spec)
                target: Path | Image
                if spec.backend is Backend.DOCKER:
                    target = self.docker().ensure_image(spec, lock, self.log_dir(scenario))
                else:
                    interpreter = self.have.get(spec.python)
                    if interpreter is None:
                        raise NoInterpreterError(
                            f"Python {spec.python} is not installed here.",
                            f"install it (`pyenv install {spec.python}`) or use --backend docker.",
                        )
                    target = self.backend.ensure(spec, lock, interpreter, self.log_dir(scenario))
            except (EnvironmentBuildError, LockError, NoInterpreterError, DockerError) as exc:
                return self.infrastructure_skip(spec, scenario, started, exc)
            return self.execute(spec, scenario, target, lock, started)

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
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as handle:
            waited = False
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if not waited:
                        self.progress.say(
                            f"[{spec.label}] another run of this cell is in progress; waiting to reuse its result"
                        )
                        waited = True
                    interrupt.check()
                    time.sleep(0.2)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

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
            extra={"infrastructure": True, "todo": exc.todo},
            timeout_s=self.settings.timeout,
        )
        self.store.put(record)
        self.progress.say(f"[{spec.label}] skip: {exc.what.splitlines()[0]}")
        return record

    def log_dir(self, scenario: Scenario) -> Path:
        return self.settings.logs_dir / scenario.slug / scenario.sha256[:12]

    def execute(
        self, spec: EnvSpec, scenario: Scenario, target: Path | Image, lock: locks.Lock, started: str
    ) -> RunRecord:
        # Every run has a log of its own: a rerun (--force, a longer --timeout) keeps the old one.
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        log_path = self.log_dir(scenario) / f"{spec.key}.{stamp}-{os.getpid()}.log"
        memory_limit: str | None = None
        with tempfile.TemporaryDirectory(prefix="tfbisect-run-") as tmp:
            with self.launch(spec, scenario, target, Path(tmp)) as (command, env, extra):
                self.progress.say(
                    f"[{spec.label}] running {scenario.name} (timeout {self.settings.timeout:g}s)"
                )
                finished = run_logged(
                    command,
                    log_path=log_path,
                    timeout=self.settings.timeout,
                    env=env,
                    on_line=lambda line: (
                        self.progress.line(spec.label, line) if _is_probe_line(line) else None
                    ),
                )
                exit_code = finished.exit_code
                if isinstance(target, Image) and not finished.timed_out:
                    state = self.docker().engine.container_state(str(extra["container"]))
                    if state.get("OOMKilled"):
                        memory_limit = MEMORY
                    exit_code = _container_exit(exit_code)
            raw, unreadable = read_result(Path(tmp))
        if isinstance(target, Image) and exit_code == DOCKER_FAILED and raw is None and unreadable is None:
            # `docker run` itself failed (image gone, engine error): not the scenario's 125.
            return self.infrastructure_skip(
                spec,
                scenario,
                started,
                DockerError(
                    "The container could not start: " + (finished.log_tail.splitlines() or ["?"])[-1],
                    f"see {log_path}; run again (the image is rebuilt if it went missing).",
                ),
            )
        outcome, document, failure = classify(
            exit_code,
            raw,
            finished.log_tail,
            timed_out=finished.timed_out,
            expected_sha256=scenario.sha256,
            unreadable=unreadable,
            timeout=self.settings.timeout,
            memory_limit=memory_limit,
        )
        shown = [*(f"{k}={v}" for k, v in spec.env_vars().items()), *command[:2], "--output", "result.json"]
        raw_command = str(extra.pop("docker_run", "")) or shlex.join(shown)
        if finished.leftovers:
            extra["leftover_processes_killed"] = finished.leftovers
        record = RunRecord(
            spec=spec,
            scenario=scenario.name,
            scenario_sha256=scenario.sha256,
            outcome=outcome,
            exit_code=exit_code,
            document=document,
            failure=failure,
            log_tail=finished.log_tail,
            command=raw_command,
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
        self.progress.say(f"[{spec.label}] {outcome.value} in {finished.seconds:.1f}s → {path}")
        return record

    @contextlib.contextmanager
    def launch(
        self, spec: EnvSpec, scenario: Scenario, target: Path | Image, outdir: Path
    ) -> Iterator[tuple[list[str], dict[str, str], dict[str, object]]]:
        """The command of one run, its environment and what to record about where it ran."""
        if isinstance(target, Image):
            with self.docker().launch(spec, scenario, target, outdir) as (argv, extra):
                yield argv, dict(os.environ), extra
            return
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONDONTWRITEBYTECODE="1", **spec.env_vars())
        for leak in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
            env.pop(leak, None)
        yield self.backend.command(target, scenario, outdir / "result.json", None), env, {}


DOCKER_FAILED = 125  # what `docker run` exits with when the container cannot start


def _container_exit(code: int | None) -> int | None:
    """A container's 128+N (its init reports a child killed by signal N) as the venv backend's -N."""
    if code is not None and 128 < code < 128 + signal.NSIG:
        return -(code - 128)
    return code


def _is_probe_line(line: str) -> bool:
    return line.startswith(("probe ", "verdict:"))


def reproduce_command(spec: EnvSpec, scenario: Scenario, timeout: float = DEFAULT_TIMEOUT) -> str:
    parts = [
        "tfbisect",
        "run",
        "--tf",
        spec.tf_version,
        "--python",
        spec.python,
        "--backend",
        spec.backend.value,
    ]
    if spec.flavour is not Flavour.CPU:
        parts += ["--base", spec.flavour.value]
    if spec.keras is not KerasVariant.DEFAULT:
        parts += ["--keras", spec.keras.value]
    parts += ["--scenario", scenario_argument(scenario)]
    if timeout != DEFAULT_TIMEOUT:
        parts += ["--timeout", f"{timeout:g}"]
    if Version(spec.tf_version).is_prerelease:
        parts.append("--pre")
    return shlex.join(parts)


def scenario_argument(scenario: Scenario) -> str:
    """How a command names the scenario: by name when that finds this very file, else by its
    absolute path, so that the command works as printed from any directory."""
    by_name = scenarios_dir() / f"{scenario.name}.py"
    return scenario.name if by_name.is_file() and by_name.resolve() == scenario.path else str(scenario.path)
