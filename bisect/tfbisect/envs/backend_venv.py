"""The venv backend: one cached virtual environment per lock, the scenario run in a subprocess.

Environments live under the cache as `<lock name>-<lock sha[:12]>`; they are built in a
temporary folder, checked (every pinned distribution installed) and only then marked ready
(`.tfbisect-ready`, the lock's sha256) and renamed into place, so an interrupted install never
looks finished and a folder without the marker is built again.  uv creates and fills them from
tfbisect's own uv cache (`<cache>/uv`, not the user's: `tfbisect cache prune` can then free
what only these venvs used); its files are hard-linked, so a second version costs seconds.
Pythons uv cannot drive fall back to `python -m venv` and pip.  Before an install, the cache
budget is enforced and the free space checked (envs/cache.py).
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

from tfbisect.core import priority
from tfbisect.core.catalogue import Release
from tfbisect.core.errors import EnvironmentBuildError, LockError, NoInterpreterError
from tfbisect.core.limits import TOKEN_VARIABLES
from tfbisect.core.progress import Progress
from tfbisect.core.scenario import Scenario, harness_path
from tfbisect.core.spec import EnvSpec, Flavour, has_and_cuda
from tfbisect.core.timing import SPENT, Phase
from tfbisect.envs import cache, interpreters
from tfbisect.envs.environments import TRACE_NAME, Context, Ended, Launch, Options, Registration, Traced
from tfbisect.envs.interpreters import Interpreter
from tfbisect.envs.locks import Lock, LockSpec, uv_binary
from tfbisect.envs.wheelhouse import Pin, Wheelhouse, pins, requirement_text, unpinned
from tfbisect.platform.process import Finished, run_logged

READY = cache.READY


class VenvBackend:
    """`Environments` as local virtual environments, one per lock (see environments.py)."""

    name = "venv"

    def __init__(self, cache_dir: Path, progress: Progress, have: Mapping[str, Interpreter]) -> None:
        self.cache_dir = cache_dir
        self.progress = progress
        self.have = have
        self._in_use: set[str] = set()  # the venvs (and wheels) this process uses: never evicted by it
        # The machine's wheel cache, not this cache folder's: uv unpacks a wheel once per path.
        self.wheels = Wheelhouse(cache.wheel_cache_dir(), progress)

    def python_for(self, release: Release, pinned: str | None) -> str:
        wanted = release.cpython3
        return interpreters.choose(wanted, self.have, pinned, release=release.version).version

    def lock_spec(self, spec: EnvSpec) -> LockSpec:
        if spec.flavour is Flavour.CUDA and not has_and_cuda(spec.tf_version):
            raise LockError(
                f"A venv of TF {spec.tf_version} on CUDA would need a CUDA set next to TF's wheel, "
                "which tfbisect installs only into Docker images (one shared NVIDIA layer).",
                "use --backend docker for CUDA before TF 2.14, or --base cpu.",
            )
        return spec.lock_spec()

    def prepare(self, spec: EnvSpec, lock: Lock, log_dir: Path) -> Path:
        interpreter = self.have.get(spec.python)
        if interpreter is None:
            raise NoInterpreterError(
                f"Python {spec.python} is not installed here.",
                f"install it (`pyenv install {spec.python}`) or use --backend docker.",
            )
        return self.ensure(spec, lock, interpreter, log_dir)

    @contextmanager
    def launch(
        self, spec: EnvSpec, scenario: Scenario, prepared: Path, outdir: Path, traced: Traced | None = None
    ) -> Iterator[Launch]:
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONDONTWRITEBYTECODE="1", **spec.env_vars())
        # The scenario gets neither the driver's Python setup nor its GitHub token.
        for leak in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", *TOKEN_VARIABLES):
            env.pop(leak, None)
        probes = traced.scenario_arguments() if traced is not None else []
        argv = [*self.command(prepared, scenario, outdir / "result.json"), *probes]
        self._mark_used(prepared)
        variables = [f"{k}={v}" for k, v in spec.env_vars().items()]
        shown = [*variables, *self.command(prepared, scenario, Path("result.json")), *probes]
        if traced is None or traced.tracer is None:
            yield Launch(argv=argv, env=env, extra={}, shown=shlex.join(shown))
            return
        # The tracer runs the scenario as `__main__` in the same interpreter: its options go between.
        trace = outdir / TRACE_NAME
        python, tracer = argv[0], str(traced.tracer)
        argv = [python, tracer, *traced.tracer_arguments(str(trace)), *argv[1:]]
        shown[len(variables) : len(variables) + 1] = [python, tracer, *traced.tracer_arguments(TRACE_NAME)]
        yield Launch(argv=argv, env=env, extra={}, shown=shlex.join(shown), trace=trace)

    def _mark_used(self, python: Path) -> None:
        """The venv's last use, for `tfbisect cache` and the budget (only tfbisect's own venvs)."""
        env = python.parent.parent
        if env.parent == self.cache_dir / "venvs" and (env / READY).is_file():
            cache.touch(env / cache.USED)

    def ended(self, launch: Launch, finished: Finished, has_result: bool) -> Ended:
        return Ended(exit_code=finished.exit_code)

    def source_places(self, spec: EnvSpec, prepared: Path, lock: Lock) -> list[Path]:
        """The venv's own site-packages: what it installed, as it ran."""
        return sorted((prepared.parent.parent / "lib").glob("python*/site-packages"))

    def env_dir(self, lock: Lock) -> Path:
        return self.cache_dir / "venvs" / f"{lock.path.stem}-{lock.sha256[:12]}"

    def ensure(self, spec: EnvSpec, lock: Lock, interpreter: Interpreter, log_dir: Path) -> Path:
        """The environment's python, creating the environment if it is not there yet."""
        target = self.env_dir(lock)
        python = target / "bin" / "python"
        ready = target / READY
        self._in_use.add(f"venv:{target}")
        if ready.is_file() and ready.read_text(encoding="utf-8").strip() == lock.sha256 and python.exists():
            return python
        cache.enforce_budget(self.cache_dir, self._in_use, self.progress.say)
        cache.require_free(
            self.cache_dir, cache.VENV_ESTIMATE[spec.flavour.value], f"a venv of TF {spec.tf_version}"
        )
        partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        partial.parent.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{spec.key}.install.log"
        with self.progress.step(spec.label, f"installing {lock.path.name} into a new venv (log: {log_path})"):
            try:
                with cache.installing(), SPENT.measure(Phase.BUILD):
                    finished = self._install(partial, lock, interpreter, log_path)
                missing = [] if finished.exit_code != 0 else not_installed(partial, lock)
            except BaseException:  # interrupted: no half-built venv outlives the driver
                shutil.rmtree(partial, ignore_errors=True)
                raise
            if finished.exit_code != 0:
                shutil.rmtree(partial, ignore_errors=True)
                if priority.dropped():
                    raise priority.DroppedError(
                        f"installing TF {spec.tf_version} was stopped: the search no longer needs it",
                        "nothing to do; a run that needs the release installs it.",
                    )
                raise EnvironmentBuildError(
                    f"Installing TF {spec.tf_version} on Python {spec.python} failed:\n"
                    + "\n".join(finished.log_tail.splitlines()[-15:]),
                    f"see the full log at {log_path}; check the network, or regenerate the lock with "
                    f"`tfbisect lock --tf {spec.tf_version} --python {spec.python}`.",
                )
            if missing:
                shutil.rmtree(partial, ignore_errors=True)
                raise EnvironmentBuildError(
                    f"Installing TF {spec.tf_version} on Python {spec.python} ended without "
                    f"{', '.join(missing[:8])}" + (" and more" if len(missing) > 8 else "") + ".",
                    f"see the full log at {log_path}; run again (the venv is built anew).",
                )
            (partial / READY).write_text(lock.sha256 + "\n", encoding="utf-8")
            shutil.rmtree(target, ignore_errors=True)
            partial.replace(target)
        return python

    def _install(self, target: Path, lock: Lock, interpreter: Interpreter, log_path: Path) -> Finished:
        """Fill the venv from the wheel cache, the one download path of every backend: the lock's
        wheels are fetched there (checked against its sha256) unless an image or a venv of the
        same release already did, and installed offline from it.  A lock with a requirement that
        is no `name==version` pin (a direct URL) is installed by uv from the lock itself."""
        text = lock.path.read_text(encoding="utf-8")
        if unpinned(text) or interpreter.version == "3.6":
            # Python 3.6's pip (18.1) cannot build wheels of the few sdists for the cache (no
            # --use-pep517), and no image has Python 3.6: it installs from the index as before.
            return self._run_install(
                target, interpreter, f"-r {shlex.quote(str(lock.path))}", online=True, log_path=log_path
            )
        wanted = pins(text)
        fetch_log = log_path.with_name(log_path.name.replace(".install.log", ".wheels.log"))
        kept = self.wheels.ensure(wanted, interpreter.version, fetch_log)
        self._in_use.update(f"wheel:{path}" for path in kept)
        finished = self._install_offline(target, wanted, interpreter, log_path)
        if (
            finished.exit_code != 0
            and not priority.dropped()
            and self.wheels.recheck(wanted, interpreter.version)
        ):
            # A cached wheel was damaged since its check: evicted, fetched again, installed again.
            self.progress.say("wheel cache: a damaged wheel was fetched again; installing the venv once more")
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            self.wheels.ensure(wanted, interpreter.version, fetch_log)
            finished = self._install_offline(target, wanted, interpreter, log_path)
        return finished

    def _install_offline(
        self, target: Path, wanted: list[Pin], interpreter: Interpreter, log_path: Path
    ) -> Finished:
        folder = self.wheels.folder(interpreter.version)
        # The cache's files were checked against the lock's sha256 (or built from its checked
        # sdists) as they entered it: the pins alone name them, with no index to ask.
        requirements = target.with_name(f"{target.name}.requirements.txt")
        requirements.write_text(requirement_text(wanted), encoding="utf-8")
        offline = f"--no-index --find-links {shlex.quote(str(folder))} -r {shlex.quote(str(requirements))}"
        try:
            return self._run_install(target, interpreter, offline, online=False, log_path=log_path)
        finally:
            requirements.unlink(missing_ok=True)

    def _run_install(
        self, target: Path, interpreter: Interpreter, source: str, *, online: bool, log_path: Path
    ) -> Finished:
        """Create the venv and install `source` (requirement options) into it: from the wheel
        cache alone, or (`online`) from the index with the lock's hashes."""
        uv = uv_binary()
        # tfbisect's own uv cache, one per machine (hard links need one file system: the default
        # cache folder), so that `tfbisect cache prune` can free what only its venvs used without
        # touching the user's; uv unpacks each cached wheel there once and links it into every venv.
        uv_cache = str(cache.uv_cache_dir())
        env = dict(os.environ, UV_PYTHON_DOWNLOADS="never", UV_CACHE_DIR=uv_cache)
        script = (
            f"set -e; {uv} venv --quiet --python {interpreter.path} {target}; "
            f"{uv} pip install --python {target}/bin/python {'' if online else '--offline'} --no-deps {source}"
        )
        if interpreter.version == "3.6":
            # uv does not create or fill Python 3.6 environments.
            script = (
                f"set -e; {interpreter.path} -m venv {target}; "
                f"{target}/bin/python -m pip install --no-deps --require-hashes {source}"
            )
        # The env dir is renamed after install; uv writes absolute paths into scripts only,
        # and the scenario is always run as `<env>/bin/python script.py`, which survives it.
        return run_logged(["bash", "-c", script], log_path=log_path, timeout=3600, env=env)

    def command(self, python: Path, scenario: Scenario, output: Path) -> list[str]:
        # A plain script runs under the harness, from the package's own file.
        run = scenario.arguments(str(scenario.path), str(harness_path()))
        return [str(python), *run, "--output", str(output)]


