"""In a container: exits 125 without a document (a scenario's own "cannot test", not Docker's)."""

from __future__ import annotations

import sys

if __name__ == "__main__":
    print("giving up", flush=True)
    sys.exit(125)
