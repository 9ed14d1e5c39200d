"""Writes a document with 200000 nested lists (a recursive parser overflows), and exits 0."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import document, output_path


def main() -> None:
    deep = '{"deep": ' + "[" * 200_000 + "]" * 200_000 + ", "
    output_path().write_text(deep + json.dumps(document(__file__))[1:], encoding="utf-8")
    sys.exit(0)


if __name__ == "__main__":
    main()
