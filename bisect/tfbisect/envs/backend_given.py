"""The given backend: runs in an environment made elsewhere (a tox env), `tfbisect run --interpreter PYTHON`.

tfbisect builds no venv then; it asks the interpreter which Python it is and which TensorFlow
its environment holds, and refuses unless both are what the record will say (the version
asked for, on the line's Python), so that a stored result never names an environment it did
not run in.  Its runs stand for the venv cell its lock describes (a tox env is that venv, made
by tox), so they are stored as that cell, with where they were made in the record's `extra`.

One `GivenBackend` serves one interpreter and one spec: the runner makes a new one for each
run (`Runner.run_given`) and never keeps it for another spec.  It is not offered by `--backend`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from tfbisect.core import jsonread
from tfbisect.core.catalogue import Catalogue, Release
from tfbisect.core.errors import EnvironmentBuildError, NoInterpreterError
from tfbisect.core.scenario import Scenario
from tfbisect.core.spec import EnvSpec, Flavour, KerasVariant, LockSpec
from tfbisect.core.textsafe import clip
from tfbisect.core.versions import minor_line, tox_factor
from tfbisect.envs import locks
from tfbisect.envs.backend_venv import VenvBackend
from tfbisect.envs.environments import Context, Ended, Launch, Options, Registration, Traced, option
from tfbisect.envs.locks import Lock
from tfbisect.platform.process import Finished

# The distributions that install the `tensorflow` package.
TF_DISTRIBUTIONS = frozenset(
    {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tensorflow-intel", "tensorflow-aarch64"}
)

# Run by the interpreter under test, so it must run on Python 3.6 too, and imports nothing
# but the standard library: TensorFlow's version is read from its installed metadata.
_PROBE = r"""
import json, os, platform, sys
found = []
for entry in sys.path:
    try:
        names = os.listdir(entry or ".")
    except OSError:
        continue
    for name in names:
        if name.lower().startswith("tensorflow") and name.endswith(".dist-info") and "-" in name:
            dist, version = name[: -len(".dist-info")].split("-", 1)
            found.append([dist, version, entry])
