"""Writes a document whose metrics hold NaN and Infinity (not JSON, but Python reads them), and exits 0."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import document, output_path


def main() -> None:
    text = json.dumps(
        document(__file__, metrics={"nan": float("nan"), "inf": float("inf"), "minus_inf": float("-inf")})
    )
    output_path().write_text(text, encoding="utf-8")
    sys.exit(0)


if __name__ == "__main__":
    main()
