"""Leaves a marked child holding its stdout and exits 0 at once with a valid document."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import marked, write_document


def main() -> None:
    subprocess.Popen(marked())
    write_document(__file__)
    sys.exit(0)


if __name__ == "__main__":
    main()
