"""The wheel cache's fast path: the lock's exact files fetched from the index in parallel.

A lock names each file by its sha256, so the file a pin needs is found on the index's JSON
page (PEP 691) by that digest alone, among those whose tags the target Python accepts (in its
own order of preference, as pip would choose).  Each file is fetched on a thread of its own and
hashed as it streams; one whose digest is not the lock's is deleted at once.  What this path
cannot place (an sdist-only pin, an index without JSON pages, a Python whose pip cannot name
its tags, any error) is left to `pip wheel`, the cache's general path: this one only makes the
common case fast (26 wheels, one after another by `pip wheel`, took 28.7 s once).

The index is not trusted beyond the lock's digests.  A page is read up to pages.PAGE_MAX_BYTES, and
must be a JSON object whose `files` is a list; an entry of the wrong shape (a filename that is
no plain wheel name, a digest that is no sha256, a size that is no count) is skipped, never
used.  A file is fetched only from an http(s) address with no credentials in it (https when the
index is; PyPI serves its files from another host, so the host is free: the digest decides),
and never beyond the size the index declared for it nor WHEEL_MAX_BYTES.  What is refused
(`Refused`) says what happened and what to do, and leaves the pin to `pip wheel`.
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
from tfbisect.envs import pages
from tfbisect.envs.pages import JSON_PAGE

THREADS = 8
TIMEOUT = 60.0
# The largest wheel a lock names (an NVIDIA cuDNN wheel) is ~0.9 GB.
WHEEL_MAX_BYTES = 4 * 1000**3
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


class Refused(ValueError):
    """What the index answered is not used: what happened, and what to do (one note)."""

    def __init__(self, what: str, todo: str) -> None:
        super().__init__(f"{what}; {todo}")
        self.what = what
        self.todo = todo


_INDEX_TODO = "check that PIP_INDEX_URL names a PEP 691 index you trust (pip wheel fetches this pin instead)"


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


@dataclass(frozen=True)
class Listed:
    """One file of an index's page, its fields checked."""

    filename: str
    url: str  # absolute
    sha256: str
    size: int  # 0: not declared


def _page(index: str, name: str, session: requests.Session) -> list[Listed]:
    url = f"{index}/{canonicalize_name(name)}/"
    with session.get(url, headers={"Accept": JSON_PAGE}, timeout=TIMEOUT, stream=True) as answer:
        answer.raise_for_status()
        if JSON_PAGE not in answer.headers.get("Content-Type", ""):
            return []  # an index without JSON pages: pip wheel finds the file instead
        body = pages.bounded(answer.iter_content(pages.CHUNK_BYTES), pages.declared_length(answer.headers))
        if body is None:
            raise Refused(pages.too_large(f"the index's page of {name} ({url})"), _INDEX_TODO)
    try:
        document = jsonread.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Refused(
            f"the index's page of {name} ({url}) is not JSON ({str(exc)[:120]})", _INDEX_TODO
        ) from None
    files = document.get("files") if isinstance(document, dict) else None
    if not isinstance(files, list):
        raise Refused(f"the index's page of {name} ({url}) has no list of files", _INDEX_TODO)
    return [found for found in (_listed(entry, url) for entry in files) if found is not None]


def _listed(entry: object, page: str) -> Listed | None:
    """A page's entry with every field the fetch uses of the right shape; None when one is not."""
    if not isinstance(entry, dict):
        return None
    filename, link, hashes, size = (entry.get(k) for k in ("filename", "url", "hashes", "size"))
    sha = hashes.get("sha256") if isinstance(hashes, dict) else None
    if not (isinstance(filename, str) and isinstance(link, str) and isinstance(sha, str)):
        return None
    # The file is written under its name: a plain wheel name, never a path.
    plain = 0 < len(filename) <= 255 and "/" not in filename and "\\" not in filename and "\0" not in filename
    if not plain or filename.startswith(".") or not filename.endswith(".whl"):
        return None
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha) or len(link) > 4096:
        return None
    if size is None:
        size = 0
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        return None
    try:
        url = urllib.parse.urljoin(page, link)
    except ValueError:  # no address at all (`http://[::1/`): _checked_url refuses it by name
        url = link
    return Listed(filename, url, sha, size)


