"""A real bisection of the flagship scenario over real TF releases in venvs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tfbisect.search.bisectlog import Status, load_report

from conftest import cli

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def bisect(reports: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return cli(reports, "bisect", *args)


def test_finds_where_the_eager_plain_gradient_went_wrong(tmp_path: Path) -> None:
    """TF 2.3 computes the eager step right; TF 2.4 taught Keras to reuse the softmax's logits,
    and the plain loss's eager gradient has been off ever since."""
    args = ("--good", "2.3.0", "--bad", "2.4.1", "--probe", "gradient_eager_plain", "--jobs", "2")
    done = bisect(tmp_path, *args)
    assert done.returncode == 0, done.stdout + done.stderr
    [log] = (tmp_path / "bisect").glob("*.json")
    report = load_report(log)
    assert report.status is Status.FOUND
    assert (report.last_old, report.first_new) == ("2.3.4", "2.4.0")
    assert report.old_state == "match" and report.new_state == "mismatch"
    assert report.compare_url == "https://github.com/tensorflow/tensorflow/compare/v2.3.4...v2.4.0"
    assert (report.git_versions["2.4.0"] or "").startswith("v2.4.0")
    assert report.runs <= 5  # ceil(log2 7) + 2
    assert "first bad:  2.4.0" in done.stdout and "== round 1: 2.3.0, 2.4.1" in done.stderr

    again = bisect(tmp_path, *args)
    assert again.returncode == 0
    logs = sorted((tmp_path / "bisect").glob("*.json"), key=lambda p: p.stat().st_mtime)
    repeat = load_report(logs[-1])
    assert repeat.runs == 0 and repeat.reused == report.runs + report.reused  # no builds, no runs
    assert "installing" not in again.stderr
    assert (repeat.last_old, repeat.first_new) == ("2.3.4", "2.4.0")

    log_text = subprocess.run(
        [sys.executable, "-m", "tfbisect", "--reports", str(tmp_path), "bisect", "log", str(log)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "2.4.0      bad" in log_text and "2.3.4      good" in log_text