def not_installed(env: Path, lock: Lock) -> list[str]:
    """The lock's pins that have no installed distribution of their version in `env` (a venv's
    own check before it is marked ready)."""
    found: set[tuple[str, str]] = set()
    for info in env.glob("lib/python*/site-packages/*.dist-info"):
        name, _, version = info.name[: -len(".dist-info")].partition("-")
        found.add((canonicalize_name(name), _normal(version)))
    wanted = pins(lock.path.read_text(encoding="utf-8"))
    return [p.key for p in wanted if (canonicalize_name(p.name), _normal(p.version)) not in found]


def _normal(version: str) -> str:
    try:
        return str(Version(version))
    except InvalidVersion:
        return version


@dataclass(frozen=True)
class VenvConfig:
    """The venv backend takes no options: its venvs live in the runner's cache."""


def _configure(options: Options) -> VenvConfig:
    return VenvConfig()


def _make(config: VenvConfig, context: Context) -> VenvBackend:
    return VenvBackend(context.cache_dir, context.progress, context.have)


REGISTRATION = Registration(
    name=VenvBackend.name,
    configure=_configure,
    make=_make,
    describe=lambda fallback: "local venvs (venv backend; --backend docker runs them in containers)",
    auto_rank=1,
    unavailable="no interpreter",
    short="local venvs",
)
