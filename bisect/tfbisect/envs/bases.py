"""Base images, one per Python: official `python:X.Y-slim` when a registry answers, else a
Debian base built here (mmdebstrap where installed, else debootstrap) and `docker import`ed
(cached), or one the user names.

A Debian base is built as a child run of `process.run_logged`, like an install: a stop signal
or a halted prefetch (`process.kill_all`) kills it, and as root it runs in a mount namespace
of its own (`unshare`), so the /proc, /sys and /dev mounts of its chroot go with it."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tfbisect.core import priority
from tfbisect.core.errors import BackendUnavailableError, DockerError
from tfbisect.core.fsio import file_lock, lock_held
from tfbisect.envs.docker_engine import Engine
from tfbisect.platform.process import Finished, run_logged

# Debian suites and the Python 3 each ships: what can be built without a registry.
SUITES = {"3.9": "bullseye", "3.11": "bookworm", "3.13": "trixie"}
MIRROR = os.environ.get("TFBISECT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = "python3,python3-venv,ca-certificates"
CHANGES = ("ENV LANG=C.UTF-8", 'CMD ["python3"]')
BUILD_TIMEOUT_S = 1800  # a slow mirror; a build takes 20-75 s here
EATMYDATA_HOOK = Path("/usr/share/mmdebstrap/hooks/eatmydata")
# Nothing an image needs: mmdebstrap leaves these out as dpkg unpacks (a smaller, faster import).
EXCLUDED = ("/usr/share/man/*", "/usr/share/doc/*", "/usr/share/locale/*")


@dataclass(frozen=True)
class Base:
    ref: str  # what the Dockerfile's FROM names
    python: str
    source: str  # "official", "debootstrap" (Debian built here, by either tool: records say so) or "user"
    image_id: str


class BaseImages:
    def __init__(self, engine: Engine, cache_dir: Path) -> None:
        self.engine = engine
        self.cache_dir = cache_dir
        self._registry_ok: bool | None = None
        # The bases being built here on behalf of work ahead, by suite: a run that comes to
        # wait for one hurries it (the build would go on at the work ahead's low priority).
        self._builders: dict[str, priority.Urgency] = {}

    def get(self, python: str, user_image: str | None = None) -> Base:
        if user_image:
            return self._user(user_image)
        official = f"python:{python}-slim"
        if self.engine.image_id(official) or self._pull(official):
            return Base(official, python, "official", self.engine.image_id(official) or "")
        suite = SUITES.get(python)
        if suite is None:
            raise BackendUnavailableError(
                f"No base image for Python {python}: no registry answers, and Debian ships Python "
                + ", ".join(f"{p} ({s})" for p, s in SUITES.items())
                + ".",
                "pick a TF version with wheels for one of those, pin --python to one of them, "
                "name an image of your own with --base-image, or use --backend venv.",
            )
        return self._debian(suite, python)

    def _pull(self, ref: str) -> bool:
        if self._registry_ok is False:
            return False
        try:
            self.engine.pull(ref, timeout=600)
            self._registry_ok = True
            return True
        except DockerError:
            if self._registry_ok is None:
                self.engine.progress.say(
                    "no container registry answers; using Debian base images built here "
                    f"with {builder() or 'mmdebstrap or debootstrap'}"
                )
            self._registry_ok = False
            return False

    def _debian(self, suite: str, python: str) -> Base:
        ref, lock = f"tfbisect-base:{suite}", self.cache_dir / f"base-{suite}.lock"
        # One builder of a base at a time, across threads (--jobs) and processes.
        with file_lock(lock, on_wait=lambda: self._waiting(suite, lock)):
            image_id = self.engine.image_id(ref)
            if image_id is None:
                if priority.speculative():
                    # Half a minute or more of the CPUs and the disk for one outcome of a round:
                    # the run that needs it builds it, as a run's own preparation.
                    raise BackendUnavailableError(
                        f"The Debian {suite} base is not built yet, and a preparation ahead on a bet "
                        "does not build one (about 30 s).",
                        "nothing to do: a run that needs it builds it.",
                    )
                self._build_here(suite, ref)
                image_id = self.engine.image_id(ref)
        if image_id is None:
            raise DockerError(f"The base image {ref} is missing right after it was built.", "run again.")
        return Base(ref, python, "debootstrap", image_id)

    def _waiting(self, suite: str, lock: Path) -> None:
        """Another builds the base (half a minute): a run's own preparation, or one a run waits
        for, hurries a build here that work ahead started; work ahead is parked (its worker
        does something else meanwhile) until the lock is free."""
        waiter = priority.current()
        builder = self._builders.get(suite)
        if builder is not None and (waiter is None or waiter.urgent):
            builder.hurry()
        priority.defer_ahead(f"the Debian {suite} base", lambda: not lock_held(lock))

    def _build_here(self, suite: str, ref: str) -> None:
        """`_build`, under an urgency of its own where work ahead builds it: dropped with that
        work's (unless a run waits for it), hurried with it or by a run that comes to wait."""
        parent = priority.current()
        if parent is None:
            self._build(suite, ref)
            return
        builder = self._builders[suite] = priority.Urgency(sure=True)
        forget = (parent.on_hurry(builder.hurry), parent.on_drop(builder.drop))
        try:
            with priority.ahead(builder):
                self._build(suite, ref)
        finally:
            for listener in forget:
                listener()
            self._builders.pop(suite, None)

    def _build(self, suite: str, ref: str) -> None:
        """The Debian base built as a root file system tarball and `docker import`ed as REF; the
        work folder and the tarball are removed whatever happens (a failure, a kill)."""
        tool = builder()
        if tool is None:
            raise BackendUnavailableError(
                f"Building the Debian {suite} base needs mmdebstrap or debootstrap, and neither is "
                "installed (and no registry answers for the official python images).",
                "install one (`apt-get install mmdebstrap`), name a base with --base-image, or use --backend venv.",
            )
        work = self.cache_dir / "rootfs"
        scratch, tarball, log = work / suite, work / f"{suite}.tar", work / f"{suite}.log"
        _remove(scratch, tarball)  # what a killed driver's build left
        scratch.mkdir(parents=True)  # mmdebstrap's TMPDIR, debootstrap's target
        with (
            self.engine.progress.step(f"base {suite}", f"{tool} {suite} (once per machine; log: {log})"),
            priority.long_build(),
        ):
            try:
                finished = run_logged(
                    build_command(tool, suite, scratch, tarball),
                    log_path=log,
                    timeout=BUILD_TIMEOUT_S,
                    env={**os.environ, "TMPDIR": str(scratch)} if tool == "mmdebstrap" else None,
                )
                if finished.exit_code != 0:
                    how = _how(finished)
                    raise DockerError(
                        f"{tool} of Debian {suite} {how}; the end of {log}:\n"
                        + "\n".join(finished.log_tail.splitlines()[-10:]),
                        "check that the Debian archive is reachable (or set TFBISECT_DEBIAN_MIRROR), then run again.",
                    )
                if tool == "debootstrap":
                    _pack(suite, scratch, tarball)
                self.engine.import_rootfs(tarball, ref, CHANGES)
            finally:
                _remove(scratch, tarball)

    def _user(self, ref: str) -> Base:
        found = self.engine.image_id(ref)
        if found is None and not self._pull(ref):
            raise BackendUnavailableError(
                f"The base image {ref!r} is not here and cannot be pulled.",
                "build or load it first (`docker load`).",
            )
        out = self.engine.run_output(
            ref, ["python3", "-c", "import sys, venv; print('%d.%d' % sys.version_info[:2])"]
        ).strip()
        if not out or "." not in out:
            raise BackendUnavailableError(
                f"The image {ref!r} has no usable python3 (with the venv module).",
                "name an image with Python 3 and its venv module, e.g. one built FROM python:3.11-slim.",
            )
        return Base(ref, out.splitlines()[-1], "user", self.engine.image_id(ref) or "")


