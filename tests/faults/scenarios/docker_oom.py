"""In a container: allocates (and touches) 1 GiB, far over TFBISECT_MEMORY=128m."""

from __future__ import annotations

import sys


def main() -> None:
    print("allocating 1 GiB", flush=True)
    block = b"x" * (1 << 30)
    print(f"allocated {len(block)} bytes", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
