"""CPython interpreters on this machine: on PATH and in pyenv's installs."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from tfbisect.core.errors import NoInterpreterError
from tfbisect.core.versions import python_sort_key

SUPPORTED = ("3.6", "3.7", "3.8", "3.9", "3.10", "3.11", "3.12", "3.13", "3.14")


@dataclass(frozen=True)
class Interpreter:
    version: str  # "3.8"
    path: Path
    full_version: str  # "3.8.18"


def _candidates(minor: str) -> Iterable[Path]:
    name = f"python{minor}"
    root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    versions = root / "versions"
    if versions.is_dir():
        # Newest patch first; pyenv names its installs by full version.
        for entry in sorted(versions.iterdir(), key=lambda p: p.name, reverse=True):
            if entry.name.startswith(minor + ".") or entry.name == minor:
                yield entry / "bin" / name
    for directory in os.environ.get("PATH", "").split(os.pathsep):
        # pyenv's shims only answer for the versions selected in .python-version; the
        # installs behind them were listed above, so the shims add nothing but failures.
        if directory and Path(directory).name != "shims":
            yield Path(directory) / name


@cache
def _probe(path: Path) -> str | None:
    try:
        done = subprocess.run(
            [str(path), "-c", "import platform; print(platform.python_version())"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def find(minor: str) -> Interpreter | None:
    for path in _candidates(minor):
        if path.is_file() and os.access(path, os.X_OK):
            full = _probe(path)
            if full and full.startswith(minor + "."):
                return Interpreter(version=minor, path=path, full_version=full)
    return None


def available(versions: Sequence[str] = SUPPORTED) -> dict[str, Interpreter]:
    found = {}
    for minor in versions:
        interpreter = find(minor)
        if interpreter is not None:
            found[minor] = interpreter
    return found


def listing(versions: Iterable[str]) -> str:
    """`3.8, 3.11` in version order, or `none`."""
    return ", ".join(sorted(versions, key=python_sort_key)) or "none"


def choose(
    wanted: Sequence[str],
    have: Mapping[str, Interpreter],
    pinned: str | None = None,
    release: str | None = None,
) -> Interpreter:
    """The newest interpreter here that the release has wheels for (or the pinned one).

    `release` (e.g. "2.2.3") only names the release in the messages."""
    usable = sorted((p for p in wanted if p in have), key=python_sort_key)
    if pinned is not None:
        if pinned in have and pinned in wanted:
            return have[pinned]
        tf = f"TF {release}" if release else "this TF release"
        reasons = []
        if pinned not in wanted:
            reasons.append(f"{tf} has no wheel for it")
        if pinned not in have:
            reasons.append("this machine has no such interpreter")
        if usable:
            # Only Pythons that are installed here and that the release has wheels for.
            todo = (
                "pin one that is here and has wheels ("
                + " or ".join(f"--python {p}" for p in reversed(usable))
                + "), or drop --python to let tfbisect choose; --backend docker runs other Pythons in containers."
            )
        elif pinned in wanted:
            todo = f"install Python {pinned} (e.g. `pyenv install {pinned}`), or use --backend docker."
        else:
            todo = (
                f"no Python here has wheels for {tf}: install one of {listing(wanted)} (e.g. `pyenv install "
                + (wanted[-1] if wanted else "3.11")
                + "`), or use --backend docker."
            )
        raise NoInterpreterError(
            f"Python {pinned} was asked for, but {' and '.join(reasons)} "
            f"(wheels exist for {listing(wanted)}; this machine has {listing(have)}).",
            todo,
        )
    if not usable:
        raise NoInterpreterError(
            f"No Python on this machine can install it: wheels exist for {', '.join(wanted) or 'none'}, "
            f"and this machine has {', '.join(sorted(have, key=python_sort_key)) or 'none'}.",
            "install one of those Pythons (e.g. `pyenv install "
            + (wanted[-1] if wanted else "3.11")
            + "`) or run it in a container with --backend docker.",
        )
    return have[usable[-1]]
