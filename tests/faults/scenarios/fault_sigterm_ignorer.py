"""Starts a marked child that ignores SIGTERM, ignores it too, and hangs."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import marked, started


def main() -> None:
    subprocess.Popen(
        marked("import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)")
    )
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    started()
    time.sleep(600)


if __name__ == "__main__":
    main()
