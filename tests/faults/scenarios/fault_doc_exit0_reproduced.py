"""Writes a valid document that says reproduced, then exits 0 (they disagree)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import write_document


def main() -> None:
    write_document(__file__, "reproduced")
    sys.exit(0)


if __name__ == "__main__":
    main()
