"""Writes a valid document whose verdict summary is 10 MB long, and exits 0."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import write_document


def main() -> None:
    write_document(__file__, summary="s" * 10_000_000)
    sys.exit(0)


if __name__ == "__main__":
    main()
