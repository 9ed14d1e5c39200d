"""Writes a valid document, then kills itself with the signal named by FAULT_SIGNAL (SIGSEGV)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import write_document


def main() -> None:
    write_document(__file__)
    number = getattr(signal, os.environ.get("FAULT_SIGNAL", "SIGSEGV"))
    os.kill(os.getpid(), number)
    time.sleep(10)
    sys.exit(0)


if __name__ == "__main__":
    main()
