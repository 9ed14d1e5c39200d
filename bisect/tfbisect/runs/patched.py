"""The proof's runs: the deciding probe in a COPY of a prepared environment, some installed files
replaced (a revert) or some packages pinned (a transplant), never in the environment itself.

A venv is copied with hard links (`cp -al`: about a second, no space); each patched file is
unlinked and written anew in the copy, so the cached file behind the link keeps its bytes, and
its bytecode is removed (the backend runs with PYTHONDONTWRITEBYTECODE=1, so none is written
either).  A pin is installed into the copy by uv from tfbisect's own uv cache, without its
dependencies, each wheel checked against the other end's lock hashes (`--require-hashes`): uv
removes the old version's files (unlink: the cached venv keeps its copy behind the link) and links
the new version's from its cache, replacing a file that is there by a rename, never by writing into
it; where the copy and uv's cache lie on different file systems (uv copies then), the replaced
package's files and the scripts are first copied anew in the copy, so that no write reaches the
cached venv through a link.  Anything uv leaves in TMPDIR goes with the copy.  The copy goes when
the run is done (one a killed driver left is swept after an hour).  A run's record is stored, keyed
like a run (environment, lock, scenario sha256, probe, and the patch's hash or the pins and their
hashes), so a repeat runs nothing; a pin that cannot be resolved is stored too, never a machine
fault, a timeout or a network error.  A Docker environment (and a swarm's, whose proof runs go to
the local engine) is not copied: the same change goes into a thin image on its cached image
(envs/docker_proof.py), run by the Docker backend's own launch, removed afterwards.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from packaging.utils import InvalidName, canonicalize_name
from packaging.version import InvalidVersion, Version

from tfbisect.core import interrupt
from tfbisect.core.errors import (
    MACHINE_TODO,
    MachineFaultError,
    TraceError,
    as_machine_fault,
    machine_fault_in,
)
from tfbisect.core.fsio import now_iso, stamp, write_json_atomic
from tfbisect.core.limits import RESULT_MAX_BYTES
from tfbisect.core.record import RunRecord
from tfbisect.core.resultfile import read_result
from tfbisect.core.scenario import Scenario
from tfbisect.core.spec import EnvSpec
from tfbisect.core.textsafe import one_line
from tfbisect.envs import docker_proof
from tfbisect.envs.backend_docker import DockerBackend, Image
from tfbisect.envs.cache import sweep_proof_copies, uv_cache_dir
from tfbisect.envs.environments import Traced
from tfbisect.envs.locks import Lock, uv_binary
from tfbisect.envs.wheelhouse import Pin
from tfbisect.platform.process import run_logged
from tfbisect.runs.launching import Cell, launch_and_wait, read_json_object, record_of

if TYPE_CHECKING:
    from tfbisect.runs.runner import Runner

STORE_FOLDER = "proofs"  # under the reports' results folder
# Neither ends in .json: `tfbisect show` lists every *.json under results/ as a TF version's run,
# and a proof's run is no such run.
RECORD_SUFFIX = ".proof-run"
UNINSTALLABLE = ".not-installed"  # beside a key: why its pins cannot be resolved
COPIES_FOLDER = "proof-copies"  # under the cache: the venv copies, each gone when its run is done
INSTALL_TIMEOUT_S = 600
RECORD_LINES_MAX = 200_000  # a dist-info RECORD's lines read (a hostile one may be huge)
_SHA256 = re.compile(r"[0-9a-f]{64}")
# uv's words for a pin that cannot be resolved: the same on every try, so the reason is stored.
RESOLUTION_SIGNS = (
    "no solution found",
    "not found in the package registry",
    "no matching distribution",
    "because there is no version of",
)
# uv's words for a network that failed under it: nothing the pin did; tried again next time.
NETWORK_SIGNS = (
    "dns error",
    "failed to lookup address",
    "temporary failure in name resolution",
    "connection refused",
    "connection reset",
    "connection closed",
    "network is unreachable",
    "tcp connect error",
    "error sending request",
    "proxy",
    "timed out",
)


class PinError(TraceError):
    """A pinned package did not install in the copy: the transplant is not testable (`reused`: the
    reason was stored by an earlier try, nothing ran now; `inconclusive`: a timeout or the network,
    not stored, tried again next time; `lasting`: uv could not resolve it, stored)."""

    def __init__(
        self, what: str, todo: str, *, reused: bool = False, inconclusive: bool = False, lasting: bool = False
    ) -> None:
        super().__init__(what, todo)
        self.reused = reused
        self.inconclusive = inconclusive
        self.lasting = lasting


@dataclass(frozen=True)
class PatchedResult:
    """One patched run's record, and whether it was stored from before (no run now)."""

    record: RunRecord
    reused: bool


