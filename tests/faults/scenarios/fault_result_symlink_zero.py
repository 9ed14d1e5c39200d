"""Leaves result.json as a symlink to /dev/zero (endless), and exits 0."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import output_path


def main() -> None:
    output_path().symlink_to("/dev/zero")
    sys.exit(0)


if __name__ == "__main__":
    main()
