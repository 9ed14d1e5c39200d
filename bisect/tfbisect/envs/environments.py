"""Environment backends behind one interface: where a TF version can run, how its environment is
prepared, and how one run is launched in it and read back.

The runner (runs/) talks to `Environments` only, never to a particular backend:
- `python_for` places a release (which Python, or `NoInterpreterError` saying why not),
- `lock_spec` names the lock the environment installs,
- `prepare` builds or reuses the environment (a venv, an image) with progress and a log,
- `launch` yields the command of one run (a context manager: what it makes, it removes); with
  `traced` it runs only some probes, under the probe tracer when one is named (the narrowing's
  measuring runs, `Runner.trace`; the Swarm backend refuses them),
- `ended` reads how the run ended in the backend's own terms (a container's OOM kill, its
  init's 128+N) into one `Ended`.
Each backend_*.py implements it and says what else there is to know about it in one
`Registration` (its config from the parsed options, a description, a check, its capacity, where
its traced runs go); registry.py lists them.  A new backend is a new module with a class like
theirs and one line in registry.py.  `place` puts a release on the first backend that fits.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Generic, Protocol, TypeVar

from tfbisect.core.catalogue import Release
from tfbisect.core.errors import NoInterpreterError
from tfbisect.core.progress import Progress
from tfbisect.core.scenario import Scenario
from tfbisect.core.spec import EnvSpec, Flavour
from tfbisect.envs.interpreters import Interpreter
from tfbisect.envs.locks import Lock, LockSpec
from tfbisect.platform.process import Finished

TRACE_NAME = "trace.json"  # the tracer's document, next to the result document
Prepared = TypeVar("Prepared")  # what a backend's `prepare` makes and its `launch` runs in
Config = TypeVar("Config")
Backend = TypeVar("Backend")


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


class Environments(Protocol[Prepared]):
    """One backend: where a release runs, its lock, its prepared environment (`Prepared`: a venv's
    python, an image) and one run in it."""

    name: str  # the name it is registered under (registry.py); a spec's `backend`

    def python_for(self, release: Release, pinned: str | None) -> str: ...

    def lock_spec(self, spec: EnvSpec) -> LockSpec: ...

    def prepare(self, spec: EnvSpec, lock: Lock, log_dir: Path) -> Prepared: ...

    def launch(
        self,
        spec: EnvSpec,
        scenario: Scenario,
        prepared: Prepared,
        outdir: Path,
        traced: Traced | None = None,
    ) -> AbstractContextManager[Launch]: ...

    def ended(self, launch: Launch, finished: Finished, has_result: bool) -> Ended: ...

    def source_places(self, spec: EnvSpec, prepared: Prepared, lock: Lock) -> list[Path]:
        """Where the environment's installed Python can be read without running anything: a
        site-packages folder, or the wheels it was installed from (the narrowing diffs them)."""
        ...


# What a backend's config is built from: the parsed command line (an argparse.Namespace) or a
# mapping of option values (`{"keep_containers": True}`); a missing option is its default.
Options = argparse.Namespace | Mapping[str, object]
NO_OPTIONS: Mapping[str, object] = MappingProxyType({})


def option(options: Options, name: str) -> object:
    """One option's value, None when it was not given (or that command has no such option)."""
    if isinstance(options, argparse.Namespace):
        return getattr(options, name, None)
    return options.get(name)


@dataclass(frozen=True)
class Context:
    """What every backend is made with, whatever its config: the runner's cache, progress and the
    interpreters found on this machine."""

    cache_dir: Path
    progress: Progress
    have: Mapping[str, Interpreter]


def _nothing_to_check(config: object, progress: Progress) -> None:
    return None


@dataclass(frozen=True)
class Registration(Generic[Config, Backend]):
    """One backend kind, as registry.py knows it: everything outside envs/ asks this, never the
    backend's module."""

    name: str  # `--backend NAME`, a spec's `backend`, a stored record's key part
    configure: Callable[[Options], Config]  # its own frozen config, from the parsed options
    make: Callable[[Config, Context], Backend]
    describe: Callable[[bool], str]  # one line for "bisecting … in …"; True: venvs follow it (auto)
    # Whether it can work here, before any work starts (an engine answers, a swarm manager and its
    # registry do); raises a TfbisectError saying what to do.
    check: Callable[[Config, Progress], None] = _nothing_to_check
    # How many runs it takes at once (the --jobs default); None: one at a time.
    capacity: Callable[[Backend, Flavour], int] | None = None
    # The backend its traced and proof runs go to (a swarm's run on the local engine); None: itself.
    traced_by: str | None = None
    auto_rank: int | None = None  # its place in `--backend auto`'s order; None: never chosen by auto
    unavailable: str = ""  # what auto says when its check fails ("no Docker engine")
    short: str = ""  # what auto says it runs in instead ("local venvs")
    selectable: bool = True  # offered by --backend (the given environment is chosen by --interpreter)
    cancel: Callable[[], None] | None = None  # stops its builds in progress (a search is over)


def place(
    release: Release, pinned: str | None, candidates: Sequence[Environments[Any]]
) -> tuple[str, Environments[Any]]:
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