def _checked_url(url: str, index: str, name: str) -> str:
    """The file's address when the fetch may use it (see the module's docstring)."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
    except ValueError:
        parts, host = None, None
    if parts is None or parts.scheme not in ("http", "https") or not host:
        raise Refused(f"the index links {name}'s wheel to {url[:200]!r}, not an http(s) address", _INDEX_TODO)
    if parts.username is not None or parts.password is not None:
        raise Refused(f"the index links {name}'s wheel to an address with credentials in it", _INDEX_TODO)
    if urllib.parse.urlsplit(index).scheme == "https" and parts.scheme != "https":
        raise Refused(f"the https index links {name}'s wheel to plain http ({url[:200]})", _INDEX_TODO)
    return url


def _choose(pin: PinLike, files: list[Listed], rank: dict[str, int], index: str) -> Located | None:
    """The lock's wheel for this Python: its digest is the lock's, its best tag the most preferred."""
    best: tuple[int, Listed] | None = None
    for entry in files:
        if entry.sha256 not in pin.hashes:
            continue
        try:
            tags = parse_wheel_filename(entry.filename)[3]
        except InvalidWheelFilename:
            continue
        order = min((rank[str(t)] for t in tags if str(t) in rank), default=None)
        if order is not None and (best is None or order < best[0]):
            best = (order, entry)
    if best is None:
        return None
    chosen = best[1]
    if chosen.size > WHEEL_MAX_BYTES:
        raise Refused(
            f"the index lists {chosen.filename} at {chosen.size} bytes, over the cap of {WHEEL_MAX_BYTES}: not fetched",
            _INDEX_TODO,
        )
    url = _checked_url(chosen.url, index, pin.name)
    return Located(pin.key, url, chosen.filename, chosen.sha256, chosen.size)


def _download(found: Located, folder: Path, session: requests.Session) -> Fetched:
    """Stream one file to `folder`, hashing it, never past the size the index declared (nor the
    cap); a file cut off there, or whose digest is not the lock's, is deleted."""
    path = folder / found.filename
    limit = found.size or WHEEL_MAX_BYTES
    digest = hashlib.sha256()
    written = 0
    try:
        with session.get(found.url, stream=True, timeout=TIMEOUT) as answer:
            answer.raise_for_status()
            declared = pages.declared_length(answer.headers)
            if declared is not None and declared > limit:
                raise _too_large(found, f"its server announces {declared} bytes", limit)
            with open(path, "wb") as out:
                for chunk in answer.iter_content(1 << 20):
                    written += len(chunk)
                    if written > limit:
                        raise _too_large(found, f"its server sent more than {limit} bytes", limit)
                    digest.update(chunk)
                    out.write(chunk)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != found.sha256:
        path.unlink(missing_ok=True)
        raise ValueError(f"{found.filename}: sha256 {digest.hexdigest()}, the lock's is {found.sha256}")
    return Fetched(found.key, path, found.sha256)


def _too_large(found: Located, what: str, limit: int) -> Refused:
    bound = f"the {found.size} bytes the index declared" if found.size else f"the cap of {limit} bytes"
    return Refused(f"{found.filename}: {what}, over {bound}: refused and deleted", _INDEX_TODO)


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
                chosen = _choose(pin, pages[pin.key].result(), rank, index)
            except Refused as exc:
                log.append(f"{pin.key}: {exc}")
                continue
            except Exception as exc:  # any failure leaves the pin to pip
                log.append(f"{pin.key}: the index's page failed: {exc}; pip wheel fetches it instead")
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
            except Refused as exc:
                log.append(f"{found.key}: {exc}")
            except Exception as exc:
                log.append(f"{found.key}: {found.url} failed: {exc}; pip wheel fetches it instead")
    return done
