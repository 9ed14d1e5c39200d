"""Running a child process with a timeout, a full log on disk and live lines for progress."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TAIL_LINES = 60
# Children run in process groups of their own (so a timeout can kill all of a run), which
# also keeps the terminal's Ctrl-C from reaching them: `kill_all` stops them on interrupt.
_ACTIVE: set[subprocess.Popen[str]] = set()
_ACTIVE_LOCK = threading.Lock()


def kill_all() -> None:
    with _ACTIVE_LOCK:
        running = list(_ACTIVE)
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)


@dataclass(frozen=True)
class Finished:
    exit_code: int | None
    timed_out: bool
    log_tail: str
    seconds: float


def run_logged(
    command: Sequence[str],
    *,
    log_path: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    on_line: Callable[[str], None] | None = None,
) -> Finished:
    """Run `command`, teeing its merged output to `log_path`; kill its whole process group on timeout.

    A Ctrl-C kills the child's group too before it propagates, so no orphan keeps running.
    """
    import time

    log_path.parent.mkdir(parents=True, exist_ok=True)
    tail: deque[str] = deque(maxlen=TAIL_LINES)
    start = time.monotonic()
    with open(log_path, "w", encoding="utf-8", errors="replace") as log:
        log.write("$ " + " ".join(command) + "\n")
        log.flush()
        process = subprocess.Popen(
            list(command),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            text=True,
            errors="replace",
            start_new_session=True,  # its own process group, so a timeout can kill all of it
        )

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                log.flush()
                tail.append(line.rstrip("\n"))
                if on_line is not None:
                    on_line(line.rstrip("\n"))

        with _ACTIVE_LOCK:
            _ACTIVE.add(process)
        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(process)
        except BaseException:
            _kill_group(process)
            raise
        finally:
            with _ACTIVE_LOCK:
                _ACTIVE.discard(process)
            reader.join(timeout=10)
            if process.stdout is not None:
                process.stdout.close()
    code = None if timed_out else process.returncode
    return Finished(
        exit_code=code, timed_out=timed_out, log_tail="\n".join(tail), seconds=time.monotonic() - start
    )


def _kill_group(process: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it may have ended on its own meanwhile
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
