"""Writes JSON that breaks the schema (no verdict, a probe with bad fields), and exits 0."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import document, output_path


def main() -> None:
    broken = document(__file__)
    del broken["verdict"]
    broken["probes"] = [
        {
            "name": "Not A Name!",
            "kind": "fault",
            "outcome": "maybe",
            "summary": 1,
            "metrics": {},
            "duration_s": -1,
        }
    ]
    output_path().write_text(json.dumps(broken), encoding="utf-8")
    sys.exit(0)


if __name__ == "__main__":
    main()
