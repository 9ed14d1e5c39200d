"""Every exit code tfbisect has, and the error tree: each class has its code and a two-part
message (what happened, then what to do).  The README's exit-code table lists the same codes;
a test keeps the two in step and the codes unique."""

from __future__ import annotations

import enum
import errno
import signal


@enum.unique
class ExitCode(enum.IntEnum):
    # `tfbisect run` speaks `git bisect run`'s language, so it can drive `git bisect run` itself.
    NOT_REPRODUCED = 0  # good
    REPRODUCED = 1  # bad
    SKIP = 125  # cannot be tested here
    ERROR = 70  # the scenario crashed or wrote an invalid result: never good or bad
    TIMEOUT = 124  # the scenario did not finish in --timeout
    # Failures of tfbisect's own work, one code each.
    USAGE = 2
    UNKNOWN_VERSION = 3
    NO_INTERPRETER = 4
    SCENARIO = 5
    STORE = 6
    LOCK = 7
    CATALOGUE = 8
    INSTALL = 9
    BACKEND_UNAVAILABLE = 10
    POST = 11
    DOCKER = 12
    TRACE = 13
    NARROW = 14
    # The machine under tfbisect failed (a full or read-only disk, an I/O error, a vanished
    # engine): never a verdict nor a skip of the version being prepared; resume once it is fixed.
    MACHINE = 15
    # Stopped by a signal: 128 + its number, as shells report it.
    SIGHUP = 128 + signal.SIGHUP
    SIGINT = 128 + signal.SIGINT
    SIGTERM = 128 + signal.SIGTERM


class TfbisectError(Exception):
    """Base of every error the CLI reports without a traceback."""

    exit_code: int = ExitCode.USAGE

    def __init__(self, what: str, todo: str) -> None:
        super().__init__(what)
        self.what = what
        self.todo = todo

    def __str__(self) -> str:
        return f"{self.what}\n  What to do: {self.todo}"


class UsageError(TfbisectError):
    exit_code = ExitCode.USAGE


class UnknownVersionError(TfbisectError):
    exit_code = ExitCode.UNKNOWN_VERSION


class NoInterpreterError(TfbisectError):
    exit_code = ExitCode.NO_INTERPRETER


class ScenarioError(TfbisectError):
    exit_code = ExitCode.SCENARIO


class StoreError(TfbisectError):
    exit_code = ExitCode.STORE


class LockError(TfbisectError):
    exit_code = ExitCode.LOCK


class CatalogueError(TfbisectError):
    exit_code = ExitCode.CATALOGUE


class EnvironmentBuildError(TfbisectError):
    """Installing a version failed: for a search this is a skip, never good or bad."""

    exit_code = ExitCode.INSTALL


class BackendUnavailableError(TfbisectError):
    exit_code = ExitCode.BACKEND_UNAVAILABLE


class PostError(TfbisectError):
    """Posting the summary to GitHub failed (the report files are kept)."""

    exit_code = ExitCode.POST


class DockerError(TfbisectError):
    """The Docker engine refused or failed a call."""

    exit_code = ExitCode.DOCKER


class TraceError(TfbisectError):
    """A traced run of one probe (the narrowing's step 4) could not run or wrote no usable trace."""

    exit_code = ExitCode.TRACE


class NarrowError(TfbisectError):
    """A bisection log cannot be narrowed (no single change point, unreadable, another scenario)."""

    exit_code = ExitCode.NARROW


class MachineFaultError(TfbisectError):
    """The machine failed under tfbisect (ENOSPC, EROFS, EIO, EDQUOT, ENOMEM; a vanished engine or
    a killed builder): no version is judged by it; finished results and logs are kept."""

    exit_code = ExitCode.MACHINE


# The errnos of a failing machine: nothing a scenario or a TF version did, and nothing that a
# retry of the same command fixes before someone frees space or mends the disk.
MACHINE_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT, errno.ENOMEM})
# The same faults as another tool (pip, uv, docker, a node's engine) writes them into its log.
MACHINE_TEXTS = (
    "no space left on device",
    "read-only file system",
    "input/output error",
    "disk quota exceeded",
    "cannot allocate memory",
)
MACHINE_TODO = (
    "free space on that disk (`df -h` shows which; `tfbisect cache prune` frees tfbisect's own "
    "environments), or make it writable again, then resume: finished results are reused."
)


def machine_fault_of(exc: BaseException) -> MachineFaultError | None:
    """A machine fault for an OSError of the machine's (its errno one of MACHINE_ERRNOS), naming
    the path it concerned; None for any other error."""
    if isinstance(exc, MachineFaultError):
        return exc
    if not isinstance(exc, OSError) or exc.errno not in MACHINE_ERRNOS:
        return None
    where = exc.filename if exc.filename is not None else "a file of tfbisect's"
    name = errno.errorcode.get(exc.errno, str(exc.errno))
    return MachineFaultError(
        f"the machine failed: cannot write {where}: {exc.strerror or exc} ({name})", MACHINE_TODO
    )


def machine_fault_in(text: str, what: str) -> MachineFaultError | None:
    """A machine fault when a failed tool's output (`text`) says the machine failed under it (a
    full disk while `pip wheel` or an image pull ran); `what` says which work it was."""
    lowered = text.lower()
    for sign in MACHINE_TEXTS:
        at = lowered.find(sign)
        if at >= 0:
            line_start = text.rfind("\n", 0, at) + 1
            line_end = text.find("\n", at)
            line = text[line_start : line_end if line_end >= 0 else len(text)].strip()[:300]
            return MachineFaultError(f"the machine failed while {what}: {line}", MACHINE_TODO)
    return None


def as_machine_fault(exc: OSError | MachineFaultError) -> MachineFaultError:
    """`machine_fault_of`, and for any other OSError under tfbisect's own files (EACCES, ENOENT)
    a machine fault too: a failing file system is never a verdict, nor a traceback."""
    if isinstance(exc, MachineFaultError):
        return exc
    fault = machine_fault_of(exc)
    if fault is not None:
        return fault
    where = exc.filename if exc.filename is not None else "a file of tfbisect's"
    return MachineFaultError(f"the machine failed: {where}: {exc.strerror or exc}", MACHINE_TODO)
