"""The machine's wheel cache: every wheel a lock needs, downloaded once, whatever number of
images use it.  Images install from it over loopback during the build, so no wheel is ever
copied into an image layer, and pip in the build needs no access to the index (or the
proxy's certificates).
"""

from __future__ import annotations

import contextlib
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

from tfbisect.core import jsonread, loopback
from tfbisect.core.errors import EnvironmentBuildError, MachineFaultError, machine_fault_in
from tfbisect.core.fsio import file_lock, write_text_atomic
from tfbisect.core.progress import Progress
from tfbisect.envs.interpreters import find as find_python

_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==(?P<version>[^\s;\\]+)")


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    hashes: frozenset[str]

    @property
    def key(self) -> str:
        return f"{canonicalize_name(self.name)}=={self.version}"

    @property
    def is_nvidia(self) -> bool:
        return canonicalize_name(self.name).startswith("nvidia-")


def pins(lock_text: str) -> list[Pin]:
    found: list[Pin] = []
    name = version = None
    hashes: set[str] = set()
    for raw in lock_text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _PIN.match(line)
        if match:
            if name and version:
                found.append(Pin(name, version, frozenset(hashes)))
            name, version, hashes = match["name"], match["version"], set()
        hashes.update(re.findall(r"--hash=sha256:([0-9a-f]{64})", line))
    if name and version:
        found.append(Pin(name, version, frozenset(hashes)))
    return found


class Wheelhouse:
    """`<cache>/wheels/<python>/`: wheels per target Python, and an index of what is in them."""

    def __init__(self, root: Path, progress: Progress) -> None:
        self.root = root
        self.progress = progress
        self.fetched_bytes = 0  # bytes this process brought from the index (for the benchmark)

    def folder(self, python: str) -> Path:
        return self.root / f"py{python}"

    def _index(self, python: str) -> dict[str, str]:
        path = self.folder(python) / "index.json"
        return dict(jsonread.read(path, max_bytes=None)) if path.exists() else {}

    def cached(self, wanted: list[Pin], python: str) -> list[Path]:
        """The wheel files of these pins that the cache holds now (none is fetched)."""
        folder = self.folder(python)
        index = self._index(python)
        found = [folder / index[p.key] for p in wanted if p.key in index]
        return [path for path in found if path.is_file()]

    def ensure(self, wanted: list[Pin], python: str, log_path: Path) -> list[Path]:
        """The wheel files for these pins, fetching only what is missing."""
        folder = self.folder(python)
        folder.mkdir(parents=True, exist_ok=True)
        with file_lock(folder / ".lock"):
            index = self._index(python)
            missing = [p for p in wanted if p.key not in index or not (folder / index[p.key]).exists()]
            if missing:
                self._fetch(missing, python, folder, index, log_path)
            return [folder / index[p.key] for p in wanted]

    def _fetch(
        self, missing: list[Pin], python: str, folder: Path, index: dict[str, str], log_path: Path
    ) -> None:
        interpreter = find_python(python)
        if interpreter is None:
            raise EnvironmentBuildError(
                f"Fetching wheels for Python {python} needs that Python on this machine (to build the few "
                "dependencies that only ship as source).",
                f"install it (`pyenv install {python}`), or pick a base with a Python this machine has.",
            )
        with tempfile.TemporaryDirectory(dir=self.root, prefix=".fetch-") as tmp:
            requirements = Path(tmp) / "requirements.txt"
            lines = [
                f"{p.name}=={p.version} " + " ".join(f"--hash=sha256:{h}" for h in sorted(p.hashes))
                for p in missing
            ]
            requirements.write_text("\n".join(lines) + "\n")
            out = Path(tmp) / "out"
            # `pip wheel` keeps binary wheels as downloaded (hash-checked) and builds the sdist-only
            # ones with the same Python the image will have, in an isolated PEP 517 environment.
            command = [
                str(interpreter.path), "-m", "pip", "wheel", "--no-deps", "--require-hashes", "--use-pep517",
                "--disable-pip-version-check", "-r", str(requirements), "-w", str(out),
            ]  # fmt: skip
            log_path.parent.mkdir(parents=True, exist_ok=True)
            with self.progress.step(
                f"wheels py{python}", f"fetching {len(missing)} wheels (log: {log_path})"
            ):
                with open(log_path, "a") as log:
                    before = log.tell()
                    done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
                # Keep every wheel that arrived, even when another failed: nothing is fetched twice.
                self._keep(out, missing, folder, index)
            lost = [p.key for p in missing if p.key not in index]
            if done.returncode != 0 or lost:
                _raise_machine_fault(log_path, before, python)
                raise EnvironmentBuildError(
                    f"Fetching wheels for Python {python} failed ({', '.join(lost) or 'see the log'}); "
                    f"the end of {log_path}:\n"
                    + "\n".join(log_path.read_text(errors="replace").splitlines()[-12:]),
                    "check the network (or fill the wheel cache on a machine that has one), then run again.",
                )

    def _keep(self, out: Path, missing: list[Pin], folder: Path, index: dict[str, str]) -> None:
        arrived = {}
        for wheel in out.glob("*.whl"):
            name, version = wheel.name.split("-")[:2]
            arrived[f"{canonicalize_name(name)}=={version}"] = wheel
        for pin in missing:
            for key, wheel in arrived.items():
                if _same(key, pin.key):
                    self.fetched_bytes += wheel.stat().st_size
                    shutil.move(str(wheel), folder / wheel.name)
                    index[pin.key] = wheel.name
                    break
        write_text_atomic(folder / "index.json", json.dumps(index, indent=1, sort_keys=True))


def _raise_machine_fault(log_path: Path, since: int, python: str) -> None:
    """A fetch that failed because the machine did (`pip wheel` out of disk space) is no skip of
    the version: raise MachineFaultError when this fetch's part of the log says so."""
    with contextlib.suppress(OSError), open(log_path, "rb") as log:
        log.seek(max(since, log.seek(0, os.SEEK_END) - (1 << 20)))  # its last MiB is plenty
        fault = machine_fault_in(
            log.read().decode("utf-8", "replace"), f"fetching wheels for Python {python}"
        )
        if fault is not None:
            raise MachineFaultError(f"{fault.what} (see {log_path})", fault.todo)


def _same(wheel_key: str, pin_key: str) -> bool:
    name_a, version_a = wheel_key.split("==")
    name_b, version_b = pin_key.split("==")
    return name_a == name_b and Version(version_a) == Version(version_b)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the stdlib's name
        pass


# A fixed port keeps the build's RUN lines, and so Docker's layer cache keys, the same from
# one build to the next; another tfbisect holding it only costs cache hits.
PORT = int(os.environ.get("TFBISECT_WHEEL_PORT", "38471"))


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve a folder on loopback for `docker build --network host`; yields its URL."""
    with loopback.serve(partial(_Quiet, directory=str(folder)), PORT) as url:
        yield url
