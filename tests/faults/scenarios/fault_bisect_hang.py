"""Not reproduced on TF 2.20.0, reproduced on 2.21.0, where it hangs while FAULT_HANG_FLAG exists."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import EXIT, marked, started, write_document


def version() -> str:
    """The venv's lock names the TF version: the empty venvs install nothing else to ask."""
    return "2.21.0" if "tf2.21.0" in sys.prefix else "2.20.0"


def main() -> None:
    here = version()
    counter = os.environ.get("FAULT_COUNTER")
    if counter:
        with open(counter, "a", encoding="utf-8") as handle:
            handle.write(here + "\n")
    flag = os.environ.get("FAULT_HANG_FLAG")
    if here == "2.21.0" and flag and Path(flag).exists():
        subprocess.Popen(marked())
        started()
        time.sleep(600)
    outcome = "reproduced" if here == "2.21.0" else "not_reproduced"
    write_document(__file__, outcome)
    sys.exit(EXIT[outcome])


if __name__ == "__main__":
    main()
