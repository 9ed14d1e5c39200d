"""Writes a valid document, then makes result.json a sparse 100 GB file, and exits 0."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import output_path, write_document


def main() -> None:
    write_document(__file__)
    with open(output_path(), "r+b") as handle:
        handle.truncate(100 * 1024**3)
    sys.exit(0)


if __name__ == "__main__":
    main()
