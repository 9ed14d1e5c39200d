"""What tfbisect keeps on this machine, and a budget for it: the inventory (venvs, tfbisect's
own uv cache and wheel cache, both one per machine, resolved locks, narrowing traces, images,
site volumes), a pure plan of what to evict, and the eviction.

Sizes are blocks on disk, each inode counted once per entry.  The venvs are hard-linked to
the uv cache they were installed from (tfbisect's own, one per machine: `uv_cache_dir`), so
removing a venv alone frees only its own files; after venvs go, `sweep_uv` removes the uv
archives that no venv links any more (every file's link count back to 1), which is what makes
the space come back.

Last use: a venv's `.tfbisect-used` marker (touched by each run; a venv prepared but never
run, e.g. prefetched for a round that did not need it, has none and goes first), a wheel's
mtime (touched by each build that uses it), an image's or a site volume's marker under
`<cache>/marks/images/`.  A site volume (envs/docker_sites.py: a CPU release's packages) has
no size the engine tells cheaply, so its filling writes one in a `size` mark beside them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

from tfbisect.core import jsonread
from tfbisect.core.errors import MachineFaultError, TfbisectError, UsageError
from tfbisect.core.fsio import file_lock, write_text_atomic
from tfbisect.core.progress import Progress

READY = ".tfbisect-ready"  # a venv whose install and check finished (its lock's sha256)
USED = ".tfbisect-used"  # touched on each run in a venv
UV_CACHE = "uv"  # tfbisect's own uv cache, under the default cache folder (never the user's)
UV_CACHE_VARIABLE = "TFBISECT_UV_CACHE"
WHEELS = "wheels"  # the machine's wheel cache, beside the uv cache (wheel_cache_dir)
BUDGET_VARIABLE = "TFBISECT_CACHE_BUDGET"
# Nothing younger is swept from the uv cache: an install in another process may be between
# unpacking an archive and linking it into its venv.
UV_SWEEP_MIN_AGE_S = 30 * 60
# A proof's venv copy lives as long as one run; one older than this, whose process is gone, a
# killed driver left behind.
PROOF_COPY_MAX_AGE_S = 60 * 60
GB = 1000**3
# What preparing one environment takes on disk when nothing of it is cached yet (measured:
# CPU venvs 0.7-2.2 GB, nightlies the largest; the CUDA sets are 3-6 GB of NVIDIA wheels).
VENV_ESTIMATE = {"cpu": int(2.5 * GB), "cuda": 8 * GB}
WHEELS_ESTIMATE = {"cpu": 1 * GB, "cuda": 5 * GB}  # a Docker build's wheels (the image is the engine's)
# Installs running in this process's threads: the uv sweep waits until none is (other processes:
# the age guard).
_INSTALLS = threading.Condition()
_ACTIVE = [0]


class NoSpaceError(MachineFaultError):
    """Too little free space to prepare an environment: a machine fault (exit 15), never a skip
    and never a verdict; the command stops before half-making the environment."""


@dataclass(frozen=True)
class Entry:
    kind: str  # venv, uv, wheel, lock, trace, image, volume
    name: str
    size: int  # bytes on disk
    last_used: float  # epoch seconds
    used: bool = True  # False: prepared and never run (a prefetch nobody needed)
    path: Path | None = None  # None for an image or a volume
    ref: str = ""  # an image's tag, a volume's name
    # An image or volume of the engine that this cache folder never prepared (another cache's, a
    # test's): listed, never pruned or evicted from here.
    foreign: bool = False
    # False: a volume whose size nobody wrote here (`size` counts 0 for it).
    size_known: bool = True

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.ref or self.path}"


@dataclass(frozen=True)
class Inventory:
    entries: tuple[Entry, ...]
    notes: tuple[str, ...] = ()

    @property
    def total(self) -> int:
        return sum(e.size for e in self.entries)


class ImageEngine(Protocol):
    """What the inventory needs of the Docker engine (envs/docker_engine.Engine has it)."""

    def image_list(self, reference: str) -> list[tuple[str, int]]: ...

    def remove_image(self, ref: str) -> None: ...

    def site_volumes(self) -> dict[str, dict[str, str]]: ...

    def remove_volume(self, name: str) -> bool: ...


@runtime_checkable
class InspectingEngine(ImageEngine, Protocol):
    """An engine that also inspects an image (labels, age): the proof images' sweep needs it."""

    def image_inspect(self, ref: str) -> dict[str, object] | None: ...


# -- sizes and marks ------------------------------------------------------------------------


