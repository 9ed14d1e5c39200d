"""Prints 200 MB on one line (HEAD-MARK ... TAIL-MARK; FAULT_BYTES overrides), then a valid document, exit 0."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import write_document


def main() -> None:
    size = int(os.environ.get("FAULT_BYTES", str(200 * 1000 * 1000)))
    out = sys.stdout.buffer
    out.write(b"HEAD-MARK")
    chunk = b"x" * (1 << 20)
    written = 0
    while written < size:
        out.write(chunk)
        written += len(chunk)
    out.write(b"TAIL-MARK\n")
    out.flush()
    write_document(__file__)
    sys.exit(0)


if __name__ == "__main__":
    main()
