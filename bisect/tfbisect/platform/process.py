"""Running a child process with a hard time limit, a bounded log on disk and live lines for progress.

The child is untrusted (a scenario, or a build that runs third-party code), so:
- its whole process tree dies when the run ends, by timeout, by interrupt or on its own.
  Children run in a session of their own; the driver is a child subreaper (Linux), so a
  descendant that double-forks and calls setsid is re-parented to us instead of init; and the
  tree is watched while it runs (session, parentage and a per-run marker in the environment),
  so what escaped the session is still known and killed;
- the driver never waits on a pipe an orphan holds: output is read with a deadline;
- output is bounded wherever it is kept: the log file keeps its head and its tail, the tail
  kept for the record is capped in bytes and per line, and one endless line costs nothing;
- nothing outlives the driver: each child gets SIGKILL when the driver's thread that started it
  dies (PR_SET_PDEATHSIG, also on `kill -9` of the driver), and each run is noted in a state
  file (`runs_dir`) that the next command reads to kill what a killed driver's runs left behind;
- a machine fault (`abandon`) ends every run at once, and a run killed that way is never a result.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tfbisect.core import interrupt, jsonread, priority
from tfbisect.core.errors import MachineFaultError
from tfbisect.core.limits import (
    LOG_FILE_HEAD_BYTES,
    LOG_FILE_TAIL_BYTES,
    LOG_LINE_MAX_BYTES,
    LOG_TAIL_MAX_BYTES,
    PIPE_GRACE_SECONDS,
)

MARKER_VARIABLE = "TFBISECT_RUN_ID"
_WATCH_INTERVAL = 0.2
_PR_SET_CHILD_SUBREAPER = 36
_PR_SET_PDEATHSIG = 1
_NOTE_MAX_BYTES = 64 * 1024  # a run note is four short fields: anything larger is not one

_ACTIVE: dict[int, _Tree] = {}
# Reentrant: the stop handler (kill_all) runs in the main thread, which may hold it already.
_ACTIVE_LOCK = threading.RLock()
_SUBREAPER: list[bool] = []
# Set by `abandon` (a machine fault ends the command): no new run starts, and a run in progress is
# killed and raises the fault instead of being reported as finished.
_ABANDONED: list[MachineFaultError] = []


@dataclass(frozen=True)
class Finished:
    exit_code: int | None  # negative: killed by that signal; None: timed out
    timed_out: bool
    log_tail: str
    seconds: float
    leftovers: int = 0  # processes the child left running, killed when it ended
    # Why the log file could not be written (a full or read-only disk, an I/O error); its output
    # was still read to the end, and `log_tail` still holds its tail.  None: the log is whole.
    log_error: str | None = None


def _ahead_of_need(tree: _Tree) -> Callable[[], None]:
    """A tree started ahead of need (core/priority.py) gets its niceness on its autogroup too,
    is killed when dropped, and given the process's niceness back when hurried (its processes'
    where lowering it is allowed); what forgets both."""
    urgency = priority.current()
    if urgency is None:
        return lambda: None
    own = os.getpriority(os.PRIO_PROCESS, os.getpid())
    with contextlib.suppress(OSError):
        _set_autogroup_nice(tree.leader, os.getpriority(os.PRIO_PROCESS, tree.leader))
    forget_drop = urgency.on_drop(tree.kill_group)

    def hurry() -> None:
        # The group first: anyone may set it back to 0 or more; the processes' own niceness
        # only with the privilege to lower it (each apart: one failing leaves the other done).
        _set_autogroup_nice(tree.leader, _autogroup_nice(os.getpid()))
        os.setpriority(os.PRIO_PGRP, tree.leader, own)

    forget_hurry = urgency.on_hurry(hurry)

    def forget() -> None:
        forget_drop()
        forget_hurry()

    return forget


# A child in a session of its own is in a scheduler autogroup of its own (Linux's
# CONFIG_SCHED_AUTOGROUP, on where /proc/sys/kernel/sched_autogroup_enabled says 1): its niceness
# ranks it only inside that group, and the groups share the CPU by the group's niceness.  So a
# tree started ahead of need gets its niceness on its group too, or it takes a core's half from
# the run the search waits for (measured: a niced busy loop in a session of its own got 98 % of
# what a normal one beside it got, and 1.4 % once its group had the same niceness).
def _autogroup_nice(pid: int) -> int:
    """The niceness of the autogroup `pid` is in (0 where the kernel has none)."""
    try:
        return int(Path(f"/proc/{pid}/autogroup").read_text().split()[-1])
    except (OSError, ValueError, IndexError):
        return 0


def _set_autogroup_nice(pid: int, niceness: int) -> None:
    """Give the autogroup of `pid` (the whole session of a tree) this niceness.  Anyone may set
    0 or more; the kernel refuses a second write within 0.1 s machine-wide (EAGAIN) without
    CAP_SYS_ADMIN, so that one is tried again; a group that has it already is left alone.
    Without autogroups nothing changes."""
    if _autogroup_nice(pid) == niceness:
        return
    for _ in range(4):
        try:
            Path(f"/proc/{pid}/autogroup").write_text(f"{niceness}\n")
            return
        except OSError as exc:
            if exc.errno != errno.EAGAIN:
                return
            time.sleep(0.11)


def kill_all() -> None:
    """Kill every running child tree (a stop signal arrived)."""
    with _ACTIVE_LOCK:
        trees = list(_ACTIVE.values())
    for tree in trees:
        tree.kill_group()


interrupt.on_stop(kill_all)


def abandon(fault: MachineFaultError) -> None:
    """The machine failed and the command ends: every run in progress is killed, and each one
    (and any that would start) raises `fault` instead of being reported as finished."""
    if not _ABANDONED:
        _ABANDONED.append(fault)
    kill_all()


def reset_abandoned() -> None:
    """Forget an `abandon` (tests that call `main` more than once in one process)."""
    _ABANDONED.clear()


def _check_abandoned() -> None:
    if _ABANDONED:
        raise _ABANDONED[0]


# -- runs that outlive a killed driver ------------------------------------------------------


def runs_dir() -> Path:
    """Where each live run is noted: a file per run, removed when it ends.  Under the temporary
    folder, per user: a driver killed with SIGKILL leaves its files for the next one to read."""
    return Path(tempfile.gettempdir()) / f"tfbisect-runs-{os.getuid()}"


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode("ascii", "replace")
        return int(stat[stat.rfind(")") + 2 :].split()[19])
    except (OSError, IndexError, ValueError):
        return None


def _note_run(tree: _Tree) -> Path | None:
    """A state file naming this driver and the run's leader and marker (None when it cannot be
    written: tracking is a safety net, never a reason to fail a run)."""
    me = os.getpid()
    note = {
        "driver": me,
        "driver_start": _start_time(me),
        "leader": tree.leader,
        "marker": tree.marker.decode(),
    }
    path = runs_dir() / f"{me}-{tree.leader}.json"
    for _ in range(2):  # another driver may remove the empty folder between the two steps
        try:
            path.parent.mkdir(mode=0o700, exist_ok=True)
            path.write_text(json.dumps(note), encoding="utf-8")
        except FileNotFoundError:
            continue
        except OSError:
            return None
        return path
    return None


def _forget_run(path: Path) -> None:
    """The run's state file removed, and its folder when no other run is noted there."""
    with contextlib.suppress(OSError):
        path.unlink()
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # fails while another run's note is there, as it should


