"""The well-behaved scenario: a valid document and the matching exit (verdict from FAULT_VERDICT)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _valid import EXIT, write_document


def main() -> None:
    print("fault-scenario-ran", flush=True)
    outcome = os.environ.get("FAULT_VERDICT", "not_reproduced")
    write_document(__file__, outcome)
    sys.exit(EXIT[outcome])


if __name__ == "__main__":
    main()
