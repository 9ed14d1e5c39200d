"""Base images, one per Python: official `python:X.Y-slim` when a registry answers, else a
Debian base built here with debootstrap and `docker import` (cached), or one the user names."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from tfbisect.core.errors import BackendUnavailableError, DockerError
from tfbisect.core.fsio import file_lock
from tfbisect.envs.docker_engine import Engine

# Debian suites and the Python 3 each ships: what can be built without a registry.
SUITES = {"3.9": "bullseye", "3.11": "bookworm", "3.13": "trixie"}
MIRROR = os.environ.get("TFBISECT_DEBIAN_MIRROR", "http://deb.debian.org/debian")
PACKAGES = "python3,python3-venv,ca-certificates"


@dataclass(frozen=True)
class Base:
    ref: str  # what the Dockerfile's FROM names
    python: str
    source: str  # "official", "debootstrap" or "user"
    image_id: str


class BaseImages:
    def __init__(self, engine: Engine, cache_dir: Path) -> None:
        self.engine = engine
        self.cache_dir = cache_dir
        self._registry_ok: bool | None = None

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
                    "no container registry answers; using Debian base images built here with debootstrap"
                )
            self._registry_ok = False
            return False

    def _debian(self, suite: str, python: str) -> Base:
        ref = f"tfbisect-base:{suite}"
        with self._locked(f"base-{suite}"):
            image_id = self.engine.image_id(ref)
            if image_id is None:
                self._debootstrap(suite, ref)
                image_id = self.engine.image_id(ref)
        if image_id is None:
            raise DockerError(f"The base image {ref} is missing right after it was built.", "run again.")
        return Base(ref, python, "debootstrap", image_id)

    def _debootstrap(self, suite: str, ref: str) -> None:
        if shutil.which("debootstrap") is None:
            raise BackendUnavailableError(
                f"Building the Debian {suite} base needs debootstrap, which is not installed "
                "(and no registry answers for the official python images).",
                "install it (`apt-get install debootstrap`), name a base with --base-image, or use --backend venv.",
            )
        rootfs = self.cache_dir / "rootfs" / suite
        shutil.rmtree(rootfs, ignore_errors=True)
        rootfs.parent.mkdir(parents=True, exist_ok=True)
        log = self.cache_dir / "rootfs" / f"{suite}.log"
        with self.engine.progress.step(
            f"base {suite}", f"debootstrap {suite} (once per machine; log: {log})"
        ):
            with open(log, "w") as handle:
                done = subprocess.run(
                    ["debootstrap", "--variant=minbase", f"--include={PACKAGES}", suite, str(rootfs), MIRROR],
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            if done.returncode != 0:
                shutil.rmtree(rootfs, ignore_errors=True)
                raise DockerError(
                    f"debootstrap of Debian {suite} failed; the end of {log}:\n"
                    + "\n".join(log.read_text(errors="replace").splitlines()[-10:]),
                    "check that the Debian archive is reachable (or set TFBISECT_DEBIAN_MIRROR), then run again.",
                )
            # Package caches have no business in an image.
            for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
                for entry in (rootfs / junk).glob("*"):
                    if entry.is_file():
                        entry.unlink()
            tarball = rootfs.with_suffix(".tar")
            try:
                packed = subprocess.run(
                    ["tar", "-C", str(rootfs), "-cf", str(tarball), "."],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                shutil.rmtree(rootfs, ignore_errors=True)
                if packed.returncode != 0:
                    raise DockerError(
                        f"Packing the Debian {suite} root failed: {packed.stderr.strip()}", "run again."
                    )
                self.engine.import_rootfs(tarball, ref, ["ENV LANG=C.UTF-8", 'CMD ["python3"]'])
            finally:
                shutil.rmtree(rootfs, ignore_errors=True)
                tarball.unlink(missing_ok=True)

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

    def _locked(self, name: str) -> AbstractContextManager[None]:
        """One builder of a base at a time, across threads (--jobs) and processes."""
        return file_lock(self.cache_dir / f"{name}.lock")
