"""Appends a line to the file FAULT_COUNTER, sleeps FAULT_SLEEP seconds (3), writes a valid document."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import write_document


def main() -> None:
    counter = os.environ.get("FAULT_COUNTER")
    if counter:
        with open(counter, "a", encoding="utf-8") as handle:
            handle.write(f"{os.getpid()}\n")
    print("fault-scenario-ran", flush=True)
    time.sleep(float(os.environ.get("FAULT_SLEEP", "3")))
    write_document(__file__)
    sys.exit(0)


if __name__ == "__main__":
    main()
