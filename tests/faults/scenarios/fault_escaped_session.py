"""Starts a marked child in a session of its own (no pipes held) and exits 0 at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import marked, write_document


def main() -> None:
    subprocess.Popen(
        marked(),
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    write_document(__file__)
    sys.exit(0)


if __name__ == "__main__":
    main()
