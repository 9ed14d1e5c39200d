"""Real narrowings below releases: release candidates of real TF, real tf-nightly builds traced
under sys.monitoring, in venvs (the flagship's narrowing with settrace is in test_real_bisect.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tfbisect.core.catalogue import ReleaseKind
from tfbisect.envs import index
from tfbisect.search.bisectlog import Status, load_report
from tfbisect.search.narrowlog import NarrowStatus

from conftest import cli

pytestmark = [pytest.mark.slow, pytest.mark.network]
SCENARIO = str(Path(__file__).parent / "data" / "scenarios" / "published_after.py")


def bisect(reports: Path, *args: str) -> tuple[str, str, Path]:
    done = cli(reports, "bisect", "--scenario", SCENARIO, "--backend", "venv", *args)
    assert done.returncode == 0, done.stdout + done.stderr
    [log] = (reports / "bisect").glob("*.json")
    return done.stdout, done.stderr, log


def test_a_change_in_the_first_release_candidate_is_found_below_the_releases(tmp_path: Path) -> None:
    """The scripted change comes with 2.16.0rc0, the only build between 2.15.1 and 2.16.1."""
    out, err, log = bisect(tmp_path, "--good", "2.15.1", "--bad", "2.16.1", "--python", "3.11", "--no-trace")
    report = load_report(log)
    assert report.status is Status.FOUND and (report.last_old, report.first_new) == ("2.15.1", "2.16.1")
    found = report.narrowing
    assert found is not None and found.status is NarrowStatus.NARROWED, err
    assert found.candidates == ["2.16.0rc0"] and found.runs == 1
    assert found.first_new is not None and found.first_new.kind is ReleaseKind.RC
    assert (found.first_new.version, found.first_new.ref) == ("2.16.0rc0", "v2.16.0-rc0")
    assert found.compare_url == "https://github.com/tensorflow/tensorflow/compare/v2.15.1...v2.16.0-rc0"
    names = {change.name for change in found.dependencies}
    assert "keras" in names  # 2.16 moved tf.keras to Keras 3
    assert "2.16.0rc0" in out and "v2.16.0-rc0" in out


def test_nightlies_are_bisected_by_build_date_and_traced(tmp_path: Path) -> None:
    """Three real nightlies; the scripted scenario changes with the 2026-10-18 build.  The traced
    runs go through sys.monitoring (Python 3.12+)."""
    good, bad = "2.23.0.dev20261017", "2.23.0.dev20261019"
    # The index keeps nightlies for some months only: once these are gone, pick newer ones.
    on_index = {d.version for d in index.fetch(projects=("tf-nightly",)).dists}
    if not {good, "2.23.0.dev20261018", bad} <= on_index:
        pytest.skip("the index no longer has the 2026-10-17..19 nightlies this test bisects")
    out, err, log = bisect(tmp_path, "--good", good, "--bad", bad, "--probe", "changed")
    report = load_report(log)
    found = report.narrowing
    assert found is not None and found.status is NarrowStatus.NARROWED, err
    assert found.candidates == ["2.23.0.dev20261018"]
    assert found.last_old is not None and found.first_new is not None
    assert (found.last_old.version, found.first_new.version) == (good, "2.23.0.dev20261018")
    old_ref, new_ref = found.last_old.ref, found.first_new.ref
    assert old_ref and new_ref and old_ref != new_ref  # commits from tf.version.GIT_VERSION
    assert found.compare_url == f"https://github.com/tensorflow/tensorflow/compare/{old_ref}...{new_ref}"
    trace = found.trace
    assert trace is not None and trace.error is None, trace
    assert (trace.probe, trace.passing_probe) == ("changed", "unchanged")
    assert set(trace.seconds) == {"failing_old", "failing_new", "passing_old", "passing_new"}
    assert trace.untraced_seconds and trace.diff_seconds is not None
    assert found.suspects is not None and found.suspects.files_traced > 10
    assert new_ref[:7] in out
