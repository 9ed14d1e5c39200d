"""Writes a result that is not JSON (Python's repr of a dict, cut short) and exits 1."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import output_path


def main() -> None:
    output_path().write_text("{'verdict': 'reproduced'", encoding="utf-8")
    sys.exit(1)


if __name__ == "__main__":
    main()
