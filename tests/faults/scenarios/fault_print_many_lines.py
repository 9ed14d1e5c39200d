"""Prints three million short lines (HEAD-MARK first, TAIL-MARK last), then a valid document, exit 0."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import write_document


def main() -> None:
    out = sys.stdout.buffer
    out.write(b"HEAD-MARK\n")
    for start in range(0, 3_000_000, 10_000):
        out.write("".join(f"line {n}\n" for n in range(start, start + 10_000)).encode())
    out.write(b"TAIL-MARK\n")
    out.flush()
    write_document(__file__)
    sys.exit(0)


if __name__ == "__main__":
    main()
