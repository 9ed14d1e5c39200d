"""Writes a valid document naming another file's sha256, and exits 0."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import document, output_path


def main() -> None:
    wrong = document(__file__)
    wrong["scenario"] = {"name": Path(__file__).stem, "sha256": "0" * 64}
    output_path().write_text(json.dumps(wrong), encoding="utf-8")
    sys.exit(0)


if __name__ == "__main__":
    main()
