"""`process.run_logged` against a log file that cannot be written: the run is never stalled."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tfbisect.core import priority
from tfbisect.platform.process import run_logged

# About 10 MB of output, far more than a pipe holds: a reader that stops blocks the child.
LOUD = "import sys\nfor i in range(200000):\n    sys.stdout.write('line %d %s\\n' % (i, 'x' * 40))\nprint('the end')\n"


def test_a_log_on_a_full_disk_never_stalls_the_run_and_says_why() -> None:
    """/dev/full fails every write with the kernel's own ENOSPC: the child's output is still read
    to the end (it exits at once, not at its timeout), its tail is kept, and the caller learns
    why the log is missing."""
    done = run_logged([sys.executable, "-c", LOUD], log_path=Path("/dev/full"), timeout=20)
    assert done.exit_code == 0 and not done.timed_out
    assert done.seconds < 15, "the pipe was drained while the log could not be written"
    assert done.log_error is not None
    assert "/dev/full" in done.log_error and "ENOSPC" in done.log_error
    assert done.log_tail.endswith("the end")


def test_a_log_that_is_written_reports_no_error(tmp_path: Path) -> None:
    log = tmp_path / "run.log"
    done = run_logged([sys.executable, "-c", LOUD], log_path=log, timeout=60)
    assert done.exit_code == 0 and done.log_error is None
    text = log.read_text()
    assert text.startswith("$ ") and text.rstrip().endswith("the end") and "bytes of output cut here" in text


def test_work_ahead_the_search_moves_past_is_killed_at_once(tmp_path: Path) -> None:
    """A process started by a preparation or a run ahead of its round (core/priority.py) dies
    when the search drops it, instead of taking a core until it ends."""
    urgency = priority.Urgency()
    threading.Timer(0.5, urgency.drop).start()
    start = time.monotonic()
    with priority.ahead(urgency):
        done = run_logged(["sleep", "30"], log_path=tmp_path / "ahead.log", timeout=60)
    assert time.monotonic() - start < 10
    assert done.exit_code is not None and done.exit_code < 0 and not done.timed_out


def test_a_hurried_preparation_is_never_killed(tmp_path: Path) -> None:
    """One the search waits for (hurried) outlives a drop: it is the round's own now."""
    urgency = priority.Urgency()
    urgency.hurry()
    threading.Timer(0.2, urgency.drop).start()
    with priority.ahead(urgency):
        done = run_logged(["sh", "-c", "sleep 1; exit 3"], log_path=tmp_path / "ahead.log", timeout=60)
    assert done.exit_code == 3


def _a_new_session_gets_an_autogroup() -> bool:
    """Whether a process in a session of its own is in a scheduler autogroup here (the kernel has
    them): its /proc/self/autogroup names one."""
    try:
        shown = subprocess.run(
            ["setsid", "cat", "/proc/self/autogroup"], capture_output=True, text=True, timeout=30, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return bool(shown.split())


def _own_autogroup_nice() -> str:
    """The niceness of this process's autogroup.  A process never in a session of its own (a
    container's first process and its children) is in the root group, whose file reads empty:
    the kernel ranks it as niceness 0."""
    shown = Path("/proc/self/autogroup").read_text().split()
    return shown[-1] if shown else "0"


@pytest.mark.skipif(not _a_new_session_gets_an_autogroup(), reason="this kernel has no scheduler autogroups")
def test_a_tree_started_ahead_yields_in_its_session_s_autogroup_until_hurried(tmp_path: Path) -> None:
    """A child runs in a session of its own, so in an autogroup of its own: the group, not only
    the child, gets the niced thread's niceness (else the child takes half a core from the run
    the search waits for), and the process's own back when a run comes to wait for it."""
    urgency = priority.Urgency()
    seen: list[str] = []
    script = "sleep 0.4; cut -d' ' -f3 /proc/self/autogroup; sleep 1.2; cut -d' ' -f3 /proc/self/autogroup"

    def ahead_of_need() -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        with priority.ahead(urgency):
            done = run_logged(["sh", "-c", script], log_path=tmp_path / "ahead.log", timeout=30)
        seen.extend(done.log_tail.split())

    thread = threading.Thread(target=ahead_of_need)
    thread.start()
    time.sleep(0.9)
    urgency.hurry()
    thread.join(30)
    own = _own_autogroup_nice()
    assert seen[0] == "10", "the session's autogroup is niced like the thread that started it"
    assert seen[1] == own, "hurried: the group has the process's niceness back (anyone may set 0 or more)"
