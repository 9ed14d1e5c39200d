"""Leaves result.json as a FIFO that nobody ever writes (a reader would block), and exits 0."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import output_path


def main() -> None:
    os.mkfifo(output_path())
    sys.exit(0)


if __name__ == "__main__":
    main()
