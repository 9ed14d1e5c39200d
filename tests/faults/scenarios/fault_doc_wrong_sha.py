"""Writes a valid document naming another file's sha256, and exits 0."""

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
    outcome: str = "not_reproduced", summary: str = "fault table", metrics: dict[str, object] | None = None
) -> dict[str, object]:
    """A document that validates against result.schema.json and names this file's sha256."""
    return {
        "schema_version": 1,
        "scenario": {
            "name": Path(__file__).stem,
            "sha256": hashlib.sha256(Path(__file__).read_bytes()).hexdigest(),
        },
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
    outcome: str = "not_reproduced", summary: str = "fault table", metrics: dict[str, object] | None = None
) -> None:
    output_path().write_text(json.dumps(document(outcome, summary, metrics)), encoding="utf-8")


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


def main() -> None:
    wrong = document()
    wrong["scenario"] = {"name": Path(__file__).stem, "sha256": "0" * 64}
    output_path().write_text(json.dumps(wrong), encoding="utf-8")
    sys.exit(0)


if __name__ == "__main__":
    main()
