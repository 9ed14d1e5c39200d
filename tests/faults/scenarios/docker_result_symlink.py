"""In a container: leaves result.json as a symlink to /tmp/tfbisect-fault-secret.json (a host path), exits 0."""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> None:
    Path(sys.argv[sys.argv.index("--output") + 1]).symlink_to("/tmp/tfbisect-fault-secret.json")
    sys.exit(0)


if __name__ == "__main__":
    main()