def disk_usage(path: Path, *, own_only: bool = False) -> int:
    """Blocks under `path`, each inode once; `own_only`: only files no other path links."""
    seen: set[int] = set()
    total = 0
    for root, dirs, files in os.walk(path):
        for name in [*files, *dirs]:
            with contextlib.suppress(OSError):
                found = os.lstat(Path(root, name))
                if found.st_ino in seen or (own_only and name in files and found.st_nlink > 1):
                    continue
                seen.add(found.st_ino)
                total += found.st_blocks * 512
    return total


def _mtime(path: Path, default: float = 0.0) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return default


def touch(path: Path) -> None:
    """Mark a use now (a marker file, made when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def image_mark(cache_dir: Path, tag: str, what: str) -> Path:
    """The marker of an image's preparation (`prepared`) or use in a run (`used`)."""
    return cache_dir / "marks" / "images" / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', tag)}.{what}"


def parse_size(text: str) -> int:
    """`50G`, `500M`, `2T`, `1000` (bytes): decimal units, as `df -H` and the docs use."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", text.upper())
    if not match:
        raise UsageError(f"{text!r} is not a size.", "write it as 50G, 500M or 2T.")
    return int(float(match[1]) * 1000 ** " KMGT".index(match[2] or " "))


def parse_age(text: str) -> float:
    """`7d`, `12h`, `30m` (a bare number is days) as seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([dhm]?)\s*", text.lower())
    if not match:
        raise UsageError(f"{text!r} is not an age.", "write it as 7d, 12h or 30m.")
    return float(match[1]) * {"d": 86400, "h": 3600, "m": 60, "": 86400}[match[2]]


def budget_from_env() -> int | None:
    value = os.environ.get(BUDGET_VARIABLE, "").strip()
    return parse_size(value) if value else None


# -- the inventory --------------------------------------------------------------------------


def _venvs(cache_dir: Path) -> list[Entry]:
    out = []
    for path in sorted((cache_dir / "venvs").glob("*")):
        if not path.is_dir():
            continue
        used = (path / USED).is_file()
        # A half-made venv (no READY, or a `.partial-` folder) counts from its folder's time.
        last = _mtime(path / USED) if used else _mtime(path / READY, _mtime(path))
        out.append(Entry("venv", path.name, disk_usage(path), last, used, path))
    return out


def _wheels(cache_dir: Path) -> list[Entry]:
    out = []
    for path in sorted(wheel_cache_dir().glob("py*/*.whl")):
        found = path.stat()
        name = f"{path.parent.name}/{path.name}"
        out.append(Entry("wheel", name, found.st_blocks * 512, found.st_mtime, True, path))
    return out


