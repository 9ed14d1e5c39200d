"""Files written whole or not at all, locks shared by threads and processes, and timestamps.

Results, logs of bisections, locks, the catalogue snapshot and the reports are read by other
processes (a second tfbisect, a browser, git): a reader must never see half a file, so every
write goes through `write_text_atomic`.  Two tfbisect processes building the same base image
or filling the same wheel cache take `file_lock` on it.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from tfbisect.core import interrupt


def now_iso() -> str:
    """UTC, to the second: every timestamp tfbisect stores."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat()


def stamp() -> str:
    """UTC as a file-name part: 20261129T011500."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")


def fine_stamp() -> str:
    """UTC to the microsecond as a file-name part that sorts by time: 20261129-011500-123456."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S-%f")


def iso_z(moment: dt.datetime) -> str:
    """A moment in UTC, to the second, with a Z: 2026-11-29T01:15:00Z (what uv's
    --exclude-newer reads)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def minute_of(epoch: float) -> str:
    """A file's time (seconds since the epoch) in UTC, to the minute, for listings: 2026-11-29 01:15Z."""
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%d %H:%MZ")


def write_text_atomic(path: Path, text: str, *, mode: int = 0o644) -> None:
    """Write via a temporary file in the same folder, fsync, rename: readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, mode)  # mkstemp makes 0600; results are meant to be shared and attached
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: object) -> None:
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n")


def _take_lock(handle: IO[str]) -> bool:
    """Take the exclusive lock on an open file without waiting; False where another holds it."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def lock_held(path: Path) -> bool:
    """Whether someone (another process, or another thread through its own open file) holds
    `file_lock(path)` right now; asking takes and gives back the lock at once."""
    try:
        with open(path, "a") as handle:
            if not _take_lock(handle):
                return True
            fcntl.flock(handle, fcntl.LOCK_UN)
            return False
    except FileNotFoundError:
        return False


@contextmanager
def file_lock(path: Path, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """An exclusive lock on `path`, across threads (each takes its own open file) and processes.

    Waiting polls, so a stop signal (Ctrl-C, SIGTERM) ends the wait at once; `on_wait` is called
    once when the lock is held by someone else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        waited = False
        while not _take_lock(handle):
            if not waited and on_wait is not None:
                on_wait()
            waited = True
            interrupt.check()
            time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