def reap_orphans() -> int:
    """Kill what the runs of a driver that died (SIGKILL, OOM) left running; returns how many
    processes were killed.  Called when a command starts; the state file of each dead driver goes."""
    killed = 0
    try:
        notes = sorted(runs_dir().glob("*.json"))
    except OSError:
        return 0
    for path in notes:
        try:
            note = jsonread.read(path, max_bytes=_NOTE_MAX_BYTES)
            driver, start, marker = int(note["driver"]), note["driver_start"], str(note["marker"])
        except (OSError, ValueError, RecursionError, KeyError, TypeError):
            path.unlink(missing_ok=True)
            continue
        if start is not None and _start_time(driver) == start:
            continue  # its driver still runs (another command): its runs are its own
        needle = marker.encode()
        for pid in _processes():
            if pid != os.getpid() and _has_marker(pid, needle):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                    killed += 1
        _forget_run(path)
    return killed


def temporary_prefix(kind: str) -> str:
    """The name prefix of a temporary folder of this driver's (`tfbisect-KIND-PID.START-`): a
    later command knows by it whether the driver that made it is gone (`sweep_temporary`)."""
    me = os.getpid()
    return f"tfbisect-{kind}-{me}.{_start_time(me)}-"


def _live_driver(name: str) -> bool:
    """Whether the folder `name` (made with `temporary_prefix`) belongs to a driver still running."""
    try:
        pid_text, start_text = name.split("-")[2].split(".")
        pid = int(pid_text)
    except (IndexError, ValueError):
        return True  # not a name of ours: never touched
    if start_text == "None":
        return True
    return _start_time(pid) == int(start_text) if start_text.isdigit() else True


