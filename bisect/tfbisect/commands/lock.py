"""`tfbisect lock`: regenerate the locks, the dependencies as of each release's date."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tfbisect.commands.common import DONE, FAILED
from tfbisect.core import catalogue
from tfbisect.core.errors import ExitCode, TfbisectError
from tfbisect.core.progress import Progress
from tfbisect.core.spec import Flavour, KerasVariant
from tfbisect.envs import interpreters, locks


@dataclass(frozen=True)
class LockOptions:
    tf: tuple[str, ...] = ()  # empty: every release
    python: str | None = None
    flavour: Flavour = Flavour.CPU
    keras: KerasVariant = KerasVariant.DEFAULT
    missing: bool = False


@dataclass(frozen=True)
class Locked:
    """One lock written (path and its exclude-newer date), or why not (error)."""

    path: Path | None
    exclude_newer: str = ""
    error: TfbisectError | None = None


@dataclass(frozen=True)
class LockResult:
    locked: tuple[Locked, ...]
    exit_code: ExitCode


def lock(options: LockOptions, progress: Progress, done: Callable[[Locked], None]) -> LockResult:
    """`done` hears of each lock as it is written (resolving one takes a while)."""
    cat = catalogue.load_snapshot()
    have = interpreters.available()
    releases = [cat.resolve(v, pre=True) for v in options.tf] if options.tf else cat.releases()
    out: list[Locked] = []
    for release in releases:
        python = options.python or locks.preferred_python(release, set(have))
        spec = locks.LockSpec(release.version, python, options.flavour, options.keras)
        if options.missing and locks.lock_path(spec).is_file():
            continue
        interpreter = have.get(python)
        try:
            with progress.step(f"TF {release.version} py{python}", "resolving as of the release date"):
                found = locks.compile_lock(spec, cat, interpreter.path if interpreter else None)
            locked = Locked(found.path, str(found.exclude_newer))
        except TfbisectError as exc:
            locked = Locked(None, error=exc)
        out.append(locked)
        done(locked)
    failed = any(one.error is not None for one in out)
    return LockResult(tuple(out), FAILED if failed else DONE)