def patch_key(spec: EnvSpec, lock_sha256: str, scenario_sha256: str, probe: str, change: object) -> str:
    """The stored key of a patched run: the environment, its lock, the scenario, the probe and
    the change (patched files' texts, or pins and their hashes), hashed."""
    payload = json.dumps([spec.key, lock_sha256, scenario_sha256, probe, change], sort_keys=True)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def checked_pins(pins: Sequence[Pin]) -> list[Pin]:
    """The pins as uv gets them (canonical name, normalised version, their sha256 hashes); a
    lock line that is no single exact version of a named package, or has no hash, raises PinError
    (not testable, nothing run)."""
    checked: list[Pin] = []
    for pin in pins:
        shown = one_line(f"{pin.name}=={pin.version}", 120)
        try:
            name = canonicalize_name(pin.name, validate=True)
            version = Version(pin.version)
        except (InvalidName, InvalidVersion) as exc:
            raise PinError(
                f"The lock pins {shown}, which is not one exact version of a package ({one_line(exc, 160)}).",
                "the lock is not as tfbisect writes it: relock that version (--force); the other transplants still run.",
            ) from exc
        if (
            pin.version != pin.version.strip()
            or not pin.hashes
            or not all(_SHA256.fullmatch(h) for h in pin.hashes)
        ):
            raise PinError(
                f"The lock has no sha256 hash for {shown}: its wheel cannot be checked.",
                "relock that version (--force) so that its lock carries hashes; the other transplants still run.",
            )
        checked.append(Pin(name, str(version), frozenset(pin.hashes)))
    return sorted(checked, key=lambda p: p.name)


def requirements_text(pins: Sequence[Pin]) -> str:
    """A requirements file of the pins, each with its hashes (`--require-hashes`)."""
    lines = [
        " ".join([f"{p.name}=={p.version}", *(f"--hash=sha256:{h}" for h in sorted(p.hashes))]) for p in pins
    ]
    return "\n".join(lines) + "\n"


def venv_root(prepared: object) -> Path:
    """The venv a prepared environment's python lives in; refused for anything else (an image
    is proven in a layer on it, envs/docker_proof.py)."""
    if isinstance(prepared, Path) and (prepared.parent.parent / "pyvenv.cfg").is_file():
        return prepared.parent.parent
    raise TraceError(
        "This environment cannot be proven in: proof runs need a venv (a hard-linked copy) or a Docker "
        "image (a thin layer on it).",
        "narrow with --backend venv or docker to prove the suspects; their ranking stands without the proof.",
    )


def unstarted(why: str, log_path: Path) -> Exception:
    """A proof run that never started: the machine's fault when its words say so (a full disk, an
    engine gone), else no result at all (the proof says it could not run), never a stored record."""
    fault = machine_fault_in(why, "starting a proof's run")
    if fault is None and "cannot connect to the docker daemon" in why.lower():
        fault = MachineFaultError(f"the Docker engine stopped answering: {one_line(why, 300)}", MACHINE_TODO)
    return fault or TraceError(
        f"A proof's run could not start: {one_line(why, 300)}", f"see {log_path}; narrow again."
    )


@contextmanager
def venv_copy(root: Path, under: Path) -> Iterator[Path]:
    """A hard-linked copy of the venv at `root` (same file system: under the cache), removed after.
    Its folder is named with this process's id, so that a sweep knows whether its owner lives."""
    under.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f"tfbisect-proof-{os.getpid()}-", dir=under))
    try:
        copy = folder / root.name
        done = subprocess.run(
            ["cp", "-al", str(root), str(copy)], capture_output=True, text=True, check=False
        )
        if done.returncode != 0:
            fault = machine_fault_in(done.stderr, f"copying the venv {root} for a proof run")
            if fault is not None:
                raise fault
            raise TraceError(
                f"The venv {root} could not be copied with hard links: {one_line(done.stderr, 300)}",
                "check the free space and that the cache is on one file system, then narrow again.",
            )
        yield copy
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write_patches(copy: Path, patches: Mapping[str, str]) -> None:
    """Each patched file written anew in the copy's site-packages (its link to the cached file
    broken first), and its bytecode removed so that it cannot serve the old code."""
    site = site_packages(copy)
    for path, text in sorted(patches.items()):
        target = (site / path).resolve()
        if not target.is_relative_to(site) or not path.endswith(".py"):
            raise TraceError(f"A patch names {path!r}, outside site-packages.", "report this as a bug.")
        target.unlink(missing_ok=True)
        target.write_text(text, encoding="utf-8")
        for cached in (target.parent / "__pycache__").glob(f"{target.stem}.*.pyc"):
            cached.unlink()