def builder() -> str | None:
    """What builds a Debian root here: mmdebstrap (in about half debootstrap's time: one apt
    run, and dpkg without fsync under eatmydata), else debootstrap, else None."""
    return next((tool for tool in ("mmdebstrap", "debootstrap") if shutil.which(tool)), None)


def build_command(tool: str, suite: str, scratch: Path, tarball: Path) -> list[str]:
    """The command that builds Debian SUITE: mmdebstrap writes TARBALL itself (its chroot in
    TMPDIR, set to SCRATCH); debootstrap builds the root in SCRATCH, packed afterwards."""
    if tool == "mmdebstrap":
        hooks = (
            [f"--hook-dir={EATMYDATA_HOOK}"] if shutil.which("eatmydata") and EATMYDATA_HOOK.is_dir() else []
        )
        command = [
            "mmdebstrap",
            "--variant=minbase",
            *hooks,
            *(f"--dpkgopt=path-exclude={pattern}" for pattern in EXCLUDED),
            f"--include={PACKAGES}",
            suite,
            str(tarball),
            MIRROR,
        ]
    else:
        command = ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", suite, str(scratch), MIRROR]
    # As root the chroot's mounts are real ones, which a killed build would leave behind: in a
    # mount namespace of its own they end with it.  (Not root: mmdebstrap unshares by itself.)
    if os.geteuid() == 0 and shutil.which("unshare"):
        return ["unshare", "--mount", "--propagation", "private", *command]
    return command


def _pack(suite: str, root: Path, tarball: Path) -> None:
    """debootstrap's root packed as TARBALL, without the package caches (no business in an image)."""
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (root / junk).glob("*"):
            if entry.is_file():
                entry.unlink()
    packed = subprocess.run(
        ["tar", "-C", str(root), "-cf", str(tarball), "."], capture_output=True, text=True, check=False
    )
    if packed.returncode != 0:
        raise DockerError(f"Packing the Debian {suite} root failed: {packed.stderr.strip()}", "run again.")


def _how(finished: Finished) -> str:
    if finished.exit_code is None:
        return f"timed out after {BUILD_TIMEOUT_S} s"
    if finished.exit_code < 0:  # a stop, a halted prefetch (process.kill_all)
        return f"was killed (signal {-finished.exit_code})"
    return f"failed (exit code {finished.exit_code})"


def _remove(folder: Path, tarball: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
    tarball.unlink(missing_ok=True)
