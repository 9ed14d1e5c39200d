"""Prints terminal escape sequences (also as probe and verdict lines) and puts them in its document."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import document, output_path

# Terminal escapes: set the window title, clear the screen, colour, a C1 CSI, backspaces.
EVIL = "\x1b]0;pwned\x07\x1b[2J\x1b[31mred\u009b1m\x08\x08"


def main() -> None:
    print("plain " + EVIL, flush=True)
    print("probe fault: " + EVIL, flush=True)
    print("verdict: " + EVIL, flush=True)
    print("stderr " + EVIL, file=sys.stderr, flush=True)
    evil = document(__file__, summary="summary " + EVIL, metrics={"evil": EVIL})
    evil["probes"] = [
        {
            "name": "fault",
            "kind": "fault " + EVIL,
            "outcome": "match",
            "summary": "probe " + EVIL,
            "metrics": {"evil": EVIL},
            "duration_s": 0.0,
        }
    ]
    output_path().write_text(json.dumps(evil), encoding="utf-8")
    sys.exit(0)


if __name__ == "__main__":
    main()
