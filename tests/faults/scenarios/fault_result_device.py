"""Leaves result.json as a character device node (/dev/zero's numbers; needs root), and exits 0."""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import output_path


def main() -> None:
    os.mknod(output_path(), 0o644 | stat.S_IFCHR, os.makedev(1, 5))
    sys.exit(0)


if __name__ == "__main__":
    main()
