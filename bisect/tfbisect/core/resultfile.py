"""Reading the result document a scenario left in its output folder, which is hostile input.

Only a regular file is read: never through a symlink, never a FIFO (which would block), a
device, a socket or a folder; never more than the size cap.  Anything else is a `Failure`
that says what was found, so the run is recorded as `error` with that reason.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from tfbisect.core.limits import RESULT_MAX_BYTES
from tfbisect.core.record import Failure

_KINDS = (
    (stat.S_ISLNK, "a symbolic link"),
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _kind(mode: int) -> str:
    for test, name in _KINDS:
        if test(mode):
            return name
    return "not a regular file"


def _unsafe(found: str) -> Failure:
    return Failure(
        "UnsafeResult",
        f"the result document is {found}, not a regular file; tfbisect does not open it",
    )


def read_result(folder: Path, name: str = "result.json") -> tuple[bytes | None, Failure | None]:
    """The document's bytes, `(None, None)` when there is none, or `(None, why not)`."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError as exc:
        return None, Failure("UnsafeResult", f"the output folder cannot be opened safely: {exc.strerror}")
    try:
        try:
            before = os.lstat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            return None, None
        if not stat.S_ISREG(before.st_mode):
            return None, _unsafe(_kind(before.st_mode))
        if before.st_size > RESULT_MAX_BYTES:
            return None, _too_large(before.st_size)
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY, dir_fd=dir_fd)
        except OSError as exc:  # swapped for a link or a FIFO since the lstat: ELOOP, ENXIO …
            return None, Failure(
                "UnsafeResult", f"the result document changed while it was opened ({exc.strerror})"
            )
        try:
            after = os.fstat(fd)
            if not stat.S_ISREG(after.st_mode) or (after.st_dev, after.st_ino) != (
                before.st_dev,
                before.st_ino,
            ):
                return None, _unsafe(_kind(after.st_mode) + " (swapped in while it was opened)")
            chunks = []
            total = 0
            while True:
                chunk = os.read(fd, 1 << 20)
                if not chunk:
                    break
                total += len(chunk)
                if total > RESULT_MAX_BYTES:  # it grew after the fstat
                    return None, _too_large(total)
                chunks.append(chunk)
            return b"".join(chunks), None
        finally:
            os.close(fd)
    finally:
        with contextlib.suppress(OSError):
            os.close(dir_fd)


def _too_large(size: int) -> Failure:
    return Failure(
        "InvalidResult",
        f"the result document is larger than the {RESULT_MAX_BYTES // (1024 * 1024)} MiB cap "
        f"({size} bytes); tfbisect does not read it",
    )
