"""In a container: records its pid, whether the network and the root file system can be reached or written."""

from __future__ import annotations

import hashlib
import json
import os
import socket
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


def attempt(action: str) -> str:
    try:
        if action == "connect":
            socket.create_connection(("1.1.1.1", 53), timeout=5).close()
        else:
            socket.getaddrinfo("example.com", 443)
    except OSError as exc:
        return f"failed: {exc}"
    return "succeeded"


def root_read_only() -> bool:
    flags = [
        line.split()[3].split(",")
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if line.split()[1] == "/"
    ]
    return bool(flags) and "ro" in flags[-1]


def writable() -> list[str]:
    found = []
    for place in ("/", "/etc", "/usr", "/opt/venv", "/var/tmp", "/scenario"):
        probe = Path(place) / "fault-write-probe"
        try:
            probe.write_text("x", encoding="utf-8")
        except OSError:
            continue
        found.append(place)
        probe.unlink()
    return found


def main() -> None:
    metrics: dict[str, object] = {
        "pid": os.getpid(),
        "connect": attempt("connect"),
        "resolve": attempt("resolve"),
        "root_read_only": root_read_only(),
        "writable": writable(),
    }
    write_document(metrics=metrics)
    sys.exit(0)


if __name__ == "__main__":
    main()
