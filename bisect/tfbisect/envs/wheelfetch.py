"""The wheel cache's fast path: the lock's exact files fetched from the index in parallel.

A lock names each file by its sha256, so the file a pin needs is found on the index's JSON
page (PEP 691) by that digest alone, among those whose tags the target Python accepts (in its
own order of preference, as pip would choose).  Each file is fetched on a thread of its own and
hashed as it streams; one whose digest is not the lock's is deleted at once.  What this path
cannot place (an sdist-only pin, an index without JSON pages, a Python whose pip cannot name
its tags, any error) is left to `pip wheel`, the cache's general path: this one only makes the
common case fast (26 wheels, one after another by `pip wheel`, took 28.7 s once).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import subprocess
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import requests
import requests.adapters
from packaging.utils import InvalidWheelFilename, canonicalize_name, parse_wheel_filename

from tfbisect.core import jsonread

THREADS = 8
TIMEOUT = 60.0
JSON_PAGE = "application/vnd.pypi.simple.v1+json"
# The tags of the running interpreter, most preferred first, from pip's own copy of packaging
# (the target Python may have no packaging of its own).
TAGS_CODE = "from pip._vendor.packaging import tags; print('\\n'.join(str(t) for t in tags.sys_tags()))"


class PinLike(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def hashes(self) -> frozenset[str]: ...
    @property
    def key(self) -> str: ...


@dataclass(frozen=True)
class Located:
    key: str  # the pin's key
    url: str
    filename: str
    sha256: str
    size: int


@dataclass(frozen=True)
class Fetched:
    key: str
    path: Path
    sha256: str  # checked against the lock's as it streamed


def index_url() -> str:
    """The index pip would ask (PIP_INDEX_URL, else PyPI's)."""
    return (os.environ.get("PIP_INDEX_URL") or "https://pypi.org/simple").rstrip("/")


def target_tags(python: Path) -> list[str] | None:
    """The wheel tags `python` accepts, most preferred first; None when its pip cannot say."""
    try:
        done = subprocess.run(
            [str(python), "-c", TAGS_CODE], capture_output=True, text=True, timeout=60, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    found = done.stdout.split()
    return found if done.returncode == 0 and found else None


def _session() -> requests.Session:
    """One session for every thread: its pooled, kept-alive connections spare a DNS look-up per
    file (each took 0.6 s here, some 5 s)."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=THREADS)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    # pip's certificate bundle when one is set (a proxy's), else requests' own choice.
    cafile = os.environ.get("PIP_CERT")
    if cafile and Path(cafile).is_file():
        session.verify = cafile
    return session


def _page(index: str, name: str, session: requests.Session) -> list[dict[str, object]]:
    url = f"{index}/{canonicalize_name(name)}/"
    with session.get(url, headers={"Accept": JSON_PAGE}, timeout=TIMEOUT) as answer:
        answer.raise_for_status()
        if JSON_PAGE not in answer.headers.get("Content-Type", ""):
            return []  # an index without JSON pages: pip wheel finds the file instead
        files = jsonread.loads(answer.content).get("files", [])
    return [
        dict(f, url=urllib.parse.urljoin(url, str(f.get("url", "")))) for f in files if isinstance(f, dict)
    ]


def _choose(pin: PinLike, files: list[dict[str, object]], rank: dict[str, int]) -> Located | None:
    """The lock's wheel for this Python: its digest is the lock's, its best tag the most preferred."""
    best: tuple[int, Located] | None = None
    for entry in files:
        filename = str(entry.get("filename", ""))
        hashes = entry.get("hashes")
        sha = str(hashes.get("sha256", "")) if isinstance(hashes, dict) else ""
        if sha not in pin.hashes or not filename.endswith(".whl"):
            continue
        try:
            tags = parse_wheel_filename(filename)[3]
        except InvalidWheelFilename:
            continue
        order = min((rank[str(t)] for t in tags if str(t) in rank), default=None)
        if order is not None and (best is None or order < best[0]):
            size = entry.get("size")
            best = (
                order,
                Located(pin.key, str(entry["url"]), filename, sha, size if isinstance(size, int) else 0),
            )
    return best[1] if best else None


def _download(found: Located, folder: Path, session: requests.Session) -> Fetched:
    """Stream one file to `folder`, hashing it; a file whose digest is not the lock's is deleted."""
    path = folder / found.filename
    digest = hashlib.sha256()
    try:
        with session.get(found.url, stream=True, timeout=TIMEOUT) as answer, open(path, "wb") as out:
            answer.raise_for_status()
            for chunk in answer.iter_content(1 << 20):
                digest.update(chunk)
                out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != found.sha256:
        path.unlink(missing_ok=True)
        raise ValueError(f"{found.filename}: sha256 {digest.hexdigest()}, the lock's is {found.sha256}")
    return Fetched(found.key, path, found.sha256)


def fetch(pins: Sequence[PinLike], tags: list[str], folder: Path, log: list[str]) -> list[Fetched]:
    """The wheels of `pins` this path could fetch and check, into `folder`; what went wrong is
    appended to `log` (the pins not fetched are the caller's to fetch another way)."""
    rank = {tag: i for i, tag in enumerate(tags)}
    index = index_url()
    with (
        _session() as session,
        concurrent.futures.ThreadPoolExecutor(THREADS, thread_name_prefix="wheel-fetch") as pool,
    ):
        pages = {pin.key: pool.submit(_page, index, pin.name, session) for pin in pins}
        located: list[Located] = []
        for pin in pins:
            try:
                chosen = _choose(pin, pages[pin.key].result(), rank)
            except Exception as exc:  # any failure leaves the pin to pip
                log.append(f"{pin.key}: the index's page failed: {exc}")
                continue
            if chosen is None:
                log.append(f"{pin.key}: no wheel of the lock fits this Python (an sdist): built by pip")
            else:
                located.append(chosen)
        # The largest first: TensorFlow's wheel sets the wall time, the small ones fill in beside it.
        located.sort(key=lambda found: -found.size)
        futures = [pool.submit(_download, found, folder, session) for found in located]
        done: list[Fetched] = []
        for found, future in zip(located, futures, strict=True):
            try:
                done.append(future.result())
            except Exception as exc:
                log.append(f"{found.key}: {found.url} failed: {exc}")
    return done