def sweep_temporary() -> int:
    """Remove the temporary folders that drivers killed before they could clean up left behind;
    returns how many went."""
    removed = 0
    try:
        found = [p for p in Path(tempfile.gettempdir()).glob("tfbisect-*-*.*-*") if p.is_dir()]
    except OSError:
        return 0
    for folder in found:
        if not folder.is_symlink() and not _live_driver(folder.name):
            shutil.rmtree(folder, ignore_errors=True)
            removed += 1
    return removed


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec function that makes the child get SIGKILL when the thread that started it dies
    (the driver killed with SIGKILL included), resolved here: after fork only a plain call runs."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the driver died before the line above: die now too
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _become_subreaper() -> None:
    """Orphans of our children come to us, not to init, so that they can be found and killed."""
    if _SUBREAPER:
        return
    _SUBREAPER.append(True)
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)


@dataclass(frozen=True)
class _Proc:
    ppid: int
    sid: int
    start: int  # start time in clock ticks: tells a process from a later one with its pid
    zombie: bool


def _processes() -> dict[int, _Proc]:
    table = {}
    for entry in os.listdir("/proc"):  # noqa: PTH208 (names only, thousands of times a run)
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as handle:
                stat = handle.read().decode("ascii", "replace")
        except OSError:
            continue
        # The command name is in parentheses and may itself contain spaces or parentheses.
        fields = stat[stat.rfind(")") + 2 :].split()
        with contextlib.suppress(IndexError, ValueError):
            table[int(entry)] = _Proc(
                ppid=int(fields[1]), sid=int(fields[3]), start=int(fields[19]), zombie=fields[0] in "ZX"
            )
    return table