def site_packages(copy: Path) -> Path:
    sites = sorted((copy / "lib").glob("python*/site-packages"))
    if not sites:
        raise TraceError(f"The venv copy {copy} has no site-packages.", "rebuild the venv and narrow again.")
    return sites[0].resolve()


def unshare(path: Path) -> None:
    """`path`, a regular file linked elsewhere too, copied anew in its place (never followed
    through a symbolic link), so that a write into it reaches no other venv."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISREG(info.st_mode) or info.st_nlink < 2:
        return
    fresh = path.with_name(f".{path.name}.tfbisect-unshared")
    shutil.copyfile(path, fresh, follow_symlinks=False)
    fresh.chmod(stat.S_IMODE(info.st_mode))
    fresh.replace(path)


def unshare_replaced(copy: Path, names: Sequence[str]) -> None:
    """The files of the packages about to be replaced (their dist-info RECORD lists them) and the
    copy's scripts, each made the copy's own (`unshare`): uv, copying from a cache on another file
    system, may write into a file in place; the cached venv behind a link must keep its bytes."""
    root = copy.resolve()
    site = site_packages(copy)
    wanted = set(names)
    targets: list[Path] = [p for p in (copy / "bin").iterdir() if not p.is_symlink()]
    for info in site.glob("*.dist-info"):
        if (
            info.is_symlink()
            or canonicalize_name(info.name.removesuffix(".dist-info").rsplit("-", 1)[0]) not in wanted
        ):
            continue
        targets.extend(p for p in info.iterdir() if not p.is_symlink())
        raw, _ = read_result(info, "RECORD")
        rows = csv.reader(io.StringIO((raw or b"").decode("utf-8", "replace")))
        for count, row in enumerate(rows):
            if count >= RECORD_LINES_MAX or not row:
                continue
            try:  # hostile: a path through a link that ends outside, a loop of links
                target = (site / row[0]).resolve()
            except (OSError, RuntimeError, ValueError):
                continue
            if target.is_relative_to(root):
                targets.append(target)
    for target in targets:
        unshare(target)


def other_file_system(copy: Path) -> bool:
    """Whether uv's cache lies on another file system than the copy (uv copies then, no links)."""
    try:
        return copy.stat().st_dev != uv_cache_dir().stat().st_dev
    except OSError:
        return True


def install_failure(pins: Sequence[Pin], tail: str, exit_code: int | None, log_path: Path) -> Exception:
    """What a failed install of `pins` was: a machine fault (raised as such: no verdict), a timeout
    or the network (inconclusive, tried again), a pin uv cannot resolve (stored), or else."""
    shown = one_line(" ".join(f"{p.name}=={p.version}" for p in pins), 200)
    fault = machine_fault_in(tail, f"installing {shown} into a proof's copy")
    if fault is not None:
        return fault
    lines = [line.strip() for line in tail.strip().splitlines() if line.strip()]
    reason = one_line(
        next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "(no output)"), 300
    )
    lowered = tail.lower()
    if exit_code is None or exit_code < 0:
        return PinError(
            f"{shown} did not install: timed out after {INSTALL_TIMEOUT_S} s or killed (not stored: tried again next time).",
            f"see {log_path}; check the network and the index, then narrow again.",
            inconclusive=True,
        )
    if any(sign in lowered for sign in NETWORK_SIGNS):
        return PinError(
            f"{shown} did not install: the network failed ({reason}); not stored: tried again next time.",
            f"see {log_path}; check the network, the proxy and the index, then narrow again.",
            inconclusive=True,
        )
    lasting = any(sign in lowered for sign in RESOLUTION_SIGNS)
    return PinError(
        f"{shown} did not install: {reason}",
        f"see {log_path}; the other transplants and the code reverts still run.",
        lasting=lasting,
    )


