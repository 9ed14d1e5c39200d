"""The proof's runs: the deciding probe in a COPY of a prepared environment, some installed files
replaced (a revert) or some packages pinned (a transplant), never in the environment itself.

A venv is copied with hard links (`cp -al`: about a second, no space); each patched file is
unlinked and written anew in the copy, so the cached file behind the link keeps its bytes, and
its bytecode is removed (the backend runs with PYTHONDONTWRITEBYTECODE=1, so none is written
either).  A pin is installed into the copy by uv from tfbisect's own uv cache, without its
dependencies: uv removes the old version's files (unlink: the cached venv keeps its copy behind the
link) and links the new version's from its cache, replacing a file that is there by a rename, never
by writing into it; anything it leaves in TMPDIR goes with the copy.  The copy goes when the run is
done.  A run's record is stored, keyed like a run (environment, lock, scenario sha256, probe, and
the patch's hash or the pins), so a repeat runs nothing; a pin that does not install is stored too.
Docker and swarm environments are not copied yet: a proof there says so.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tfbisect.core import interrupt, jsonread
from tfbisect.core.errors import TraceError
from tfbisect.core.fsio import now_iso, stamp, write_json_atomic
from tfbisect.core.record import RunRecord
from tfbisect.core.scenario import Scenario
from tfbisect.core.spec import EnvSpec
from tfbisect.envs.cache import uv_cache_dir
from tfbisect.envs.environments import Traced
from tfbisect.envs.locks import uv_binary
from tfbisect.platform.process import run_logged
from tfbisect.runs.launching import Cell, launch_and_wait, record_of

if TYPE_CHECKING:
    from tfbisect.runs.runner import Runner

STORE_FOLDER = "proofs"  # under the reports' results folder
UNINSTALLABLE = ".not-installed.json"  # beside a key: why its pins did not install


class PinError(TraceError):
    """A pinned package did not install in the copy: the transplant is not testable (`reused`: the
    reason was stored by an earlier try, nothing ran now)."""

    def __init__(self, what: str, todo: str, reused: bool = False) -> None:
        super().__init__(what, todo)
        self.reused = reused


@dataclass(frozen=True)
class PatchedResult:
    """One patched run's record, and whether it was stored from before (no run now)."""

    record: RunRecord
    reused: bool


