"""The machine's wheel cache: every wheel a lock needs, downloaded once, whatever number of
images and venvs use it.  Images install from it over loopback during the build, so no wheel
is ever copied into an image layer, and pip in the build needs no access to the index (or the
proxy's certificates); venvs install from it offline with uv (`--find-links`).

One per machine, like tfbisect's uv cache and beside it (`cache.wheel_cache_dir()`:
`~/.cache/tfbisect/wheels/py<python>/<wheel file>`), whatever `--cache` folder a command has:
uv keys a `--find-links` wheel by its path, not its content, so the same TensorFlow wheel at two
paths is unpacked into uv's cache twice (a wheel cache per cache folder, one per test, grew the
uv cache from 28 to 75 GB in one CI run).  With one path per wheel file on the machine, uv
unpacks each wheel once and every venv of every cache folder, test or bench side hard-links
that copy.  Processes share it safely: a Python's folder is changed only under its file lock
(`.lock`, the same one `tfbisect cache prune` and the budget take to evict a wheel), files arrive
by rename from a `.fetch-` folder beside them, and a wheel evicted by another process between
this one's `ensure` and its install fails that install, which checks, fetches again and retries.

Nothing unverified is kept: a wheel enters the cache only after its sha256 matched the lock's
(a wheel pip built from a hash-checked sdist has no lock hash; its archive's CRCs are checked
instead, and its own sha256 is recorded in `built.json` for the image builds, which install
with `--require-hashes`), and a kept wheel is checked again when its file changed since (size,
inode), or when a build that used it failed: a bad one is evicted and fetched once more.  A wheel cut short by
a full disk was once kept and broke every later build of its version.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
import zipfile
from collections.abc import Collection, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

from tfbisect.core import jsonread, local_http
from tfbisect.core.errors import EnvironmentBuildError, MachineFaultError, machine_fault_in
from tfbisect.core.fsio import file_lock, write_text_atomic
from tfbisect.core.progress import Progress
from tfbisect.core.timing import SPENT, Phase
from tfbisect.envs import wheelfetch
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


def unpinned(lock_text: str) -> list[str]:
    """The lock's requirements that are no `name==version` pin (a direct URL, `name @ file:…`):
    the wheel cache cannot hold them."""
    found = []
    for raw in lock_text.splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", "--", "\\")) and raw[:1] not in " \t" and not _PIN.match(line):
            found.append(line)
    return found


def requirement_text(wanted: Iterable[Pin], *, hashes: bool = False) -> str:
    """Pins as a requirement file for an install from this cache alone (whose files were checked
    as they entered it); with `hashes`, each pin's `--hash` options too (an image build checks
    them again with `--require-hashes`: what it installs is what the lock names, whatever served it)."""
    return "".join(
        f"{p.name}=={p.version}" + "".join(f" --hash=sha256:{h}" for h in sorted(p.hashes) if hashes) + "\n"
        for p in wanted
    )


def sha256_of(path: Path) -> str:
    """The file's sha256, read in chunks (a CUDA wheel is several GB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def wheel_problem(path: Path, pin: Pin) -> str | None:
    """Why `path` cannot be kept as `pin`'s wheel; None when it can."""
    size = 0
    try:
        size = path.stat().st_size
        if sha256_of(path) in pin.hashes:
            return None
        # Not the lock's file: only a wheel pip built here from the lock's (hash-checked) sdist
        # may differ, and then every member's CRC must hold.
        with zipfile.ZipFile(path) as archive:
            damaged = archive.testzip()
            has_record = any(name.endswith(".dist-info/RECORD") for name in archive.namelist())
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as exc:
        return f"{path.name} ({size} bytes) is not a complete wheel ({exc}; cut short by a full disk?)"
    if damaged is not None:
        return f"{path.name} has a damaged member {damaged!r} ({size} bytes)"
    if not has_record:
        return f"{path.name} matches none of the lock's sha256 and has no RECORD"
    return None


