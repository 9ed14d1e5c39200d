"""Double-forks a daemon (setsid) that keeps stdout/stderr open and sleeps; then hangs, or exits 0 if FAULT_MAIN=exit."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import marked, started, write_document


def daemonize() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    first = os.fork()
    if first == 0:
        os.setsid()
        if os.fork() == 0:
            argv = marked()
            os.execv(argv[0], argv)  # stdout and stderr stay open: the pipe never closes
        os._exit(0)
    os.waitpid(first, 0)


def main() -> None:
    daemonize()
    started()
    if os.environ.get("FAULT_MAIN") == "exit":
        write_document(__file__)
        sys.exit(0)
    time.sleep(600)


if __name__ == "__main__":
    main()
