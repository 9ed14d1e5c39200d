"""In a container: records its pid, whether the network and the root file system can be reached or written."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import sys
from pathlib import Path


def write_document(metrics: dict[str, object]) -> None:
    """A valid "not reproduced" document naming this file's sha256, `metrics` in its one probe."""
    here = Path(__file__)
    probe = dict(
        name="fault", kind="fault", outcome="match", summary="sandbox", metrics=metrics, duration_s=0
    )
    document = {
        "schema_version": 1,
        "scenario": {"name": here.stem, "sha256": hashlib.sha256(here.read_bytes()).hexdigest()},
        "environment": {"python": sys.version.split()[0]},
        "probes": [probe],
        "verdict": {"outcome": "not_reproduced", "summary": "fault table", "disagreements": []},
        "timings": {"total_s": 0.0},
    }
    with open(sys.argv[sys.argv.index("--output") + 1], "w", encoding="utf-8") as handle:
        json.dump(document, handle)


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
    write_document(metrics)
    sys.exit(0)


if __name__ == "__main__":
    main()
