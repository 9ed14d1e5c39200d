"""Environment backends behind one interface: where a TF version can run, how its environment is
prepared, and how one run is launched in it and read back.

The runner (workflow.py) talks to `Environments` only, never to a particular backend:
- `python_for` places a release (which Python, or `NoInterpreterError` saying why not),
- `lock_spec` names the lock the environment installs,
- `prepare` builds or reuses the environment (a venv, an image) with progress and a log,
- `launch` yields the command of one run (a context manager: what it makes, it removes); with
  `traced` it runs only some probes, under the probe tracer when one is named (the narrowing's
  measuring runs, `Runner.trace`; the Swarm backend refuses them),
- `ended` reads how the run ended in the backend's own terms (a container's OOM kill, its
  init's 128+N) into one `Ended`.
The venv backend (backend_venv.py) and the Docker backend (backend_docker.py) implement it; a
third backend is a new module with a class like theirs and one line in `Runner.environment`.
"Auto" (containers where an engine answers, venvs for what no base fits) is `choose` + `place`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tfbisect.core.catalogue import Release
from tfbisect.core.errors import NoInterpreterError, TfbisectError
from tfbisect.core.process import Finished
from tfbisect.core.progress import Progress
from tfbisect.core.scenario import Scenario
from tfbisect.core.spec import Backend, EnvSpec
from tfbisect.envs import docker_engine
from tfbisect.envs.locks import Lock, LockSpec

TRACE_NAME = "trace.json"  # the tracer's document, next to the result document


@dataclass(frozen=True)
class Traced:
    """A run of some probes alone, under the probe tracer (data/probe_tracer.py) or, with no
    tracer, untraced: the yardstick of what tracing costs."""

    tracer: Path | None  # the tracer script on this machine; None: the probes run untraced
    packages: tuple[str, ...]  # the installed packages whose lines count ("tensorflow", "keras", …)
    probes: tuple[str, ...]  # the scenario's `--probe` names
    window_only: bool = True  # trace only inside the scenario's window (the probe's own work)

    def tracer_arguments(self, output: str) -> list[str]:
        """The tracer's own options, up to and including the `--` before the scenario."""
        window = ["--window-only"] if self.window_only else []
        return ["--packages", ",".join(self.packages), *window, "--output", output, "--"]

    def scenario_arguments(self) -> list[str]:
        return [argument for probe in self.probes for argument in ("--probe", probe)]


@dataclass(frozen=True)
class Launch:
    """One run's command, its environment variables and what to record about where it ran."""

    argv: list[str]
    env: dict[str, str]
    extra: dict[str, object]
    shown: str  # the command as a user can paste it (stored in the record)
    results: Path | None = None  # where the result document lands, if not the run's own folder
    trace: Path | None = None  # where the tracer's document lands (traced runs only)


@dataclass(frozen=True)
class Ended:
    exit_code: int | None  # as the venv backend reports it: negative for a death by signal
    memory_limit: str | None = None  # set when the run was killed for running out of memory
    unstarted: str | None = None  # the environment could not start the run at all (not the scenario's doing)


class Environments(Protocol):
    kind: Backend

    def python_for(self, release: Release, pinned: str | None) -> str: ...

    def lock_spec(self, spec: EnvSpec) -> LockSpec: ...

    def prepare(self, spec: EnvSpec, lock: Lock, log_dir: Path) -> object: ...

    def launch(
        self, spec: EnvSpec, scenario: Scenario, prepared: object, outdir: Path, traced: Traced | None = None
    ) -> AbstractContextManager[Launch]: ...

    def ended(self, launch: Launch, finished: Finished, has_result: bool) -> Ended: ...

    def source_places(self, spec: EnvSpec, prepared: object, lock: Lock) -> list[Path]:
        """Where the environment's installed Python can be read without running anything: a
        site-packages folder, or the wheels it was installed from (the narrowing diffs them)."""
        ...


@dataclass(frozen=True)
class Choice:
    """What `--backend` resolved to: the backends to try, in order, and how to say so."""

    order: tuple[Backend, ...]

    @property
    def primary(self) -> Backend:
        return self.order[0]

    @property
    def fallback(self) -> bool:
        return len(self.order) > 1

    def describe(self) -> str:
        if self.primary is Backend.SWARM:
            return "services on a Docker Swarm (Swarm backend; images from ./Dockerfile, built here, pushed)"
        if self.primary is Backend.DOCKER:
            return "containers (Docker backend; images from ./Dockerfile)" + (
                ", and local venvs for versions no base image fits" if self.fallback else ""
            )
        return "local venvs (venv backend; --backend docker runs them in containers)"


def choose(asked: str, progress: Progress) -> Choice:
    """`auto`: containers when an engine answers, with venvs for what no base fits; else venvs.

    An explicit `docker` with no engine is a clear error here, before any work starts."""
    if asked == Backend.DOCKER.value:
        docker_engine.connect(progress)
    if asked == Backend.SWARM.value:
        # The local engine builds the images; the manager is checked when the backend is made.
        docker_engine.connect(
            progress, host=os.environ.get("TFBISECT_BUILD_HOST", docker_engine.DEFAULT_HOST)
        )
    if asked != "auto":
        return Choice((Backend(asked),))
    try:
        docker_engine.connect(progress)
    except TfbisectError as exc:
        progress.say(f"no Docker engine ({exc.what.splitlines()[0]}): running in local venvs")
        return Choice((Backend.VENV,))
    return Choice((Backend.DOCKER, Backend.VENV))


def place(
    release: Release, pinned: str | None, candidates: Sequence[Environments]
) -> tuple[str, Environments]:
    """The first backend (in order) that can run the release, with its Python; or every reason why not."""
    reasons: list[NoInterpreterError] = []
    for environments in candidates:
        try:
            return environments.python_for(release, pinned), environments
        except NoInterpreterError as exc:
            reasons.append(exc)
    if len(reasons) == 1:
        raise reasons[0]
    raise NoInterpreterError(
        " ".join(f"{r.what}" for r in reasons), " Or: ".join(dict.fromkeys(r.todo for r in reasons))
    )
