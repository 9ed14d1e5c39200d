"""The caches keep nothing unverified and have a budget: wheels checked against the lock's
sha256, venvs rebuilt without their completion marker, the inventory, the prune plan and the
budget, and the space a prune frees measured with statvfs."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

from tfbisect.core.errors import ExitCode
from tfbisect.core.progress import Progress
from tfbisect.core.spec import EnvSpec, Flavour, KerasVariant, LockSpec
from tfbisect.envs import cache, interpreters
from tfbisect.envs.backend_venv import READY, VenvBackend
from tfbisect.envs.locks import Lock
from tfbisect.envs.wheelhouse import Wheelhouse, pins, requirement_text, wheel_problem

PYTHON = "3.11"


def make_wheel(folder: Path, name: str = "tinypkg", version: str = "1.0") -> Path:
    """A small valid pure wheel (a module padded to ~200 kB, so a cut is well inside it)."""
    folder.mkdir(parents=True, exist_ok=True)
    info = f"{name}-{version}.dist-info"
    files = {
        f"{name}.py": "VALUE = 1\n" + "# padding\n" * 20000,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = io.StringIO()
    for path, text in files.items():
        digest = hashlib.sha256(text.encode()).digest()
        encoded = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
        record.write(f"{path},sha256={encoded},{len(text.encode())}\n")
    record.write(f"{info}/RECORD,,\n")
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for path, text in files.items():
            archive.writestr(path, text)
        archive.writestr(f"{info}/RECORD", record.getvalue())
    return wheel


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def cut(source: Path, target: Path) -> None:
    """A copy cut short, as a full disk leaves it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    data = source.read_bytes()
    target.write_bytes(data[: len(data) // 2])


@pytest.fixture
def wheel(tmp_path: Path) -> Path:
    return make_wheel(tmp_path / "links")


# -- wheels ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def own_uv_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """tfbisect's uv cache is one per machine; each test here gets one of its own beside its cache."""
    path = tmp_path / "cache" / cache.UV_CACHE
    monkeypatch.setenv(cache.UV_CACHE_VARIABLE, str(path))
    return path


def test_the_uv_cache_is_one_per_machine_whatever_the_cache_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(cache.UV_CACHE_VARIABLE)
    monkeypatch.setenv("TFBISECT_CACHE", str(tmp_path / "default"))
    assert cache.uv_cache_dir() == tmp_path / "default" / cache.UV_CACHE
    monkeypatch.delenv("TFBISECT_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache.uv_cache_dir() == tmp_path / "xdg" / "tfbisect" / cache.UV_CACHE
    # The wheel cache too, beside it (uv keys a --find-links wheel by its path).
    assert cache.wheel_cache_dir() == tmp_path / "xdg" / "tfbisect" / cache.WHEELS


def test_a_wheel_is_kept_only_when_its_sha256_matches_the_lock(wheel: Path, tmp_path: Path) -> None:
    pin = pins(f"tinypkg==1.0 \\\n    --hash=sha256:{sha(wheel)}\n")[0]
    assert wheel_problem(wheel, pin) is None
    short = tmp_path / "short" / wheel.name
    cut(wheel, short)
    problem = wheel_problem(short, pin)
    assert problem is not None and "not a complete wheel" in problem


def test_a_wheel_cut_short_while_fetching_is_not_kept_nor_indexed(wheel: Path, tmp_path: Path) -> None:
    pin = pins(f"tinypkg==1.0 --hash=sha256:{sha(wheel)}\n")[0]
    house = Wheelhouse(tmp_path / "wheels", Progress(quiet=True))
    folder = house.folder(PYTHON)
    folder.mkdir(parents=True)
    out = tmp_path / "out"
    cut(wheel, out / wheel.name)
    index: dict[str, str] = {}
    house._keep(out, [pin], folder, (index, {}))
    assert index == {}
    assert not (folder / wheel.name).exists()
    assert json.loads((folder / "index.json").read_text()) == {}


def _fetch_from(links: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pip wheel reads this folder instead of the index (no network in tests)."""
    if interpreters.find(PYTHON) is None:
        pytest.skip(f"needs Python {PYTHON}")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))


def test_a_wheel_cut_short_in_the_cache_is_evicted_and_fetched_again(
    wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fetch_from(wheel.parent, monkeypatch)
    pin = pins(f"tinypkg==1.0 --hash=sha256:{sha(wheel)}\n")[0]
    house = Wheelhouse(tmp_path / "wheels", Progress(quiet=True))
    folder = house.folder(PYTHON)
    cut(wheel, folder / wheel.name)  # kept and indexed by an older tfbisect
    (folder / "index.json").write_text(json.dumps({pin.key: wheel.name}))
    found = house.ensure([pin], PYTHON, tmp_path / "fetch.log")
    assert found == [folder / wheel.name]
    assert sha(found[0]) == sha(wheel)
    assert json.loads((folder / "index.json").read_text()) == {pin.key: wheel.name}
    assert wheel.name in json.loads((folder / "verified.json").read_text())


def test_a_build_failure_rechecks_in_full_and_evicts_a_damaged_wheel(
    wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fetch_from(wheel.parent, monkeypatch)
    pin = pins(f"tinypkg==1.0 --hash=sha256:{sha(wheel)}\n")[0]
    house = Wheelhouse(tmp_path / "wheels", Progress(quiet=True))
    kept = house.ensure([pin], PYTHON, tmp_path / "fetch.log")[0]
    assert house.recheck([pin], PYTHON) == []
    # Damaged in place, same size and inode: only the full check sees it.
    with open(kept, "r+b") as stream:
        stream.seek(100)
        stream.write(b"\0" * 64)
    assert house.cached([pin], PYTHON) == [kept]
    assert house.recheck([pin], PYTHON) == [pin.key]
    assert house.cached([pin], PYTHON) == []
    assert not kept.exists()


def test_a_wheel_built_here_gets_its_own_hash_which_the_image_build_requires(
    wheel: Path, tmp_path: Path
) -> None:
    """A wheel pip built from the lock's sdist matches none of the lock's hashes: its own sha256 is
    recorded and added to the build's requirement file; uv as the build runs it (install_wheels.py:
    --require-hashes) installs it with that file, and refuses it with the lock's hashes alone."""
    sdist = "0" * 64  # the lock's hash: its sdist's
    pin = pins(f"tinypkg==1.0 --hash=sha256:{sdist}\n")[0]
    house = Wheelhouse(tmp_path / "wheels", Progress(quiet=True))
    folder = house.folder(PYTHON)
    folder.mkdir(parents=True)
    (tmp_path / "out").mkdir()
    shutil.copy(wheel, tmp_path / "out" / wheel.name)
    index: dict[str, str] = {}
    house._keep(tmp_path / "out", [pin], folder, (index, {}))
    assert index == {pin.key: wheel.name}
    lock_only = requirement_text([pin], hashes=True)
    assert lock_only == f"tinypkg==1.0 --hash=sha256:{sdist}\n"
    served = house.with_built_hashes(lock_only, PYTHON)
    assert served == f"tinypkg==1.0 --hash=sha256:{sdist} --hash=sha256:{sha(wheel)}\n"
    env = dict(os.environ, UV_CACHE_DIR=str(tmp_path / "uv"), UV_PYTHON_DOWNLOADS="never", UV_NO_CONFIG="1")
    venv = str(tmp_path / "venv")
    subprocess.run(["uv", "venv", "-q", "--python", sys.executable, venv], env=env, check=True)
    for text, wanted in ((lock_only, 1), (served, 0)):
        (tmp_path / "req.txt").write_text(text)
        command = ["uv", "pip", "install", "--python", f"{venv}/bin/python", "--no-index", "--no-deps"]
        command += ["--require-hashes", "--find-links", str(folder), "-r", str(tmp_path / "req.txt")]
        done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
        assert (done.returncode != 0) == bool(wanted), done.stderr
        if wanted:
            assert "hash" in done.stderr.lower(), done.stderr


# -- venvs ----------------------------------------------------------------------------------


def test_a_venv_without_its_completion_marker_is_rebuilt(
    wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    interpreter = interpreters.find(PYTHON)
    if interpreter is None:
        pytest.skip(f"needs Python {PYTHON}")
    _fetch_from(wheel.parent, monkeypatch)  # the venv installs from the wheel cache, filled by pip here
    monkeypatch.delenv(cache.BUDGET_VARIABLE, raising=False)
    lock_path = tmp_path / "tf9.9.9-py3.11-cpu.txt"
    lock_path.write_text(f"# tfbisect lock\ntinypkg==1.0 \\\n    --hash=sha256:{sha(wheel)}\n")
    lock = Lock(LockSpec("9.9.9", PYTHON, Flavour.CPU, KerasVariant.DEFAULT), lock_path, (), "")
    spec = EnvSpec("9.9.9", PYTHON, Flavour.CPU, KerasVariant.DEFAULT, "venv")
    backend = VenvBackend(tmp_path / "cache", Progress(quiet=True), {PYTHON: interpreter})
    monkeypatch.setattr(cache, "VENV_ESTIMATE", {"cpu": 1, "cuda": 1})
    python = backend.ensure(spec, lock, interpreter, tmp_path / "logs")
    env = backend.env_dir(lock)
    assert (env / READY).read_text().strip() == lock.sha256
    assert list(env.glob("lib/python*/site-packages/tinypkg.py"))
    assert (tmp_path / "cache" / cache.UV_CACHE).is_dir()  # tfbisect's own uv cache
    # One download path: the venv installed from the wheel cache the Docker builds use.
    [kept] = backend.wheels.cached(pins(lock_path.read_text()), PYTHON)
    assert sha(kept) == sha(wheel)
    # A marker that matches: reused as it is.
    (env / "sentinel").write_text("kept")
    assert backend.ensure(spec, lock, interpreter, tmp_path / "logs") == python
    assert (env / "sentinel").exists()
    # No marker (an install killed midway): built anew.
    (env / READY).unlink()
    assert backend.ensure(spec, lock, interpreter, tmp_path / "logs") == python
    assert not (env / "sentinel").exists()
    assert (env / READY).is_file()


def test_venvs_of_two_cache_folders_share_one_wheel_file_and_one_uv_unpacking(
    wheel: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv keys a --find-links wheel by its path: a wheel cache per cache folder unpacked each
    wheel into the machine's uv cache once per folder (each test has one; TensorFlow's wheel
    is 0.5 GB unpacked).  Both backends of both folders use one file, unpacked once."""
    from tfbisect.envs.backend_docker import DockerBackend

    interpreter = interpreters.find(PYTHON)
    if interpreter is None:
        pytest.skip(f"needs Python {PYTHON}")
    _fetch_from(wheel.parent, monkeypatch)
    monkeypatch.delenv(cache.BUDGET_VARIABLE, raising=False)
    monkeypatch.setattr(cache, "VENV_ESTIMATE", {"cpu": 1, "cuda": 1})
    lock_path = tmp_path / "tf9.9.9-py3.11-cpu.txt"
    lock_path.write_text(f"# tfbisect lock\ntinypkg==1.0 \\\n    --hash=sha256:{sha(wheel)}\n")
    lock = Lock(LockSpec("9.9.9", PYTHON, Flavour.CPU, KerasVariant.DEFAULT), lock_path, (), "")
    spec = EnvSpec("9.9.9", PYTHON, Flavour.CPU, KerasVariant.DEFAULT, "venv")
    unpacked = tmp_path / "cache" / cache.UV_CACHE / "archive-v0"
    archives = []
    for folder in ("one", "two"):
        backend = VenvBackend(tmp_path / folder, Progress(quiet=True), {PYTHON: interpreter})
        assert backend.wheels.root == cache.wheel_cache_dir()
        assert DockerBackend(tmp_path / folder, Progress(quiet=True)).wheels.root == backend.wheels.root
        backend.ensure(spec, lock, interpreter, tmp_path / folder / "logs")
        [kept] = backend.wheels.cached(pins(lock_path.read_text()), PYTHON)
        assert kept == cache.wheel_cache_dir() / f"py{PYTHON}" / wheel.name
        [installed] = backend.env_dir(lock).glob("lib/python*/site-packages/tinypkg.py")
        archives.append(sorted(unpacked.glob("*/tinypkg.py")))
        # Hard-linked from uv's one unpacked copy, not copied again.
        assert [p.stat().st_ino for p in archives[-1]] == [installed.stat().st_ino]
    assert archives[0] == archives[1], "the second cache folder's venv unpacked the wheel again"
    assert not (tmp_path / "one" / "wheels").exists() and not (tmp_path / "two" / "wheels").exists()


# -- the inventory, the plans, the eviction ---------------------------------------------------


def entry(kind: str, name: str, size: int, last: float, used: bool = True) -> cache.Entry:
    return cache.Entry(kind, name, size, last, used, Path("/c") / name)


def test_the_budget_evicts_unused_prefetches_first_then_least_recently_used_never_protected() -> None:
    entries = [
        entry("venv", "old", 10, 100),
        entry("venv", "current", 10, 50),
        entry("venv", "prefetched", 10, 900, used=False),
        entry("venv", "new", 10, 800),
        entry("lock", "lock", 10, 1),
    ]
    protect = frozenset({"venv:/c/current"})
    doomed = cache.plan_budget(entries, 30, protect)
    assert [e.name for e in doomed] == ["prefetched", "old"]
    assert cache.plan_budget(entries, 50, protect) == []
    # Everything but what is protected and the small files is evicted at worst.
    assert [e.name for e in cache.plan_budget(entries, 0, protect)] == ["prefetched", "old", "new"]


def test_prune_plans_by_age_and_by_keep_last_per_kind() -> None:
    now = 10_000.0
    entries = [
        entry("venv", "a", 1, now - 9 * 86400),
        entry("venv", "b", 1, now - 2 * 86400),
        entry("venv", "c", 1, now - 60),
        entry("wheel", "w", 1, now - 8 * 86400),
    ]
    old = cache.plan_prune(entries, now=now, older_than=7 * 86400)
    assert sorted(e.name for e in old) == ["a", "w"]
    last = cache.plan_prune(entries, now=now, keep_last=1)
    assert sorted(e.name for e in last) == ["a", "b"]
    everything = cache.plan_prune(entries, now=now, everything=True, protect=frozenset({"venv:/c/c"}))
    assert sorted(e.name for e in everything) == ["a", "b", "w"]


def test_sizes_and_ages_parse_and_refuse_nonsense() -> None:
    assert cache.parse_size("50G") == 50 * 1000**3
    assert cache.parse_size("1.5t") == 1500 * 1000**3
    assert cache.parse_age("7d") == 7 * 86400
    assert cache.parse_age("12h") == 12 * 3600
    with pytest.raises(Exception, match="not a size"):
        cache.parse_size("lots")


def _fake_cache(root: Path, megabytes: int) -> Path:
    """A venv whose files are hard-linked from a uv archive, as uv installs them."""
    archive = root / cache.UV_CACHE / "archive-v0" / "abc123"
    archive.mkdir(parents=True)
    blob = archive / "big.so"
    blob.write_bytes(os.urandom(megabytes * 1024 * 1024))
    venv = root / "venvs" / "tf2.0.0-py3.7-cpu-0123456789ab"
    (venv / "lib").mkdir(parents=True)
    os.link(blob, venv / "lib" / "big.so")
    (venv / READY).write_text("sha\n")
    old = time.time() - 2 * cache.UV_SWEEP_MIN_AGE_S
    os.utime(archive, (old, old))
    wheels = root / "wheels" / "py3.7"
    wheels.mkdir(parents=True)
    (wheels / "tinypkg-1.0-py3-none-any.whl").write_bytes(b"x" * 4096)
    (wheels / "index.json").write_text(json.dumps({"tinypkg==1.0": "tinypkg-1.0-py3-none-any.whl"}))
    return venv


def test_inventory_lists_what_is_kept_and_pruning_a_venv_frees_its_uv_files(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    venv = _fake_cache(root, 32)
    reports = tmp_path / "reports"
    (reports / "bisect" / "x.jsonl.traces").mkdir(parents=True)
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "tf2.0.0-py3.7-cpu.txt").write_text("# lock\n")
    found = cache.inventory(root, locks_dir=locks, reports_dir=reports)
    kinds = sorted(e.kind for e in found.entries)
    assert kinds == ["lock", "trace", "uv", "venv", "wheel"]
    assert found.notes and "images" in found.notes[0]
    by_kind = {e.kind: e for e in found.entries}
    assert by_kind["venv"].size >= 32 * 1024 * 1024
    assert by_kind["venv"].used is False  # prepared, never run
    assert by_kind["uv"].size < 1024 * 1024  # what a venv links counts once, with the venv
    # Removing the venv alone would free nothing (the uv archive holds the same inode); the
    # prune sweeps the archive no venv links any more, and statvfs sees the space come back.
    freed = cache.evict([by_kind["venv"], by_kind["wheel"]], root)
    assert not venv.exists()
    assert not list((root / cache.UV_CACHE).glob("archive-v0/*"))
    assert json.loads((root / "wheels" / "py3.7" / "index.json").read_text()) == {}
    assert freed.bytes >= 24 * 1024 * 1024, freed  # 32 MB, less what others wrote meanwhile


def test_the_sweep_keeps_archives_a_venv_still_links_and_young_ones(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    _fake_cache(root, 1)
    young = root / cache.UV_CACHE / "archive-v0" / "young"
    young.mkdir()
    (young / "f").write_bytes(b"y")
    assert cache.sweep_uv(root, now=time.time()) == 0
    assert young.exists() and (root / cache.UV_CACHE / "archive-v0" / "abc123").exists()


def test_too_little_free_space_stops_with_the_figure_and_the_prune_command(tmp_path: Path) -> None:
    with pytest.raises(cache.NoSpaceError) as caught:
        cache.require_free(tmp_path, 10**18, "a venv of TF 2.20.0")
    assert "GB is free" in caught.value.what
    assert "tfbisect cache prune" in caught.value.todo
    assert caught.value.exit_code is ExitCode.MACHINE  # a machine fault: never a skip, never a verdict


def test_the_budget_is_enforced_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    venv = _fake_cache(root, 2)
    said: list[str] = []
    monkeypatch.setenv(cache.BUDGET_VARIABLE, "1M")
    cache.enforce_budget(root, {f"venv:{venv}"}, said.append)
    assert venv.exists()  # in use: never evicted
    assert not list((root / "wheels").glob("py*/*.whl"))
    cache.enforce_budget(root, set(), said.append)
    assert not venv.exists()
    assert said and "budget" in said[-1]


class _Engine:
    """The calls the inventory and the eviction make of an engine, over a list of images and a
    table of site volumes (a unit test of the listing logic)."""

    def __init__(
        self, tags: list[str], volumes: Sequence[str] = (), busy: frozenset[str] = frozenset()
    ) -> None:
        self.tags = tags
        self.removed: list[str] = []
        self.volumes = {name: {"tfbisect.site": "1"} for name in volumes}
        self.busy = busy  # volumes a container mounts: `docker volume rm` refuses them
        self.removed_volumes: list[str] = []

    def image_list(self, reference: str) -> list[tuple[str, int]]:
        return [(t, 1000) for t in self.tags if t.startswith(f"{reference}:")]

    def remove_image(self, ref: str) -> None:
        self.removed.append(ref)

    def site_volumes(self) -> dict[str, dict[str, str]]:
        return {name: dict(labels) for name, labels in self.volumes.items()}

    def remove_volume(self, name: str) -> bool:
        if name in self.busy:
            return False
        self.volumes.pop(name, None)
        self.removed_volumes.append(name)
        return True


def test_images_this_cache_never_prepared_are_listed_and_never_pruned(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    ours, theirs = "tfbisect:tf2.20.0-py3.11-cpu-aaa", "tfbisect:tf2.21.0-py3.11-cpu-bbb"
    cache.touch(cache.image_mark(root, ours, "prepared"))
    engine = _Engine([ours, theirs, "other:latest"])
    found = cache.inventory(root, engine=engine)
    images = {e.ref: e for e in found.entries if e.kind == "image"}
    assert set(images) == {ours, theirs}
    assert images[theirs].foreign and not images[ours].foreign
    assert not images[ours].used  # prepared (a prefetch), never run: first to go
    planned = cache.plan_prune(found.entries, now=time.time(), everything=True)
    assert [e.ref for e in planned if e.kind == "image"] == [ours]
    assert [e.ref for e in cache.plan_budget(found.entries, 0)] == [ours]
    cache.evict(planned, root, engine=engine)
    assert engine.removed == [ours]


VOLUME = "tfbisect-site-tf2.20.0-py3.11-cpu-{}"


def _prepared_volume(root: Path, name: str, size: int | None, age_s: float = 0.0) -> None:
    """The marks a filling leaves in this cache folder: `prepared` (its mtime `age_s` ago), `size`."""
    mark = cache.image_mark(root, name, "prepared")
    cache.touch(mark)
    os.utime(mark, (time.time() - age_s, time.time() - age_s))
    if size is not None:
        cache.image_mark(root, name, "size").write_text(str(size))


def test_site_volumes_are_listed_with_their_size_and_foreign_ones_never_pruned(tmp_path: Path) -> None:
    from tfbisect.report import console

    root = tmp_path / "cache"
    ours, run, unsized, theirs = (VOLUME.format(h) for h in ("aaa", "bbb", "ccc", "ddd"))
    _prepared_volume(root, ours, 980_000_000)
    _prepared_volume(root, run, 12_000_000)
    cache.touch(cache.image_mark(root, run, "used"))
    _prepared_volume(root, unsized, None)
    engine = _Engine([], [ours, run, unsized, theirs])
    found = cache.inventory(root, engine=engine)
    volumes = {e.name: e for e in found.entries if e.kind == "volume"}
    assert set(volumes) == {ours, run, unsized, theirs}
    assert volumes[ours].size == 980_000_000 and volumes[ours].size_known
    assert not volumes[ours].used and volumes[run].used  # prepared, never run: first to go
    assert volumes[ours].key == f"volume:{ours}" and volumes[ours].path is None
    assert volumes[theirs].foreign and not volumes[ours].foreign and not volumes[run].foreign
    assert volumes[unsized].size == 0 and not volumes[unsized].size_known
    assert found.total == 992_000_000
    listed = console.cache_list_text(found).splitlines()
    line = next(x for x in listed if x.endswith(ours + "  (prepared, never run)"))
    assert line.startswith("volume ") and "980.0 MB" in line
    assert next(x for x in listed if unsized in x).split()[1] == "unknown"
    assert "left alone" in next(x for x in listed if theirs in x)
    assert "(and 2 of unknown size)" in listed[-1]  # the foreign one has no size mark either
    planned = cache.plan_prune(found.entries, now=time.time(), everything=True)
    assert [e.name for e in planned] == [ours, unsized, run]  # never the foreign one
    freed = cache.evict(planned, root, engine=engine)
    assert engine.removed_volumes == [ours, unsized, run] and list(engine.volumes) == [theirs]
    assert [e.name for e in freed.removed] == [ours, unsized, run] and freed.kept == ()
    assert not (root / "marks" / "images").exists() or not list((root / "marks" / "images").iterdir())


def test_prune_older_than_removes_an_old_volume_and_skips_one_a_container_uses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from tfbisect.cli import main

    root = tmp_path / "cache"
    old, busy, young = (VOLUME.format(h) for h in ("old", "busy", "young"))
    _prepared_volume(root, old, 5_000_000, age_s=3 * 86400)
    _prepared_volume(root, busy, 7_000_000, age_s=3 * 86400)
    _prepared_volume(root, young, 9_000_000)
    engine = _Engine([], [old, busy, young], busy=frozenset({busy}))
    monkeypatch.setattr(cache, "engine_or_none", lambda progress: (engine, ""))
    base = ["--cache", str(root), "--reports", str(tmp_path / "reports"), "-q", "cache"]
    assert main([*base, "prune", "--older-than", "2d"]) == 0
    said = capsys.readouterr().out
    assert engine.removed_volumes == [old] and set(engine.volumes) == {busy, young}
    lines = said.splitlines()
    assert [x for x in lines if x.startswith("removed: ")] == [next(x for x in lines if old in x)]
    assert (
        next(x for x in lines if old in x).startswith("removed: volume ")
        and "removed 1 entries, 5.0 MB" in said
    )
    assert next(x for x in lines if busy in x).startswith("kept (a container uses it") and young not in said
    assert (
        not cache.image_mark(root, old, "prepared").exists()
        and not cache.image_mark(root, old, "size").exists()
    )
    # The busy one stays this cache's (its marks kept), so a later prune tries it again.
    assert cache.image_mark(root, busy, "prepared").exists()
    engine.busy = frozenset()
    assert main([*base, "prune", "--older-than", "2d"]) == 0
    assert engine.removed_volumes == [old, busy] and set(engine.volumes) == {young}


def test_the_budget_evicts_an_unused_volume_first_and_never_one_in_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "cache"
    image = "tfbisect:tf2.19.0-py3.11-cpu-eee"
    prefetched, ran, current = (VOLUME.format(h) for h in ("pre", "ran", "cur"))
    cache.touch(cache.image_mark(root, image, "used"))
    for name, age in ((prefetched, 0), (ran, 3600), (current, 7200)):
        _prepared_volume(root, name, 400 * cache.GB // 1000, age_s=age)
    for name, age in ((ran, 3600), (current, 7200)):
        mark = cache.image_mark(root, name, "used")
        cache.touch(mark)
        os.utime(mark, (time.time() - age, time.time() - age))
    engine = _Engine([image], [prefetched, ran, current])
    entries = cache.inventory(root, engine=engine).entries
    protect = frozenset({f"volume:{current}"})
    # The prefetched volume is the newest, yet never run: it goes first, before used entries.
    assert [e.name for e in cache.plan_budget(entries, int(0.9 * cache.GB), protect)] == [prefetched]
    assert [e.name for e in cache.plan_budget(entries, int(0.5 * cache.GB), protect)] == [prefetched, ran]
    assert [e.name for e in cache.plan_budget(entries, 0, protect)] == [prefetched, ran, image]
    monkeypatch.setenv(cache.BUDGET_VARIABLE, "900M")
    said: list[str] = []
    cache.enforce_budget(root, protect, said.append, engine=engine)
    assert engine.removed_volumes == [prefetched] and engine.removed == []
    assert "removed 1 least recently used entries" in said[-1]
    monkeypatch.setenv(cache.BUDGET_VARIABLE, "0")
    engine.busy = frozenset({ran})  # in a container of another process: skipped, no crash
    cache.enforce_budget(root, protect, said.append, engine=engine)
    assert set(engine.volumes) == {ran, current} and engine.removed == [image]
    assert "1 more stay" in said[-1]


@pytest.mark.slow
@pytest.mark.docker
def test_cache_lists_the_engines_images(tmp_path: Path) -> None:
    """Builds nothing: when an engine answers, `tfbisect cache` lists tfbisect's images on it."""
    import subprocess
    import sys

    engine, why = cache.engine_or_none(Progress(quiet=True))
    if engine is None:
        pytest.skip(why)
    tags = [t for ref in ("tfbisect", "tfbisect-nvidia") for t, _ in engine.image_list(ref)]
    done = subprocess.run(
        [sys.executable, "-m", "tfbisect", "--cache", str(tmp_path / "c"), "cache"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    for tag in tags:
        assert tag in done.stdout
    assert "no Docker engine answered" not in done.stdout


@pytest.mark.docker
def test_the_cli_lists_a_real_site_volume_and_prunes_it(tmp_path: Path) -> None:
    """A labelled volume in the real engine, with the marks a filling leaves in a cache folder of
    this test's own: `tfbisect cache` lists it with its size, `cache prune --older-than 0m`
    removes it through the engine.  Everything else the prune sees is this test's own (uv cache,
    wheels, locks) or foreign to its cache folder; the volume goes on every way out."""
    from tfbisect.envs.docker_proof import left_proof_images

    engine, why = cache.engine_or_none(Progress(quiet=True))
    if engine is None:
        pytest.skip(why)
    if isinstance(engine, cache.InspectingEngine) and left_proof_images(engine):
        pytest.skip("proof images a killed run left are on the engine: a prune would remove them")
    name = VOLUME.format(f"test{os.getpid()}-{time.time_ns() % 10**9}")
    root = tmp_path / "cache"
    env = {
        **os.environ,
        "TFBISECT_UV_CACHE": str(tmp_path / "uv"),
        "TFBISECT_LOCKS": str(tmp_path / "locks"),
        "XDG_CACHE_HOME": str(tmp_path / "xdg"),
    }
    base = [sys.executable, "-m", "tfbisect", "--cache", str(root), "--reports", str(tmp_path / "r"), "cache"]

    def tfbisect(*args: str) -> str:
        done = subprocess.run(
            [*base, *args], capture_output=True, text=True, check=False, env=env, timeout=60
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    subprocess.run(
        ["docker", "volume", "create", "--label", "tfbisect.site=1", name], check=True, capture_output=True
    )
    try:
        _prepared_volume(root, name, 3_000_000, age_s=60)
        line = next((x for x in tfbisect().splitlines() if name in x), "")
        assert line.startswith("volume ") and "3.0 MB" in line and "left alone" not in line, line
        assert name in tfbisect("prune", "--older-than", "0m")
        assert name not in engine.site_volumes()
        assert name not in tfbisect()
    finally:
        subprocess.run(["docker", "volume", "rm", "--force", name], check=False, capture_output=True)


def test_the_cache_command_lists_and_a_dry_run_removes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tfbisect.cli import main

    root = tmp_path / "cache"
    venv = _fake_cache(root, 1)
    base = ["--cache", str(root), "--reports", str(tmp_path / "reports"), "-q", "cache"]
    assert main(base) == 0
    listed = capsys.readouterr().out
    assert venv.name in listed and "(prepared, never run)" in listed and "total:" in listed
    assert main([*base, "prune", "--older-than", "0m", "--dry-run"]) == 0
    assert "would remove" in capsys.readouterr().out
    assert venv.exists()
    assert main([*base, "prune"]) == 2  # nothing said about what to remove: a usage error
