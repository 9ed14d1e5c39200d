"""A real bisection of the flagship scenario over real TF releases in venvs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tfbisect.report.findings import note_text
from tfbisect.search.bisectlog import Status, load_report
from tfbisect.search.narrowlog import NarrowStatus

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
    narrowed_below_the_releases(tmp_path, log, done.stdout)

    again = bisect(tmp_path, *args, "--no-narrow")
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
    one_worker_runs_the_next_round_ahead(tmp_path)


def one_worker_runs_the_next_round_ahead(tmp_path: Path) -> None:
    """With one worker and a core to spare, the next round's versions run ahead at low priority
    while a round runs (the venvs built above are reused, the runs are new): the rounds take
    those runs as their own, not as reuses, and the answer is the same."""
    reports = tmp_path / "one-worker"
    args = ("--good", "2.3.0", "--bad", "2.4.1", "--probe", "gradient_eager_plain", "--no-narrow")
    done = cli(reports, "bisect", *args, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stdout + done.stderr
    [log] = (reports / "bisect").glob("*.json")
    report = load_report(log)
    assert (report.last_old, report.first_new) == ("2.3.4", "2.4.0")
    assert report.reused == 0 and 0 < report.runs <= 5
    if (os.cpu_count() or 1) > 1:
        assert "ahead of its round, at low priority" in done.stderr, done.stderr
        assert "ran ahead of its round: " in done.stderr, done.stderr
    # Every run ahead is stored like a run, the ones no round took included.
    stored = {path.name for path in (reports / "results").rglob("tf*.json")}
    assert {f"tf{step.version}-py3.8-cpu-venv.json" for step in report.steps} <= stored


def narrowed_below_the_releases(reports: Path, log: Path, out: str) -> None:
    """The narrowing that follows: 2.4.0's RCs are gone from the index and nightlies start in 2026,
    so the releases stay the range; the traced probes name the change that TF 2.4 made to Keras's
    categorical_crossentropy (use the softmax's cached logits) among the top suspects."""
    report = load_report(log)
    found = report.narrowing
    assert found is not None and found.status is NarrowStatus.NOTHING_FINER
    notes = " | ".join(note_text(note) for note in found.notes)
    assert "no release candidates of 2.4.0" in notes and "nightlies on the index start at" in notes
    assert {"numpy", "flatbuffers"} <= {change.name for change in found.dependencies}
    trace = found.trace
    assert trace is not None and trace.error is None, trace
    assert (trace.probe, trace.passing_probe) == ("gradient_eager_plain", "gradient_eager_decorated")
    assert trace.untraced_seconds and max(trace.seconds.values()) < 3 * trace.untraced_seconds + 10
    assert found.suspects is not None
    top = found.suspects.suspects[:5]
    culprit = [
        s
        for s in top
        if (s.file, s.function) == ("tensorflow/python/keras/backend.py", "categorical_crossentropy")
    ]
    assert culprit and "_keras_logits" in culprit[0].excerpt, [(s.file, s.function) for s in top]
    assert (culprit[0].new_link or "").startswith(
        "https://github.com/tensorflow/tensorflow/blob/v2.4.0/tensorflow/python/keras/backend.py#L"
    )
    assert "keras/backend.py" in out and (log.with_suffix(".traces") / "failing-new-2.4.0.json").is_file()

    # Everywhere the answer goes: the report's section and the summary's details block.
    written = cli(reports, "report", "--bisect", str(log))
    assert written.returncode == 0, written.stderr
    html = (reports / "report.html").read_text()
    assert "Where it changed" in html and "_keras_logits" in html
    summary = (reports / "summary.md").read_text()
    assert "<summary>Suspect changes</summary>" in summary and "_keras_logits" in summary

    # `tfbisect narrow LOG` again, without tracing: everything it needs is stored.
    again = cli(reports, "narrow", str(log), "--no-trace")
    assert again.returncode == 0, again.stderr
    assert "installing" not in again.stderr and "no release candidates of 2.4.0" in again.stdout
