"""Writes a valid document of 17 MiB (over the 16 MiB cap), and exits 0."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import write_document


def main() -> None:
    write_document(__file__, summary="a" * (17 * 1024 * 1024))
    sys.exit(0)


if __name__ == "__main__":
    main()
