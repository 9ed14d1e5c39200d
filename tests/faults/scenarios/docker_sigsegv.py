"""In a container: writes a valid document, then kills itself with SIGSEGV."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from pathlib import Path


def write_document() -> None:
    """A valid "not reproduced" document naming this file's sha256, where `--output` says."""
    here = Path(__file__)
    document = {
        "schema_version": 1,
        "scenario": {"name": here.stem, "sha256": hashlib.sha256(here.read_bytes()).hexdigest()},
        "environment": {"python": sys.version.split()[0]},
        "probes": [],
        "verdict": {"outcome": "not_reproduced", "summary": "fault table", "disagreements": []},
        "timings": {"total_s": 0.0},
    }
    with open(sys.argv[sys.argv.index("--output") + 1], "w", encoding="utf-8") as handle:
        json.dump(document, handle)


def main() -> None:
    write_document()
    os.kill(os.getpid(), signal.SIGSEGV)
    time.sleep(10)
    sys.exit(0)


if __name__ == "__main__":
    main()
