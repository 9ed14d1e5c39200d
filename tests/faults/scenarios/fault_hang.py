"""Starts a marked child, says it started, and hangs (sleeps 600 s)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import marked, started


def main() -> None:
    subprocess.Popen(marked())
    started()
    time.sleep(600)


if __name__ == "__main__":
    main()
