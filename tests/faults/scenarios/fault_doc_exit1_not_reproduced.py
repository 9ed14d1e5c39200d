"""Writes a valid document that says not reproduced, then exits 1 (they disagree)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import write_document


def main() -> None:
    write_document(__file__, "not_reproduced")
    sys.exit(1)


if __name__ == "__main__":
    main()