def patch_key(spec: EnvSpec, lock_sha256: str, scenario_sha256: str, probe: str, change: object) -> str:
    """The stored key of a patched run: the environment, its lock, the scenario, the probe and
    the change (patched files' texts, or pins), hashed."""
    payload = json.dumps([spec.key, lock_sha256, scenario_sha256, probe, change], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def venv_root(prepared: object) -> Path:
    """The venv a prepared environment's python lives in; refused for anything else."""
    if isinstance(prepared, Path) and (prepared.parent.parent / "pyvenv.cfg").is_file():
        return prepared.parent.parent
    raise TraceError(
        "This environment cannot be proven in: not supported yet: proof runs in venvs (a hard-linked copy).",
        "narrow with --backend venv to prove the suspects; their ranking stands without the proof.",
    )


@contextmanager
def venv_copy(root: Path, under: Path) -> Iterator[Path]:
    """A hard-linked copy of the venv at `root` (same file system: under the cache), removed after."""
    under.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix="tfbisect-proof-", dir=under))
    try:
        copy = folder / root.name
        done = subprocess.run(
            ["cp", "-al", str(root), str(copy)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            raise TraceError(
                f"The venv {root} could not be copied with hard links: {done.stderr.strip()[:300]}",
                "check the free space and that the cache is on one file system, then narrow again.",
            )
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_patches(copy: Path, patches: Mapping[str, str]) -> None:
    """Each patched file written anew in the copy's site-packages (its link to the cached file
    broken first), and its bytecode removed so that it cannot serve the old code."""
    sites = sorted((copy / "lib").glob("python*/site-packages"))
    if not sites:
        raise TraceError(f"The venv copy {copy} has no site-packages.", "rebuild the venv and narrow again.")
    site = sites[0].resolve()
    for path, text in sorted(patches.items()):
        target = (site / path).resolve()
        if not target.is_relative_to(site) or not path.endswith(".py"):
            raise TraceError(f"A patch names {path!r}, outside site-packages.", "report this as a bug.")
        target.unlink(missing_ok=True)
        target.write_text(text, encoding="utf-8")
        for cached in (target.parent / "__pycache__").glob(f"{target.stem}.*.pyc"):
            cached.unlink()


def install_pins(copy: Path, pins: Mapping[str, str], log_path: Path) -> None:
    """Packages pinned in the copy, without their dependencies, as the venv backend installs (uv,
    tfbisect's uv cache and its index); a pin that does not install raises PinError with uv's reason.

    `--link-mode hardlink`: uv links each new file from its cache, and where a file is already there
    (a link shared with the cached venv) it links beside it and renames over it, so nothing is ever
    written through a link, into the cached venv or uv's cache.  TMPDIR is the copy's folder."""
    requirements = [f"{name}=={version}" for name, version in sorted(pins.items())]
    command = [
        uv_binary(),
        "pip",
        "install",
        "--no-deps",
        "--link-mode",
        "hardlink",
        "--python",
        str(copy / "bin" / "python"),
        *requirements,
    ]
    env = dict(
        os.environ, UV_PYTHON_DOWNLOADS="never", UV_CACHE_DIR=str(uv_cache_dir()), TMPDIR=str(copy.parent)
    )
    finished = run_logged(command, log_path=log_path, timeout=600, env=env)
    if finished.exit_code != 0:
        lines = [line.strip() for line in finished.log_tail.strip().splitlines() if line.strip()]
        reason = next(
            (line for line in lines if "error" in line.lower()), lines[-1] if lines else "(no output)"
        )
        raise PinError(
            f"{' '.join(requirements)} did not install: {reason[:300]}",
            f"see {log_path}; the other transplants and the code reverts still run.",
        )


class PatchedRuns:
    """The runner's patched and transplanted runs, stored under the reports' results."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def store_path(self, scenario: Scenario, key: str) -> Path:
        return self.runner.settings.reports_dir / "results" / STORE_FOLDER / scenario.slug / f"{key}.json"

    def run(
        self,
        spec: EnvSpec,
        scenario: Scenario,
        probe: str,
        patches: Mapping[str, str] | None = None,
        pins: Mapping[str, str] | None = None,
    ) -> PatchedResult:
        """The probe alone in a copy of the spec's venv with `patches` (installed path -> text)
        written, or `pins` (package -> version) installed; stored, or run now."""
        interrupt.check()
        lock, prepared = self.runner.prepare(spec, scenario)
        change = {"patches": dict(patches or {}), "pins": dict(pins or {})}
        key = patch_key(spec, lock.sha256, scenario.sha256, probe, change)
        stored = None if self.runner.settings.force else self.stored(scenario, key)
        if stored is not None:
            return PatchedResult(stored, reused=True)
        failed = None if self.runner.settings.force or not pins else self.not_installed(scenario, key)
        if failed is not None:
            raise PinError(failed, "the pins were tried before (--force tries them again).", reused=True)
        root = venv_root(prepared)
        log_path = self.runner.log_dir(scenario) / f"{spec.key}.proof-{key[:12]}.{stamp()}-{os.getpid()}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with venv_copy(root, self.runner.settings.cache_dir / "proof-copies") as copy:
            write_patches(copy, patches or {})
            if pins:
                try:
                    install_pins(copy, pins, log_path.with_suffix(".install.log"))
                except PinError as exc:
                    self.keep_not_installed(scenario, key, exc.what)
                    raise
            started = now_iso()
            done = launch_and_wait(
                self.runner.environment(spec.backend),
                spec,
                scenario,
                copy / prepared.relative_to(root),  # type: ignore[attr-defined]
                log_path,
                f"running {probe} alone, {'with ' + ', '.join(sorted(pins)) + ' pinned' if pins else 'patched'}",
                self.runner.waiting,
                Traced(None, (), (probe,)),
            )
        cell = Cell(spec, scenario, started, self.runner.settings.timeout)
        extra: dict[str, object] = {
            "proof_key": key,
            "patched": sorted(change["patches"]),
            "pins": change["pins"],
        }
        record = record_of(cell, done, lock, extra)
        path = self.store_path(scenario, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record.to_dict())
        return PatchedResult(record, reused=False)

    def stored(self, scenario: Scenario, key: str) -> RunRecord | None:
        path = self.store_path(scenario, key)
        try:
            return RunRecord.from_dict(jsonread.read(path, max_bytes=None))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def not_installed(self, scenario: Scenario, key: str) -> str | None:
        """Why the pins of `key` did not install, as an earlier try stored it; None: not tried."""
        path = self.store_path(scenario, key).with_suffix(UNINSTALLABLE)
        try:
            reason = jsonread.read(path, max_bytes=100_000).get("not_installed")
        except (OSError, ValueError, AttributeError):
            return None
        return reason if isinstance(reason, str) else None

    def keep_not_installed(self, scenario: Scenario, key: str, reason: str) -> None:
        path = self.store_path(scenario, key).with_suffix(UNINSTALLABLE)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, {"not_installed": reason, "at": now_iso()})
