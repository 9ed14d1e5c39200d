"""Writes a document with a byte that is not UTF-8 at byte offset 1010 (0-based), and exits 0."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import document, output_path

# {"note": "  is 10 bytes, then 1000 letters: the bad byte is at offset 1010.
PREFIX = b'{"note": "' + b"a" * 1000


def main() -> None:
    rest = json.dumps(document(__file__)).encode("utf-8")
    output_path().write_bytes(PREFIX + b"\xff" + b'", ' + rest[1:])
    sys.exit(0)


if __name__ == "__main__":
    main()