def _has_marker(pid: int, marker: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as handle:
            return marker in handle.read()
    except OSError:
        return False


class _Tree:
    """Every process that belonged to one run: its session, its descendants, its marker."""

    def __init__(self, process: subprocess.Popen[bytes], marker: str) -> None:
        self.process = process
        self.leader = process.pid
        self.marker = f"{MARKER_VARIABLE}={marker}".encode()
        self.known: dict[int, int] = {}  # pid -> start time
        self.lock = threading.Lock()

    def scan(self, table: dict[int, _Proc] | None = None) -> dict[int, _Proc]:
        table = table if table is not None else _processes()
        me = os.getpid()
        my_session = os.getsid(0)
        with _ACTIVE_LOCK:
            leaders = set(_ACTIVE)
        with self.lock:
            if self.leader in table:
                self.known.setdefault(self.leader, table[self.leader].start)
            grew = True
            while grew:
                grew = False
                for pid, proc in table.items():
                    if pid in self.known or pid == me:
                        continue
                    # An orphan re-parented to us that left our session and is no run's leader
                    # escaped some run (it may have cleared its environment too): the driver's own
                    # helpers (docker, uv, tar) stay in the driver's session.
                    escaped = proc.ppid == me and proc.sid != my_session and pid not in leaders
                    ours = (
                        proc.sid == self.leader
                        or proc.ppid in self.known
                        or (proc.ppid == me and _has_marker(pid, self.marker))
                        or escaped
                    )
                    if ours:
                        self.known[pid] = proc.start
                        grew = True
        return table

    def alive(self, table: dict[int, _Proc]) -> list[int]:
        with _ACTIVE_LOCK:
            others = set(_ACTIVE) - {self.leader}  # another run's leader is never ours to kill
        with self.lock:
            return [
                pid
                for pid, start in self.known.items()
                if pid in table and table[pid].start == start and not table[pid].zombie and pid not in others
            ]

    def kill_group(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.leader, signal.SIGKILL)

    def kill_everything(self) -> int:
        """Kill the tree until nothing of it is left; returns how many were killed after the leader."""
        self.kill_group()
        killed: set[int] = set()
        me = os.getpid()
        for _ in range(100):
            table = self.scan()
            alive = [pid for pid in self.alive(table) if pid != me]
            self._reap(table)
            if not alive:
                break
            for pid in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                if pid != self.leader:
                    killed.add(pid)
            time.sleep(0.02)
        self._reap(_processes())
        return len(killed)

    def _reap(self, table: dict[int, _Proc]) -> None:
        """Collect the exit status of orphans re-parented to us (never the leader: Popen waits for it)."""
        me = os.getpid()
        with _ACTIVE_LOCK:
            leaders = set(_ACTIVE)  # each run waits for its own leader: never reap one here
        with self.lock:
            mine = [pid for pid in self.known if pid != self.leader and pid not in leaders]
        for pid in mine:
            proc = table.get(pid)
            if proc is not None and proc.ppid == me and proc.zombie:
                with contextlib.suppress(ChildProcessError, OSError):
                    os.waitpid(pid, os.WNOHANG)


class _Output:
    """The child's merged output: a bounded log file, a bounded tail, and complete lines.

    A log file that cannot be written (ENOSPC, EROFS, EIO) is closed and given up, never the
    output: it is still read to the end (a child must not block on a full pipe) and its tail
    still kept, and `log_error` says why the log is not whole."""

    def __init__(self, log: BinaryIO, on_line: Callable[[str], None] | None) -> None:
        self.log = log
        self.on_line = on_line
        self.log_error: str | None = None
        self.written = 0
        self.cut = 0
        self.tail_buffer = bytearray()
        self.lines: deque[bytes] = deque()
        self.lines_bytes = 0
        self.partial = bytearray()
        self.partial_cut = 0

    def feed(self, chunk: bytes) -> None:
        self._to_log(chunk)
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            piece = chunk[start:] if end < 0 else chunk[start:end]
            room = LOG_LINE_MAX_BYTES - len(self.partial)
            if room > 0:
                self.partial += piece[:room]
            self.partial_cut += max(0, len(piece) - max(room, 0))
            if end < 0:
                return
            self._end_line()
            start = end + 1

    def _to_log(self, chunk: bytes) -> None:
        head_room = LOG_FILE_HEAD_BYTES - self.written
        if head_room > 0:
            self.write(chunk[:head_room])
            self.written += min(len(chunk), head_room)
            chunk = chunk[head_room:]
        if chunk:
            self.tail_buffer += chunk
            if len(self.tail_buffer) > LOG_FILE_TAIL_BYTES:
                drop = len(self.tail_buffer) - LOG_FILE_TAIL_BYTES
                del self.tail_buffer[:drop]
                self.cut += drop

    def _end_line(self) -> None:
        line = bytes(self.partial)
        if self.partial_cut:
            line += f" … [{self.partial_cut} bytes of this line cut by tfbisect]".encode()
        self.partial.clear()
        self.partial_cut = 0
        self.lines.append(line)
        self.lines_bytes += len(line) + 1
        while self.lines_bytes > LOG_TAIL_MAX_BYTES and len(self.lines) > 1:
            self.lines_bytes -= len(self.lines.popleft()) + 1
        if self.on_line is not None:
            self.on_line(line.decode("utf-8", "replace"))

    def write(self, data: bytes) -> None:
        """Bytes to the log file as they are (and flushed, so that a log can be followed)."""
        if self.log_error is not None:
            return
        try:
            self.log.write(data)
            self.log.flush()
        except OSError as exc:
            code = errno.errorcode.get(exc.errno or 0, str(exc.errno))
            self.log_error = (
                f"cannot write the log {getattr(self.log, 'name', '?')}: {exc.strerror or exc} ({code})"
            )
            # Closed now (what its buffer still holds is lost with the disk's room), so that
            # closing it again at the end neither fails nor writes.
            with contextlib.suppress(OSError):
                self.log.close()

    def close(self) -> str:
        if self.partial or self.partial_cut:
            self._end_line()
        if self.cut:
            self.write(
                f"\n[tfbisect: {self.cut} bytes of output cut here; the log keeps its first "
                f"{LOG_FILE_HEAD_BYTES} and last {LOG_FILE_TAIL_BYTES} bytes]\n".encode()
            )
        self.write(bytes(self.tail_buffer))
        return b"\n".join(self.lines).decode("utf-8", "replace")


def run_logged(
    command: Sequence[str],
    *,
    log_path: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> Finished:
    """Run `command`, teeing its merged output to `log_path`; kill its whole tree when it ends.

    Returns within `timeout` plus a few seconds whatever the child does (or the log's disk: a
    log that cannot be written is given up, and `Finished.log_error` says why).  A stop signal
    kills the tree and raises `interrupt.Interrupted`: a killed run is never reported as finished.
    """
    interrupt.check()
    _check_abandoned()
    _become_subreaper()
    start = time.monotonic()
    log_path.parent.mkdir(parents=True, exist_ok=True)
    child_env = dict(env if env is not None else os.environ)
    child_env[MARKER_VARIABLE] = uuid.uuid4().hex
    with open(log_path, "wb") as log:
        output = _Output(log, on_line)
        output.write(("$ " + " ".join(command) + "\n").encode("utf-8", "replace"))
        process, tree, blocked = _start(command, child_env, cwd)
        noted = _note_run(tree)
        # Work ahead of need (an install, a run ahead of its round) that the search moves past
        # is killed at once: the CPU goes to what the search waits for (core/priority.py).
        forget = _ahead_of_need(tree)
        assert process.stdout is not None
        pump = _Pump(process.stdout.fileno(), output)
        try:
            timed_out, leftovers = _watch(process, tree, start + timeout, blocked)
        finally:
            forget()
            with _ACTIVE_LOCK:
                _ACTIVE.pop(process.pid, None)
            if noted is not None:
                _forget_run(noted)
            # Everything of the tree is dead, so the pipe is closed unless something we could
            # not see holds it: wait a little, never for ever.
            drained = pump.finish()
            if drained:
                process.stdout.close()
            tail = output.close() if drained else ""
    code = None if timed_out else process.returncode
    return Finished(
        exit_code=code,
        timed_out=timed_out,
        log_tail=tail,
        seconds=time.monotonic() - start,
        leftovers=leftovers,
        log_error=output.log_error,
    )


def _start(
    command: Sequence[str], child_env: dict[str, str], cwd: Path | None
) -> tuple[subprocess.Popen[bytes], _Tree, set[int]]:
    """The child started in a session of its own and registered as a tree to kill; with the
    stop signals still held (`interrupt.hold`'s token), for `_watch` to release."""
    # A stop signal between the start of the child and its registration would leave it
    # running unseen: the signals wait (blocked) until the kill is armed.
    blocked = interrupt.hold()
    try:
        # Started and registered under the lock that scans read the leaders under: another
        # run's scan never sees this child unregistered and takes it for an escaped process.
        with _ACTIVE_LOCK:
            process = subprocess.Popen(
                list(command),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=child_env,
                cwd=cwd,
                start_new_session=True,  # its own session and process group
                preexec_fn=_DIE_WITH_PARENT,
            )
            tree = _Tree(process, child_env[MARKER_VARIABLE])
            _ACTIVE[process.pid] = tree
    except BaseException:
        interrupt.release(blocked)
        raise
    return process, tree, blocked


def _watch(
    process: subprocess.Popen[bytes], tree: _Tree, deadline: float, blocked: set[int]
) -> tuple[bool, int]:
    """Watch the tree until the child ends, the deadline passes or a stop signal comes, then
    kill what is left of it: (timed out, how many processes it left running)."""
    timed_out = False
    try:
        interrupt.release(blocked)  # a signal that came meanwhile is handled here, with the kill armed
        while process.poll() is None and not interrupt.stopping() and not _ABANDONED:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                timed_out = True
                break
            tree.scan()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=min(_WATCH_INTERVAL, remaining))
        tree.scan()
        leftovers = tree.kill_everything()
        process.wait()
        if interrupt.stopping():
            raise interrupt.current()
        _check_abandoned()  # killed because the machine failed: no result
    except BaseException:
        tree.kill_everything()
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        raise
    return timed_out, leftovers


_DIE_WITH_PARENT = _die_with_parent()


class _Pump:
    """The child's output read into `output` on a thread of its own, which a pipe that an
    unseen process still holds never keeps alive for long."""

    def __init__(self, fd: int, output: _Output) -> None:
        self.done = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=_pump, args=(fd, output, self.stop, self.done), daemon=True)
        self.thread.start()

    def finish(self) -> bool:
        """Wait a little for the end of the output, then stop reading; True when the reader
        has ended (its output may be closed), False when it still hangs on the pipe."""
        self.done.wait(timeout=PIPE_GRACE_SECONDS)
        self.stop.set()
        self.thread.join(timeout=PIPE_GRACE_SECONDS)
        return not self.thread.is_alive()


def _pump(fd: int, output: _Output, stop: threading.Event, done: threading.Event) -> None:
    try:
        while not stop.is_set():
            ready, _, _ = select.select([fd], [], [], 0.2)
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return
            output.feed(chunk)
    except (OSError, ValueError):
        return
    finally:
        done.set()
