"""What the venv fault scenarios share: the driver's output path, a valid document, marked children.

Not a scenario (the leading underscore keeps it out of the list).  A scenario imports it after
putting its own folder first on `sys.path`, and passes its `__file__`: the document names the
scenario's file and its sha256, never this one's.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

EXIT = {"not_reproduced": 0, "reproduced": 1, "skip": 125}


def output_path() -> Path:
    """Where the driver wants the document (`--output FILE`)."""
    return Path(sys.argv[sys.argv.index("--output") + 1])


def document(
    scenario: str,
    outcome: str = "not_reproduced",
    summary: str = "fault table",
    metrics: dict[str, object] | None = None,
) -> dict[str, object]:
    """A document that validates against result.schema.json and names `scenario`'s sha256."""
    path = Path(scenario)
    return {
        "schema_version": 1,
        "scenario": {"name": path.stem, "sha256": hashlib.sha256(path.read_bytes()).hexdigest()},
        "environment": {"python": sys.version.split()[0]},
        "probes": [
            {
                "name": "fault",
                "kind": "fault",
                "outcome": "match",
                "summary": "fault table",
                "metrics": metrics or {},
                "duration_s": 0.0,
            }
        ],
        "verdict": {"outcome": outcome, "summary": summary, "disagreements": []},
        "timings": {"total_s": 0.0},
    }


def write_document(
    scenario: str,
    outcome: str = "not_reproduced",
    summary: str = "fault table",
    metrics: dict[str, object] | None = None,
) -> None:
    """`document(...)` written to the output path."""
    output_path().write_text(json.dumps(document(scenario, outcome, summary, metrics)), encoding="utf-8")


def marked(code: str = "import time; time.sleep(600)") -> list[str]:
    """A child's command line carrying the table's marker, so that the table finds survivors."""
    marker = os.environ.get("FAULT_MARKER", "tfbisect-fault-docker")
    return [sys.executable, "-c", f"MARKER={marker!r}; {code}"]


def started() -> None:
    """Tell the table that the scenario runs: a line on stdout and the file named by FAULT_STARTED."""
    print("fault-scenario-started", flush=True)
    flag = os.environ.get("FAULT_STARTED")
    if flag:
        Path(flag).touch()
