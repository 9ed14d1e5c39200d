"""In a container: starts a marked child, says it started, and hangs."""

from __future__ import annotations

import os
import subprocess
import sys
import time


def main() -> None:
    marker = os.environ.get("FAULT_MARKER", "tfbisect-fault-docker")
    subprocess.Popen([sys.executable, "-c", f"MARKER={marker!r}; import time; time.sleep(600)"])
    print("fault-scenario-started", flush=True)
    time.sleep(600)


if __name__ == "__main__":
    main()
