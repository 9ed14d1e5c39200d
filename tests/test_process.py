"""`process.run_logged` against a log file that cannot be written: the run is never stalled."""

from __future__ import annotations

import sys
from pathlib import Path

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
