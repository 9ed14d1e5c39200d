"""Where locks are read and written: committed locks are read-only seed data, found first;
locks resolved at run time go to the user's cache; nothing in the package writes under its
own data folder."""

from __future__ import annotations

import ast
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tfbisect.core.catalogue import load_snapshot
from tfbisect.core.cudasets import CudaSet
from tfbisect.core.packagedata import data_file
from tfbisect.envs import locks

PACKAGE = Path(str(data_file())).parent
DATA = PACKAGE / "data"
CAT = load_snapshot()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("TFBISECT_LOCKS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "tfbisect" / "locks"


def fake_uv(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    seen: list[list[str]] = []

    def run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.append(command)
        return subprocess.CompletedProcess(
            command, 0, stdout="six==1.17.0 \\\n    --hash=sha256:00\n", stderr=""
        )

    monkeypatch.setattr(subprocess, "run", run)
    return seen


def test_committed_first_then_the_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    committed = locks.LockSpec("2.16.1", "3.12")
    assert locks.lock_path(committed) == DATA / "locks" / committed.filename
    assert locks.load(committed).path.parent == DATA / "locks"
    resolved = locks.LockSpec("2.13.0rc1", "3.11")
    assert locks.lock_path(resolved) == cache / resolved.filename
    before = sorted(p.name for p in (DATA / "locks").iterdir())
    fake_uv(monkeypatch)
    lock = locks.compile_lock(resolved, CAT, None)
    assert lock.path == cache / resolved.filename and lock.path.is_file()
    assert locks.load(resolved).path == lock.path  # found again, in the cache
    assert sorted(p.name for p in (DATA / "locks").iterdir()) == before


def test_a_committed_lock_recompiled_goes_to_the_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    committed = locks.LockSpec("2.16.1", "3.12")
    seed = (DATA / "locks" / committed.filename).read_bytes()
    fake_uv(monkeypatch)
    assert locks.compile_lock(committed, CAT, None).path == cache / committed.filename
    assert (DATA / "locks" / committed.filename).read_bytes() == seed


def test_cuda_set_lock_goes_to_the_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = fake_uv(monkeypatch)
    new_set = CudaSet(
        "cu99.9-cudnn9.9", "99.9", "9.9", ("nvidia-cuda-runtime-cu99==99.9",), "2030-01-01T00:00:00Z", ()
    )
    assert locks.set_lock(new_set) == cache / new_set.lock_filename
    assert len(seen) == 1 and (cache / new_set.lock_filename).is_file()


def test_cache_folder_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TFBISECT_LOCKS", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert locks.written_locks_dir() == tmp_path / "home" / ".cache" / "tfbisect" / "locks"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/cache")  # invalid per the XDG spec: ignored
    assert locks.written_locks_dir() == tmp_path / "home" / ".cache" / "tfbisect" / "locks"
    monkeypatch.setenv("TFBISECT_LOCKS", str(tmp_path / "mine"))
    assert locks.written_locks_dir() == locks.locks_dir() == tmp_path / "mine"


WRITERS = {
    "write_text",
    "write_bytes",
    "write_text_atomic",
    "write_lock",
    "mkdir",
    "touch",
    "save_snapshot",
    "unlink",
}
PACKAGE_PATHS = {"data_file", "locks_dir", "default_snapshot_path"}
# The maintainers' `tfbisect versions --refresh --save` overwrites the committed snapshot on purpose.
ALLOWED = {"default_snapshot_path"}


def _called(node: ast.AST) -> set[str]:
    names = set()
    for inner in ast.walk(node):
        if isinstance(inner, ast.Call):
            func = inner.func
            names.add(
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
    return names


def test_nothing_in_the_package_writes_under_its_data_folder() -> None:
    """Grep-like, over the syntax: no write call takes a path into the package's data (directly),
    and no module but packagedata builds one from its own `__file__`."""
    offences = []
    for module in sorted(PACKAGE.rglob("*.py")):
        if DATA in module.parents:
            continue
        tree = ast.parse(module.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and _called(ast.Expr(node)) & WRITERS:
                inside = set().union(*(_called(arg) for arg in [node.func, *node.args])) - ALLOWED
                if inside & PACKAGE_PATHS:
                    offences.append(f"{module.relative_to(PACKAGE)}:{node.lineno}")
        text = module.read_text()
        if "__file__" in text and ('/ "data"' in text or "/ 'data'" in text):
            offences.append(f"{module.relative_to(PACKAGE)}: builds a path to data/ from __file__")
    assert offences == []
