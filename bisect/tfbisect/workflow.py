"""The steps of a run, each small enough to test alone: resolve, lock, reuse, install, run, store."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import shlex
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tfbisect import docker_engine, interpreters, locks
from tfbisect.backend_docker import DockerBackend, Image
from tfbisect.backend_venv import VenvBackend
from tfbisect.catalogue import Catalogue, Release
from tfbisect.docker_engine import DockerError
from tfbisect.errors import EnvironmentBuildError, LockError, NoInterpreterError, TfbisectError
from tfbisect.interpreters import Interpreter
from tfbisect.outcome import Outcome
from tfbisect.process import run_logged
from tfbisect.progress import Progress
from tfbisect.record import Failure, RunRecord, classify
from tfbisect.scenario import Scenario
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
        if not self.settings.force:
            stored = self.store.get(scenario.name, scenario.sha256, spec)
            if stored is not None and not stored.extra.get("infrastructure"):
                self.progress.say(f"[{spec.label}] reusing the stored result: {stored.outcome.value}")
                return stored
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

    def infrastructure_skip(
        self, spec: EnvSpec, scenario: Scenario, started: str, exc: TfbisectError
    ) -> RunRecord:
        """Infrastructure, not behaviour: a skip, stored with its reason, that a later run retries."""
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
        )
        self.store.put(record)
        self.progress.say(f"[{spec.label}] skip: {exc.what.splitlines()[0]}")
        return record

    def log_dir(self, scenario: Scenario) -> Path:
        return self.settings.logs_dir / scenario.name / scenario.sha256[:12]

    def execute(
        self, spec: EnvSpec, scenario: Scenario, target: Path | Image, lock: locks.Lock, started: str
    ) -> RunRecord:
        log_path = self.log_dir(scenario) / f"{spec.key}.log"
        with tempfile.TemporaryDirectory(prefix="tfbisect-run-") as tmp:
            output = Path(tmp) / "result.json"
            with self.launch(spec, scenario, target, Path(tmp)) as (command, env, extra):
                self.progress.say(
                    f"[{spec.label}] running {scenario.name} (timeout {self.settings.timeout:.0f}s)"
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
            raw = output.read_text(encoding="utf-8") if output.exists() else None
        if isinstance(target, Image) and finished.exit_code == DOCKER_FAILED and raw is None:
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
            finished.exit_code,
            raw,
            finished.log_tail,
            timed_out=finished.timed_out,
            expected_sha256=scenario.sha256,
        )
        shown = [*(f"{k}={v}" for k, v in spec.env_vars().items()), *command[:2], "--output", "result.json"]
        raw_command = str(extra.pop("docker_run", "")) or shlex.join(shown)
        record = RunRecord(
            spec=spec,
            scenario=scenario.name,
            scenario_sha256=scenario.sha256,
            outcome=outcome,
            exit_code=finished.exit_code,
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
                "reproduce": reproduce_command(spec, scenario),
                **extra,
            },
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


def _is_probe_line(line: str) -> bool:
    return line.startswith(("probe ", "verdict:"))


def reproduce_command(spec: EnvSpec, scenario: Scenario) -> str:
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
    parts += ["--scenario", scenario.name]
    return shlex.join(parts)