def default_cache_dir() -> Path:
    """Where tfbisect keeps venvs, wheels and images' marks unless --cache says otherwise."""
    if os.environ.get("TFBISECT_CACHE"):
        return Path(os.environ["TFBISECT_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tfbisect"


def uv_cache_dir() -> Path:
    """tfbisect's own uv cache, one per machine (`$TFBISECT_UV_CACHE`, else `uv` in the default
    cache folder) whatever `--cache` says: a release's wheels are fetched once for every cache
    folder (the tests each use one), and never mixed with the user's own uv cache, so `prune`
    can sweep what only tfbisect's venvs used."""
    asked = os.environ.get(UV_CACHE_VARIABLE)
    return Path(asked) if asked else default_cache_dir() / UV_CACHE


def wheel_cache_dir() -> Path:
    """The machine's wheel cache (envs/wheelhouse.py): `wheels` beside tfbisect's uv cache
    (`~/.cache/tfbisect/wheels`), whatever `--cache` says.  uv keys a `--find-links` wheel by its
    path, so one path per wheel file on the machine is what makes uv unpack each wheel once:
    with a wheel cache per cache folder, every folder (each test has one) unpacked TensorFlow
    into the uv cache again (28 GB grew to 75 GB in one CI run).  Beside the uv cache, it is on
    the same file system, follows `$TFBISECT_UV_CACHE` (a private uv cache gets private wheels:
    the bench's cold sides) and is listed, pruned and evicted with it."""
    return uv_cache_dir().with_name(WHEELS)


def _uv(cache_dir: Path) -> list[Entry]:
    path = uv_cache_dir()
    if not path.is_dir():
        return []
    # Only what no venv links: the rest is already counted with the venvs.
    return [
        Entry(
            "uv",
            f"{UV_CACHE} (what no venv links)",
            disk_usage(path, own_only=True),
            _mtime(path),
            True,
            path,
        )
    ]


def _files(kind: str, paths: Iterable[Path]) -> list[Entry]:
    return [
        Entry(kind, p.name, disk_usage(p) if p.is_dir() else p.stat().st_blocks * 512, _mtime(p), True, p)
        for p in paths
    ]


def _images(cache_dir: Path, engine: ImageEngine) -> list[Entry]:
    out = []
    for reference in ("tfbisect", "tfbisect-nvidia"):
        for tag, size in engine.image_list(reference):
            used_mark, prepared = image_mark(cache_dir, tag, "used"), image_mark(cache_dir, tag, "prepared")
            used = used_mark.is_file()
            last = _mtime(used_mark) if used else _mtime(prepared)
            foreign = not used and not prepared.is_file()
            out.append(Entry("image", tag, size, last, used, None, tag, foreign))
    return out


def _volumes(cache_dir: Path, engine: ImageEngine) -> list[Entry]:
    """The engine's site volumes, sized by the `size` mark their filling wrote here (a volume
    this folder did not fill has none: its size is unknown, counted as 0)."""
    out = []
    for name in sorted(engine.site_volumes()):
        used_mark, prepared = image_mark(cache_dir, name, "used"), image_mark(cache_dir, name, "prepared")
        used = used_mark.is_file()
        last = _mtime(used_mark) if used else _mtime(prepared)
        foreign = not used and not prepared.is_file()
        size = _size_mark(image_mark(cache_dir, name, "size"))
        out.append(Entry("volume", name, size or 0, last, used, None, name, foreign, size is not None))
    return out


def _size_mark(path: Path) -> int | None:
    try:
        return int(path.read_text(encoding="ascii").strip())
    except (OSError, ValueError):
        return None


def inventory(
    cache_dir: Path,
    *,
    locks_dir: Path | None = None,
    reports_dir: Path | None = None,
    engine: ImageEngine | None = None,
    now: float | None = None,
) -> Inventory:
    """Everything tfbisect keeps; images and site volumes only when an engine is given (else a
    note says so), and a note of the proof images killed runs left (as of `now`)."""
    entries = [*_venvs(cache_dir), *_uv(cache_dir), *_wheels(cache_dir)]
    if locks_dir is not None:
        entries += _files("lock", sorted(locks_dir.glob("*.txt")))
    if reports_dir is not None:
        entries += _files("trace", sorted((reports_dir / "bisect").glob("*.traces")))
    notes = []
    if engine is None:
        notes.append(
            "images: no Docker engine answered, so images and site volumes are not listed (nor pruned)"
        )
    else:
        entries += _images(cache_dir, engine) + _volumes(cache_dir, engine)
        notes += _left_proof_images(engine, now)
    return Inventory(tuple(entries), tuple(notes))


def _left_proof_images(engine: ImageEngine, now: float | None) -> list[str]:
    """The note on the proof images killed runs left, which any prune sweeps (`evict`): the
    sweep's own choice of them, never one a live run uses.  None left: no note."""
    if not isinstance(engine, InspectingEngine):
        return []
    from tfbisect.envs.docker_proof import left_proof_images  # the Docker SDK only when asked

    try:
        left = left_proof_images(engine, now=now)
    except TfbisectError as exc:  # the listing goes on without them
        return [f"proof images: not listed ({exc.what.splitlines()[0]})"]
    if not left:
        return []
    size = sum(bytes_ for _, bytes_ in left)
    return [
        f"proof images: {len(left)} left by killed runs ({size / 1000**2:.1f} MB of their own); "
        "any `tfbisect cache prune` (e.g. --older-than 7d) removes them"
    ]


# -- what to evict (pure) -------------------------------------------------------------------


def _order(entries: Iterable[Entry]) -> list[Entry]:
    """Eviction order: environments prepared and never run first, then least recently used."""
    return sorted(entries, key=lambda e: (e.used, e.last_used, e.key))


def plan_prune(
    entries: Sequence[Entry],
    *,
    now: float,
    older_than: float | None = None,
    keep_last: int | None = None,
    everything: bool = False,
    protect: frozenset[str] = frozenset(),
) -> list[Entry]:
    """What `tfbisect cache prune` removes: everything, or what was last used more than
    `older_than` seconds ago, and/or all but the `keep_last` most recently used of each kind."""
    candidates = [e for e in entries if e.key not in protect and not e.foreign]
    if everything:
        return _order(candidates)
    chosen: dict[str, Entry] = {}
    if older_than is not None:
        chosen.update((e.key, e) for e in candidates if now - e.last_used > older_than)
    if keep_last is not None:
        for kind in {e.kind for e in candidates}:
            # The uv cache is one entry that serves every venv: keep-last leaves it to the sweep.
            if kind == "uv":
                continue
            newest_first = sorted((e for e in candidates if e.kind == kind), key=lambda e: -e.last_used)
            chosen.update((e.key, e) for e in newest_first[keep_last:])
    return _order(chosen.values())


def plan_budget(entries: Sequence[Entry], budget: int, protect: frozenset[str] = frozenset()) -> list[Entry]:
    """The fewest environments and wheels, in eviction order, whose removal brings the total
    under `budget`; never one in `protect` (what the current command uses).  Locks and traces
    are small and carry work: the budget leaves them to `prune`."""
    total = sum(e.size for e in entries)
    out: list[Entry] = []
    evictable = [
        e
        for e in entries
        if e.kind in ("venv", "wheel", "image", "volume")
        and e.key not in protect
        and not e.foreign
        and ".partial-" not in e.name
    ]
    for entry in _order(evictable):
        if total <= budget:
            break
        out.append(entry)
        total -= entry.size
    return out


# -- eviction -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Freed:
    removed: tuple[Entry, ...]
    free_before: int
    free_after: int
    kept: tuple[Entry, ...] = ()  # asked to go, but still in use (a volume a container mounts)

    @property
    def bytes(self) -> int:
        return max(0, self.free_after - self.free_before)


def free_bytes(path: Path) -> int:
    """Free space for an unprivileged user where `path` (or its nearest existing parent) lives."""
    while not path.exists() and path != path.parent:
        path = path.parent
    found = os.statvfs(path)
    return found.f_bavail * found.f_frsize


def _remove(entry: Entry, engine: ImageEngine | None, cache_dir: Path) -> bool:
    """Remove one entry; False when it stays (a volume a container uses: tried again next time)."""
    if entry.kind == "image":
        if engine is not None:
            engine.remove_image(entry.ref)
        return True
    if entry.kind == "volume":
        if engine is None or not engine.remove_volume(entry.ref):
            return False
        # Its marks go with it: a volume of the same name filled later by another cache folder
        # is that folder's, and its size mark would be this one's old figure.  (An image's stay:
        # `remove_image` does not say whether it went.)
        for what in ("prepared", "used", "size"):
            image_mark(cache_dir, entry.ref, what).unlink(missing_ok=True)
        return True
    assert entry.path is not None
    if entry.kind == "wheel":
        _drop_wheel(entry.path)
    elif entry.path.is_dir():
        shutil.rmtree(entry.path, ignore_errors=True)
    else:
        entry.path.unlink(missing_ok=True)
    return True


def _drop_wheel(path: Path) -> None:
    """Remove a wheel and its index entry, under the wheel folder's lock."""
    folder = path.parent
    with file_lock(folder / ".lock"):
        index_path = folder / "index.json"
        with contextlib.suppress(OSError, ValueError):
            index = dict(jsonread.read(index_path, max_bytes=None))
            kept = {k: v for k, v in index.items() if v != path.name}
            write_text_atomic(index_path, json.dumps(kept, indent=1, sort_keys=True))
        path.unlink(missing_ok=True)


def sweep_uv(cache_dir: Path, *, now: float, min_age: float = UV_SWEEP_MIN_AGE_S) -> int:
    """Remove the uv archives that no venv links any more (every file's link count is 1) and
    that are older than `min_age`; uv fetches a removed archive again when a venv needs it.
    Returns the bytes of the archives removed."""
    archives = uv_cache_dir()
    removed = 0
    with _INSTALLS:
        _INSTALLS.wait_for(lambda: _ACTIVE[0] == 0)
        for archive in sorted(archives.glob("archive-v*/*")):
            if not archive.is_dir() or now - _mtime(archive, now) < min_age:
                continue
            files = [Path(root) / name for root, _, names in os.walk(archive) for name in names]
            if all(os.lstat(f).st_nlink == 1 for f in files):
                removed += disk_usage(archive)
                shutil.rmtree(archive, ignore_errors=True)
    return removed


def sweep_proof_copies(
    copies: Path, *, now: float | None = None, min_age: float = PROOF_COPY_MAX_AGE_S
) -> int:
    """Remove the proof's venv copies (`tfbisect-proof-<pid>-*`) that a killed driver left: older
    than `min_age` and whose process is gone, so that their hard links keep no pruned venv's
    space.  Returns how many went."""
    now = time.time() if now is None else now
    removed = 0
    for folder in sorted(copies.glob("tfbisect-proof-*")) if copies.is_dir() else []:
        owner = folder.name.removeprefix("tfbisect-proof-").split("-", 1)[0]
        if (
            folder.is_symlink()
            or now - _mtime(folder, now) < min_age
            or (owner.isdigit() and process_alive(int(owner)))
        ):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed += 1
    return removed


def process_alive(pid: int) -> bool:
    """Whether process `pid` lives on this host (another user's counts as alive)."""
    if pid <= 0:  # kill(0) would signal our own process group
        return False
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def evict(
    entries: Sequence[Entry],
    cache_dir: Path,
    *,
    engine: ImageEngine | None = None,
    now: float | None = None,
    min_age: float = UV_SWEEP_MIN_AGE_S,
) -> Freed:
    """Remove `entries` (one still in use stays, in `kept`); when a venv went, sweep the uv
    archives only it linked.  Free space is measured (statvfs) before and after, where the
    cache lives."""
    before = free_bytes(cache_dir)
    sweep_proof_copies(cache_dir / "proof-copies", now=now)
    if isinstance(engine, InspectingEngine):
        # The proof images a killed run left go with its copies (the Docker SDK only when asked).
        from tfbisect.envs.docker_proof import sweep_proof_images

        with contextlib.suppress(TfbisectError):
            sweep_proof_images(engine, now=now)
    removed: list[Entry] = []
    kept: list[Entry] = []
    for entry in entries:
        (removed if _remove(entry, engine, cache_dir) else kept).append(entry)
    if any(e.kind == "venv" for e in removed) and not any(e.kind == "uv" for e in entries):
        sweep_uv(cache_dir, now=time.time() if now is None else now, min_age=min_age)
    return Freed(tuple(removed), before, free_bytes(cache_dir), tuple(kept))


def engine_or_none(progress: Progress) -> tuple[ImageEngine | None, str]:
    """The Docker engine when one answers (quietly), else None and why not."""
    from tfbisect.envs.docker_engine import connect  # the docker SDK only when asked for

    try:
        return connect(progress, echo=False), ""
    except TfbisectError as exc:
        return None, exc.what


# -- before a preparation -------------------------------------------------------------------


def require_free(where: Path, needed: int, what: str) -> None:
    """Stop before preparing `what` when the disk under `where` has less than `needed` free."""
    free = free_bytes(where)
    if free < needed:
        raise NoSpaceError(
            f"Only {free / GB:.1f} GB is free under {where}; {what} takes about {needed / GB:.1f} GB.",
            "free space: `tfbisect cache` shows what tfbisect keeps, `tfbisect cache prune --older-than 7d` "
            "(or `--all`) removes it; then run the same command again (finished results are reused).",
        )


def enforce_budget(
    cache_dir: Path, protect: Iterable[str], say: Callable[[str], None], *, engine: ImageEngine | None = None
) -> Freed | None:
    """Evict least recently used environments until the cache fits the budget
    (`TFBISECT_CACHE_BUDGET`); None when no budget is set or the cache fits."""
    budget = budget_from_env()
    if budget is None:
        return None
    found = inventory(cache_dir, engine=engine)
    doomed = plan_budget(found.entries, budget, frozenset(protect))
    if not doomed:
        if found.total > budget:
            say(
                f"cache: {found.total / GB:.1f} GB is over the budget of {budget / GB:.1f} GB, all of it in use"
            )
        return None
    freed = evict(doomed, cache_dir, engine=engine)
    kept = f" ({len(freed.kept)} more stay: a container uses them)" if freed.kept else ""
    say(
        f"cache: over the budget of {budget / GB:.1f} GB; "
        f"removed {len(freed.removed)} least recently used entries{kept}"
    )
    return freed


@contextlib.contextmanager
def installing() -> Iterator[None]:
    """Around a venv's install from the uv cache: the sweep waits for it (installs run side by side)."""
    with _INSTALLS:
        _ACTIVE[0] += 1
    try:
        yield
    finally:
        with _INSTALLS:
            _ACTIVE[0] -= 1
            _INSTALLS.notify_all()


__all__ = [
    "Entry",
    "Freed",
    "Inventory",
    "NoSpaceError",
    "enforce_budget",
    "evict",
    "inventory",
    "plan_budget",
    "plan_prune",
    "sweep_proof_copies",
]