def install_pins(copy: Path, pins: Sequence[Pin], log_path: Path) -> None:
    """Packages pinned in the copy, without their dependencies, each wheel checked against its
    lock hashes, as the venv backend installs (uv, tfbisect's uv cache and its index); a pin that
    does not install raises PinError (or the machine's fault: MachineFaultError).

    `--link-mode hardlink`: uv links each new file from its cache, and where a file is already there
    (a link shared with the cached venv) it links beside it and renames over it, so nothing is ever
    written through a link, into the cached venv or uv's cache.  TMPDIR is the copy's folder."""
    checked = checked_pins(pins)
    if other_file_system(copy):
        unshare_replaced(copy, [p.name for p in checked])
    requirements = copy.parent / "pins.txt"
    requirements.write_text(requirements_text(checked), encoding="utf-8")
    command = [
        uv_binary(),
        "pip",
        "install",
        "--no-deps",
        "--require-hashes",
        "--link-mode",
        "hardlink",
        "--python",
        str(copy / "bin" / "python"),
        "-r",
        str(requirements),
    ]
    env = dict(
        os.environ, UV_PYTHON_DOWNLOADS="never", UV_CACHE_DIR=str(uv_cache_dir()), TMPDIR=str(copy.parent)
    )
    finished = run_logged(command, log_path=log_path, timeout=INSTALL_TIMEOUT_S, env=env)
    if finished.exit_code != 0:
        tail = f"{finished.log_tail}\n{finished.log_error or ''}"
        raise install_failure(checked, tail, finished.exit_code, log_path)