print(json.dumps({"python": platform.python_version(), "prefix": sys.prefix, "dists": found}))
"""


@dataclass(frozen=True)
class Installed:
    """What an interpreter's environment holds, as far as a run's record is concerned."""

    python: str  # "3.10.13"
    prefix: str
    tensorflow: tuple[tuple[str, str], ...]  # (distribution, version) of every TF distribution found

    @property
    def minor(self) -> str:
        return ".".join(self.python.split(".")[:2])


def run_env() -> dict[str, str]:
    """The environment a scenario runs with (as `Runner.launch` makes it)."""
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    for leak in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME"):
        env.pop(leak, None)
    return env


def inspect(python: Path) -> Installed:
    """Ask the interpreter which Python it is and which TF distributions it sees."""
    if not (python.is_file() and os.access(python, os.X_OK)):
        raise NoInterpreterError(
            f"There is no Python interpreter at {python}.",
            "point --interpreter at an environment's python (in tox.ini: {envpython}).",
        )
    try:
        done = subprocess.run(
            [str(python), "-c", _PROBE],
            capture_output=True,
            text=True,
            errors="replace",
            timeout=60,
            check=False,
            env=run_env(),
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NoInterpreterError(
            f"The interpreter {python} could not be asked what it is: {exc}.",
            "check that it runs (`PYTHON -c 'import sys; print(sys.version)'`).",
        ) from exc
    try:
        data = jsonread.loads(done.stdout.strip().splitlines()[-1]) if done.returncode == 0 else None
    except (ValueError, IndexError):
        data = None
    if not isinstance(data, dict):
        raise NoInterpreterError(
            f"The interpreter {python} could not be asked what it is "
            f"(exit {done.returncode}): {clip(done.stderr.strip() or done.stdout.strip() or 'no output', 500)}",
            "check that it is a CPython 3.6+ that runs (`PYTHON -c 'import sys; print(sys.version)'`).",
        )
    tensorflow = tuple(
        (str(dist), str(version))
        for dist, version, _ in data.get("dists", [])
        if canonicalize_name(str(dist)) in TF_DISTRIBUTIONS
    )
    return Installed(
        python=str(data.get("python", "?")), prefix=str(data.get("prefix", "")), tensorflow=tensorflow
    )


def _same_version(a: str, b: str) -> bool:
    try:
        return Version(a) == Version(b)
    except InvalidVersion:
        return a == b


def spec_for(
    catalogue: Catalogue,
    version: str,
    python: Path,
    *,
    pinned: str | None = None,
    flavour: Flavour = Flavour.CPU,
    keras: KerasVariant = KerasVariant.DEFAULT,
    pre: bool = False,
) -> EnvSpec:
    """The spec of a run in `python`'s environment: refused unless it is what the record says.

    The interpreter must be the line's Python (the one its lock and tox env use; `pinned`
    names another one the release has wheels for), and its environment must hold exactly
    the TF release asked for.  The spec names the venv cell the run stands for."""
    release = catalogue.resolve(version, pre=pre)
    wanted = python_for(
        release, python, inspect(python), pinned, LockSpec(release.version, "", flavour, keras)
    )
    return EnvSpec(tf_version=release.version, python=wanted, flavour=flavour, keras=keras, backend=STORED_AS)


def python_for(
    release: Release, python: Path, installed: Installed, pinned: str | None, asked: LockSpec | None = None
) -> str:
    """The Python a run of `release` in this environment is recorded with, or why it cannot run
    (naming the lock of the flavour and Keras `asked` for, to install)."""
    wanted = pinned or locks.preferred_python(release)
    lock = replace(asked or LockSpec(release.version, wanted), python=wanted)
    if installed.minor != wanted:
        raise NoInterpreterError(*_wrong_python(release, python, installed, wanted, pinned))
    install = f"`{python} -m pip install --require-hashes -r {locks.lock_path(lock)}`"
    if not installed.tensorflow:
        raise EnvironmentBuildError(
            f"The environment of {python} ({installed.prefix}) has no TensorFlow installed, "
            f"so it cannot run TF {release.version}.",
            f"install the lock into it ({install}), or drop --interpreter to let tfbisect build the venv.",
        )
    other = [(d, v) for d, v in installed.tensorflow if not _same_version(v, release.version)]
    if other:
        found = ", ".join(f"{d} {v}" for d, v in installed.tensorflow)
        raise EnvironmentBuildError(
            f"The environment of {python} ({installed.prefix}) has {found}, not TF {release.version}: "
            "a record of it would name a TF it did not run.",
            f"install TF {release.version}'s lock into it ({install}), or ask for the version it has "
            f"(--tf {other[0][1]}).",
        )
    return wanted


def _wrong_python(
    release: Release, python: Path, installed: Installed, wanted: str, pinned: str | None
) -> tuple[str, str]:
    if pinned is not None:
        todo = f"point --interpreter at a Python {wanted} environment, or drop --python {pinned}."
    elif installed.minor in release.pythons:
        todo = (
            f"point --interpreter at a Python {wanted} environment (`tox -e "
            f"{tox_factor(minor_line(release.version))}` makes one), or pass --python {installed.minor} "
            f"to run TF {release.version} on Python {installed.minor} as {python} has it."
        )
    else:
        todo = (
            f"point --interpreter at a Python {wanted} environment (`tox -e "
            f"{tox_factor(minor_line(release.version))}` makes one); TF {release.version} has no "
            f"wheel for Python {installed.minor}."
        )
    what = f"The interpreter {python} is Python {installed.python}, but TF {release.version} " + (
        f"was asked for on Python {wanted}." if pinned else f"runs on Python {wanted} (its lock and tox env)."
    )
    return what, todo


def tags(via: str | None, python: Path) -> dict[str, object]:
    """What a record made in a given environment says about it: `via` (tox, or interpreter),
    the tox env ($TOX_ENV_NAME, which tox sets for its commands) and the interpreter."""
    made: dict[str, object] = {"via": via or "interpreter", "interpreter": str(python)}
    if via == "tox" and os.environ.get("TOX_ENV_NAME"):
        made["tox_env"] = os.environ["TOX_ENV_NAME"]
    return made


STORED_AS = VenvBackend.name  # the cell a given environment's run stands for


@dataclass(frozen=True)
class GivenConfig:
    interpreter: Path | None  # the environment's python (a tox env's {envpython})
    via: str | None = None  # "tox" when tox made it (`--via tox`)


class GivenBackend:
    """`Environments` in one environment made elsewhere, for one spec (see the module's docstring)."""

    name = "given"

    def __init__(self, config: GivenConfig, context: Context) -> None:
        if config.interpreter is None:
            raise NoInterpreterError(
                "The given backend runs in an environment made elsewhere, and none was named.",
                "name its interpreter with --interpreter PYTHON (in tox.ini: {envpython}).",
            )
        self.python = config.interpreter
        self.tags = tags(config.via, config.interpreter)
        self._installed: Installed | None = None
        self._bound: str | None = None  # the one spec this environment serves
        # It runs the scenario exactly as a venv's python does: same environment, same command.
        self._venv = VenvBackend(context.cache_dir, context.progress, {})

    def installed(self) -> Installed:
        if self._installed is None:
            self._installed = inspect(self.python)
        return self._installed

    def python_for(self, release: Release, pinned: str | None) -> str:
        return python_for(release, self.python, self.installed(), pinned)

    def lock_spec(self, spec: EnvSpec) -> LockSpec:
        return spec.lock_spec()

    def prepare(self, spec: EnvSpec, lock: Lock, log_dir: Path) -> Path:
        """Nothing is built: the environment is the interpreter's, for this one spec only."""
        if self._bound is not None and self._bound != spec.key:
            raise EnvironmentBuildError(
                f"The environment of {self.python} was given for {self._bound}, not {spec.key}.",
                "give each spec its own environment (one `tfbisect run --interpreter` per tox env).",
            )
        self._bound = spec.key
        return self.python

    @contextmanager
    def launch(
        self, spec: EnvSpec, scenario: Scenario, prepared: Path, outdir: Path, traced: Traced | None = None
    ) -> Iterator[Launch]:
        with self._venv.launch(spec, scenario, prepared, outdir, traced) as launch:
            yield replace(launch, extra={**launch.extra, **self.tags})

    def ended(self, launch: Launch, finished: Finished, has_result: bool) -> Ended:
        return Ended(exit_code=finished.exit_code)

    def source_places(self, spec: EnvSpec, prepared: Path, lock: Lock) -> list[Path]:
        return self._venv.source_places(spec, prepared, lock)


def _configure(options: Options) -> GivenConfig:
    interpreter, via = option(options, "interpreter"), option(options, "via")
    return GivenConfig(Path(str(interpreter)) if interpreter else None, str(via) if via else None)


REGISTRATION = Registration(
    name=GivenBackend.name,
    configure=_configure,
    make=GivenBackend,
    describe=lambda fallback: "an environment made elsewhere (--interpreter; tox's envs)",
    selectable=False,
)
