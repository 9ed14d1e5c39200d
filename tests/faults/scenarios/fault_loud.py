"""Prints 6 MB of output, then writes a valid document: fills a small `reports/` with its log."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import EXIT, write_document


def main() -> None:
    for _ in range(60000):
        sys.stdout.write("x" * 100 + "\n")
    sys.stdout.flush()
    write_document(__file__, "not_reproduced")
    sys.exit(EXIT["not_reproduced"])


if __name__ == "__main__":
    main()
