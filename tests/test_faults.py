"""The fault table (tests/faults/table.py) must pass whole: every case, and no leak of any kind."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TABLE = ROOT / "tests" / "faults" / "table.py"
TOTALS = re.compile(
    r"^faults: cases (?P<cases>\d+), passed (?P<passed>\d+), containers leaked (?P<containers>\d+), "
    r"processes leaked (?P<processes>\d+), temporary folders leaked (?P<tmp>\d+), "
    r"results lost (?P<lost>\d+), secrets leaked (?P<secrets>\d+)$"
)

pytestmark = [pytest.mark.slow]


def run_table(*args: str) -> None:
    done = subprocess.run(
        [sys.executable, str(TABLE), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=3600,
    )
    lines = done.stdout.splitlines()
    failing = [line for line in lines if line.startswith("FAIL")]
    totals = [match for line in lines if (match := TOTALS.match(line))]
    shown = "\n".join(failing) or done.stderr[-3000:]
    assert totals, f"no totals line (exit {done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    counts = {name: int(value) for name, value in totals[-1].groupdict().items()}
    assert counts["cases"] > 0, "the table ran no case"
    assert counts["passed"] == counts["cases"], f"{totals[-1].group(0)}\n{shown}"
    leaks = {k: v for k, v in counts.items() if k not in ("cases", "passed") and v}
    assert not leaks, f"{totals[-1].group(0)}\n{shown}"
    assert done.returncode == 0, f"exit {done.returncode}\n{totals[-1].group(0)}\n{shown}"


def test_fault_table_without_docker() -> None:
    run_table("--no-docker")


@pytest.mark.docker
def test_fault_table_docker_cases() -> None:
    run_table("--only", "docker/")