class PatchedRuns:
    """The runner's patched and transplanted runs, stored under the reports' results."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def store_path(self, scenario: Scenario, key: str) -> Path:
        folder = self.runner.settings.reports_dir / "results" / STORE_FOLDER / scenario.slug
        return folder / f"{key}{RECORD_SUFFIX}"

    def run(
        self,
        spec: EnvSpec,
        scenario: Scenario,
        probe: str,
        patches: Mapping[str, str] | None = None,
        pins: Sequence[Pin] = (),
    ) -> PatchedResult:
        """The probe alone in a copy of the spec's venv with `patches` (installed path -> text)
        written, or `pins` (each checked against its hashes) installed; stored, or run now."""
        interrupt.check()
        lock, prepared = self.runner.prepare(spec, scenario)
        texts = dict(patches or {})
        pinned = {pin.name: pin.version for pin in pins}
        change = {"patches": texts, "pins": pinned, "hashes": {pin.name: sorted(pin.hashes) for pin in pins}}
        key = patch_key(spec, lock.sha256, scenario.sha256, probe, change)
        stored = None if self.runner.settings.force else self.stored(scenario, key)
        if stored is not None:
            return PatchedResult(stored, reused=True)
        failed = None if self.runner.settings.force or not pins else self.not_installed(scenario, key)
        if failed is not None:
            raise PinError(failed, "it was tried before: --force tries it again.", reused=True)
        # A venv is copied; an image gets a layer (its backend asked only then); else refused.
        target = (
            None
            if isinstance(prepared, Path)
            else self.image_target(spec, prepared, lock, self.runner.log_dir(scenario))
        )
        root = venv_root(prepared) if target is None else None
        log_path = self.runner.log_dir(scenario) / f"{spec.key}.proof-{key[:12]}.{stamp()}-{os.getpid()}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        copies = self.runner.settings.cache_dir / COPIES_FOLDER
        sweep_proof_copies(copies)
        install_log = log_path.with_suffix(".install.log")
        with contextlib.ExitStack() as stack:
            if target is not None:
                ready: object = stack.enter_context(
                    self.layered(*target, texts, pins, (scenario, key), install_log)
                )
                where: dict[str, object] = {
                    "proof_base_image": target[1].tag,
                    "proof_base_image_id": target[1].image_id,
                }
            else:
                assert root is not None and isinstance(prepared, Path)
                copy = stack.enter_context(venv_copy(root, copies))
                self.set_up(copy, texts, pins, (scenario, key), install_log)
                ready, where = copy / prepared.relative_to(root), {}
            started = now_iso()
            done = launch_and_wait(
                self.runner.environment(spec.backend),
                spec,
                scenario,
                ready,
                log_path,
                f"running {probe} alone, {'with ' + ', '.join(sorted(pinned)) + ' pinned' if pins else 'patched'}",
                self.runner.waiting,
                Traced(None, (), (probe,)),
            )
        if done.ended.unstarted is not None:
            raise unstarted(done.ended.unstarted, log_path)
        cell = Cell(spec, scenario, started, self.runner.settings.timeout)
        extra: dict[str, object] = {"proof_key": key, "patched": sorted(texts), "pins": pinned, **where}
        record = record_of(cell, done, lock, extra)
        self.keep(self.store_path(scenario, key), record.to_dict())
        return PatchedResult(record, reused=False)

    def image_target(
        self, spec: EnvSpec, prepared: object, lock: Lock, log_dir: Path
    ) -> tuple[DockerBackend, Image] | None:
        """The Docker backend and the image a proof's layer goes on: a release that runs from a
        site volume gets its image now (a layer cannot patch under a mounted volume)."""
        target = docker_proof.layer_target(self.runner.environment(spec.backend), prepared)
        if target is not None and target[1].volume is not None:
            backend = target[0]
            return backend, backend.ensure_image(spec, lock, log_dir)
        return target

    @contextmanager
    def layered(
        self,
        backend: DockerBackend,
        image: Image,
        texts: Mapping[str, str],
        pins: Sequence[Pin],
        key: tuple[Scenario, str],
        log_path: Path,
    ) -> Iterator[Image]:
        """The cached image with the patches, or the pins, in a thin layer on it (see
        envs/docker_proof.py), removed afterwards; a pin that does not install is PinError (stored
        when uv's words, here pip's, say it cannot be resolved), the machine's failure a fault."""
        checked = checked_pins(pins) if pins else []
        layer = docker_proof.Layer(dict(texts), tuple(checked), requirements_text(checked) if checked else "")
        copies = self.runner.settings.cache_dir / COPIES_FOLDER
        try:
            copies.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=f"tfbisect-proof-{os.getpid()}-", dir=copies))
        except OSError as exc:
            raise as_machine_fault(exc) from exc
        try:
            with docker_proof.proof_image(backend, image, layer, folder, log_path) as layered:
                yield layered
        except docker_proof.LayerError as exc:
            if not checked:
                raise TraceError(exc.what, exc.todo) from exc
            failure = install_failure(checked, exc.tail, exc.status, log_path)
            if isinstance(failure, PinError) and failure.lasting:
                self.keep_not_installed(*key, failure.what)
            raise failure from exc
        except OSError as exc:
            raise as_machine_fault(exc) from exc
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def set_up(
        self,
        copy: Path,
        texts: Mapping[str, str],
        pins: Sequence[Pin],
        key: tuple[Scenario, str],
        log_path: Path,
    ) -> None:
        """The copy patched, or pinned (a pin uv cannot resolve stored); an OSError here (a full
        disk) is the machine's fault, never a verdict."""
        try:
            write_patches(copy, texts)
            if pins:
                install_pins(copy, pins, log_path)
        except PinError as exc:
            if exc.lasting:
                self.keep_not_installed(*key, exc.what)
            raise
        except OSError as exc:
            raise as_machine_fault(exc) from exc

    def keep(self, path: Path, document: dict[str, object]) -> None:
        """A record stored; where it cannot be (a full disk), said, never raised over the work done."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json_atomic(path, document)
        except OSError as exc:
            self.runner.progress.say(
                f"warning: a proof run's result could not be stored at {path} ({exc.strerror or exc}); "
                "it counts now, and that run is made again next time: free space there, then narrow again."
            )

    def stored(self, scenario: Scenario, key: str) -> RunRecord | None:
        """The stored record of `key` (hostile input: read bounded, never through a link); None
        when there is none, it is damaged, or it is another key's (then it runs again)."""
        found, _ = read_json_object(self.store_path(scenario, key), RESULT_MAX_BYTES)
        if (
            found is None
            or not isinstance(found.get("extra"), dict)
            or found["extra"].get("proof_key") != key
        ):
            return None
        try:
            return RunRecord.from_dict(found)
        except (ValueError, KeyError, TypeError, AttributeError, RecursionError):
            return None

    def not_installed(self, scenario: Scenario, key: str) -> str | None:
        """Why the pins of `key` cannot be resolved, as an earlier try stored it (one printable
        line); None: not tried, or the store is damaged or another key's."""
        found, _ = read_json_object(self.store_path(scenario, key).with_suffix(UNINSTALLABLE), 100_000)
        if found is None or found.get("key") != key:
            return None
        reason = found.get("not_installed")
        return one_line(reason, 400) if isinstance(reason, str) else None

    def keep_not_installed(self, scenario: Scenario, key: str, reason: str) -> None:
        path = self.store_path(scenario, key).with_suffix(UNINSTALLABLE)
        self.keep(path, {"key": key, "not_installed": reason, "at": now_iso()})