def _stamp(path: Path) -> str:
    """What changes when a kept file is replaced or cut: size and inode (not its mtime, which
    marks its last use)."""
    found = path.stat()
    return f"{found.st_size}:{found.st_ino}"


class Wheelhouse:
    """`<root>/py<python>/`: wheels per target Python, and an index of what is in them (the root
    is `cache.wheel_cache_dir()` for the backends, a test's own folder for pure logic)."""

    def __init__(self, root: Path, progress: Progress) -> None:
        self.root = root
        self.progress = progress
        self.fetched_bytes = 0  # bytes this process brought from the index (for the benchmark)

    def folder(self, python: str) -> Path:
        return self.root / f"py{python}"

    def _index(self, python: str) -> dict[str, str]:
        path = self.folder(python) / "index.json"
        return dict(jsonread.read(path, max_bytes=None)) if path.exists() else {}

    def _verified(self, python: str) -> dict[str, str]:
        path = self.folder(python) / "verified.json"
        try:
            return dict(jsonread.read(path, max_bytes=None)) if path.exists() else {}
        except (ValueError, TypeError):
            return {}  # unreadable: every wheel is checked again, nothing is trusted

    def _save(
        self,
        folder: Path,
        index: dict[str, str],
        verified: dict[str, str],
        built: dict[str, str] | None = None,
    ) -> None:
        write_text_atomic(folder / "index.json", json.dumps(index, indent=1, sort_keys=True))
        kept = {name: stamp for name, stamp in verified.items() if name in index.values()}
        write_text_atomic(folder / "verified.json", json.dumps(kept, indent=1, sort_keys=True))
        if built is None:
            built = _built(folder)
        built = {name: sha for name, sha in built.items() if name in index.values()}
        write_text_atomic(folder / "built.json", json.dumps(built, indent=1, sort_keys=True))

    def with_built_hashes(self, text: str, python: str) -> str:
        """A requirement file with hashes (`requirement_text(..., hashes=True)`) with the sha256 of
        each wheel built here added to its pin's: the files an image build will be served."""
        index, built = self._index(python), _built(self.folder(python))
        out = []
        for pin in pins(text):
            name = index.get(pin.key, "")
            extra = {built[name]} if name in built else set()
            out.append(Pin(pin.name, pin.version, pin.hashes | extra))
        return requirement_text(out, hashes=True)

    def _evict(self, folder: Path, index: dict[str, str], pin: Pin, why: str) -> None:
        self.progress.say(f"wheel cache: {why}; removed, it is fetched again")
        (folder / index.pop(pin.key)).unlink(missing_ok=True)

    def _check_kept(
        self, wanted: list[Pin], folder: Path, index: dict[str, str], verified: dict[str, str], *, full: bool
    ) -> list[str]:
        """Check the kept wheels of `wanted` (all of them when `full`, else those changed since
        their check); evict the bad ones.  Returns the keys evicted."""
        evicted = []
        for pin in wanted:
            name = index.get(pin.key)
            if name is None:
                continue
            path = folder / name
            if not full and path.is_file() and verified.get(name) == _stamp(path):
                continue
            problem = wheel_problem(path, pin) if path.is_file() else f"{name} is missing"
            if problem is None:
                verified[name] = _stamp(path)
            else:
                self._evict(folder, index, pin, problem)
                evicted.append(pin.key)
        return evicted

    def recheck(self, wanted: list[Pin], python: str) -> list[str]:
        """After a build or install that used these wheels failed: check every one in full and
        evict the bad ones, so that the next `ensure` fetches them again.  The keys evicted."""
        folder = self.folder(python)
        if not folder.is_dir():
            return []
        with file_lock(folder / ".lock"):
            index, verified = self._index(python), self._verified(python)
            evicted = self._check_kept(wanted, folder, index, verified, full=True)
            self._save(folder, index, verified)
        return evicted

    def stage_tool(self, name: str, binary: Path | None) -> str:
        """Serve `binary` beside the wheels as `tools/<name>-<sha256>`; its sha256, which the
        build checks before running it ("" when there is none)."""
        if binary is None or not binary.is_file():
            return ""
        digest = _TOOL_SHAS.get(binary) or sha256_of(binary)
        _TOOL_SHAS[binary] = digest
        served = self.root / "tools" / f"{name}-{digest}"
        if not served.is_file() or _stamp(served) != _TOOL_STAMPS.get(served):
            served.parent.mkdir(parents=True, exist_ok=True)
            with file_lock(served.parent / ".lock"):
                if not served.is_file() or sha256_of(served) != digest:
                    partial = served.with_name(f".{served.name}.{os.getpid()}")
                    shutil.copyfile(binary, partial)
                    partial.replace(served)
            _TOOL_STAMPS[served] = _stamp(served)
        return digest

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
            index, verified = self._index(python), self._verified(python)
            if self._check_kept(wanted, folder, index, verified, full=False):
                self._save(folder, index, verified)
            missing = [p for p in wanted if p.key not in index]
            if missing:
                self._fetch(missing, python, folder, (index, verified), log_path)
            found = [folder / index[p.key] for p in wanted]
        for path in found:  # the last use, for `tfbisect cache` and the budget
            os.utime(path)
        return found

    def _fetch(
        self,
        missing: list[Pin],
        python: str,
        folder: Path,
        kept: tuple[dict[str, str], dict[str, str]],
        log_path: Path,
    ) -> None:
        """Fetch the missing wheels: the lock's exact files in parallel where the index and the
        Python allow it (wheelfetch), `pip wheel` for the rest (sdists, odd indexes)."""
        index = kept[0]
        interpreter = find_python(python)
        if interpreter is None:
            raise EnvironmentBuildError(
                f"Fetching wheels for Python {python} needs that Python on this machine (to build the few "
                "dependencies that only ship as source).",
                f"install it (`pyenv install {python}`), or pick a base with a Python this machine has.",
            )
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with (
            tempfile.TemporaryDirectory(dir=self.root, prefix=".fetch-") as tmp,
            self.progress.step(f"wheels py{python}", f"fetching {len(missing)} wheels (log: {log_path})"),
            SPENT.measure(Phase.DOWNLOAD),
        ):
            out = Path(tmp) / "out"
            out.mkdir()
            checked = self._fetch_direct(missing, interpreter.path, out, log_path)
            self._keep(out, missing, folder, kept, checked)
            rest = [p for p in missing if p.key not in index]
            if not rest:
                return
            done, before = self._pip_wheel(rest, interpreter.path, Path(tmp), log_path)
            # Keep every wheel that arrived whole, even when another failed: nothing good is
            # fetched twice, nothing cut short is kept.
            self._keep(out, rest, folder, kept, set())
        lost = [p.key for p in missing if p.key not in index]
        if done.returncode != 0 or lost:
            _raise_machine_fault(log_path, before, python)
            raise EnvironmentBuildError(
                f"Fetching wheels for Python {python} failed ({', '.join(lost) or 'see the log'}); "
                f"the end of {log_path}:\n"
                + "\n".join(log_path.read_text(errors="replace").splitlines()[-12:]),
                "check the network (or fill the wheel cache on a machine that has one), then run again.",
            )

    def _fetch_direct(self, missing: list[Pin], python: Path, out: Path, log_path: Path) -> set[str]:
        """The fast path (see wheelfetch); the names of the files it fetched and checked."""
        if os.environ.get("PIP_NO_INDEX"):
            return set()  # pip is told to use no index: its find-links alone (pip wheel) serve
        tags = _tags_of(python)
        if tags is None:
            return set()
        notes: list[str] = []
        fetched = wheelfetch.fetch(missing, tags, out, notes)
        with open(log_path, "a") as log:
            log.write(
                f"fetched {len(fetched)} of {len(missing)} wheels from {wheelfetch.index_url()} directly\n"
            )
            log.writelines(f"  {note}\n" for note in notes)
        return {found.path.name for found in fetched}

    def _pip_wheel(
        self, rest: list[Pin], python: Path, tmp: Path, log_path: Path
    ) -> tuple[subprocess.CompletedProcess[bytes], int]:
        """`pip wheel` for the pins the fast path left: the process, and where its log began."""
        requirements = tmp / "requirements.txt"
        lines = [
            f"{p.name}=={p.version} " + " ".join(f"--hash=sha256:{h}" for h in sorted(p.hashes)) for p in rest
        ]
        requirements.write_text("\n".join(lines) + "\n")
        # `pip wheel` keeps binary wheels as downloaded (hash-checked) and builds the sdist-only
        # ones with the same Python the image will have, in an isolated PEP 517 environment.
        command = [
            str(python), "-m", "pip", "wheel", "--no-deps", "--require-hashes", "--use-pep517",
            "--disable-pip-version-check", "-r", str(requirements), "-w", str(tmp / "out"),
        ]  # fmt: skip
        with open(log_path, "a") as log:
            before = log.tell()
            done = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, check=False)
        return done, before

    def _keep(
        self,
        out: Path,
        missing: list[Pin],
        folder: Path,
        kept: tuple[dict[str, str], dict[str, str]],
        checked: Collection[str] = (),
    ) -> None:
        """Move the wheels that arrived whole into the cache; `checked` names those whose
        sha256 was checked against the lock's as they streamed (not read again)."""
        index, verified = kept
        built = _built(folder)
        arrived = {}
        for wheel in out.glob("*.whl"):
            name, version = wheel.name.split("-")[:2]
            arrived[f"{canonicalize_name(name)}=={version}"] = wheel
        for pin in missing:
            for key, wheel in arrived.items():
                if _same(key, pin.key):
                    self.fetched_bytes += wheel.stat().st_size
                    digest = "" if wheel.name in checked else sha256_of(wheel)
                    problem = None if not digest or digest in pin.hashes else wheel_problem(wheel, pin)
                    if problem is not None:
                        self.progress.say(f"wheel cache: {problem}; not kept")
                        break
                    shutil.move(str(wheel), folder / wheel.name)
                    index[pin.key] = wheel.name
                    verified[wheel.name] = _stamp(folder / wheel.name)
                    if digest and digest not in pin.hashes:  # built here from the lock's sdist
                        built[wheel.name] = digest
                    else:
                        built.pop(wheel.name, None)
                    break
        self._save(folder, index, verified, built)


_TOOL_SHAS: dict[Path, str] = {}  # a binary's sha256, once per process
_TOOL_STAMPS: dict[Path, str] = {}  # a served copy checked by this process, as it was then
_TAGS: dict[Path, list[str] | None] = {}
_TAGS_LOCK = threading.Lock()


def _tags_of(python: Path) -> list[str] | None:
    """The wheel tags `python` accepts (asked once per interpreter)."""
    with _TAGS_LOCK:
        if python not in _TAGS:
            _TAGS[python] = wheelfetch.target_tags(python)
        return _TAGS[python]


def _built(folder: Path) -> dict[str, str]:
    """The sha256 of each kept wheel built here from a checked sdist, by file name (the lock has
    no hash of it: an image build's `--require-hashes` needs this one)."""
    path = folder / "built.json"
    try:
        found = jsonread.read(path, max_bytes=1 << 20) if path.exists() else {}
    except (ValueError, TypeError, OSError):
        return {}  # unreadable: such a wheel fails the build's hash check, is checked and fetched again
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


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
    with local_http.serve(partial(_Quiet, directory=str(folder)), PORT) as url:
        yield url
