"""A plain script's PEP 723 dependencies: locked together with TF's own requirement as of the
release's date (a real, offline `uv pip compile` against a local folder of tiny wheels), a lock
of their own in the user's cache, a skip naming the dependency that cannot be resolved, and the
harness's report of the versions it found installed."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_cache import make_wheel
from tfbisect.core.catalogue import load_snapshot
from tfbisect.core.errors import LockError
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.scenario import find_script, harness_path
from tfbisect.core.spec import EnvSpec
from tfbisect.envs import locks
from tfbisect.report.show import record_text
from tfbisect.runs.runner import Runner, Settings

from conftest import recorded

CAT = load_snapshot()
SPEC = locks.LockSpec("2.7.0", "3.9")
SCRIPT = """\
# /// script
# dependencies = ["TinyPkg>=1", "missingpkg"]
# ///
import tinypkg
assert tinypkg.VALUE == 1
"""


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """uv resolves from a local folder only (no index, no network), and locks go to a cache here."""
    links = tmp_path / "links"
    make_wheel(links, "tensorflow_cpu", "2.7.0")  # TF's own requirement, as a tiny stand-in
    make_wheel(links, "tinypkg", "1.0")
    make_wheel(links, "tinypkg", "2.0")
    monkeypatch.delenv("TFBISECT_LOCKS", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("UV_NO_INDEX", "1")
    monkeypatch.setenv("UV_OFFLINE", "1")
    monkeypatch.setenv("UV_FIND_LINKS", str(links))
    monkeypatch.setenv("UV_CACHE_DIR", str(tmp_path / "uv-cache"))
    return tmp_path / "xdg" / "tfbisect" / "locks"


def test_the_dependency_set_is_normalized_and_named_by_its_hash() -> None:
    assert locks.normalized_dependencies(("Tiny_Pkg >= 1.0", "scipy", "tiny-pkg>=1.0")) == (
        "scipy",
        "tiny-pkg>=1.0",
    )
    name = locks.dependencies_filename(SPEC, ("scipy", "Tiny_Pkg>=1.0"))
    assert name == locks.dependencies_filename(SPEC, ("tiny-pkg >= 1.0", "scipy"))
    assert name.startswith("tf2.7.0-py3.9-cpu+deps-") and name.endswith(".txt")
    assert len(name.removeprefix("tf2.7.0-py3.9-cpu+deps-").removesuffix(".txt")) == 8
    assert name != locks.dependencies_filename(SPEC, ("scipy",))


def test_tf_and_the_dependencies_resolve_together_as_of_the_release_date(offline: Path) -> None:
    lock = locks.compile_lock(SPEC, CAT, None, dependencies=("TinyPkg<2",))
    assert lock.path == offline / locks.dependencies_filename(SPEC, ("tinypkg<2",))
    text = lock.path.read_text(encoding="utf-8")
    assert "tensorflow-cpu==2.7.0" in text and "tinypkg==1.0" in text and "tinypkg==2.0" not in text
    assert '# script-dependencies: ["tinypkg<2"]' in text
    assert lock.requirements == ("tensorflow-cpu==2.7.0",)  # the requirements line stays TF's own
    _, cutoff = locks.top_level_requirements(SPEC, CAT)
    assert lock.exclude_newer == cutoff  # the same date as the release's own lock
    assert locks.load_with_dependencies(SPEC, ("tinypkg<2",)).path == lock.path
    assert not (offline / SPEC.filename).exists()  # the release's own lock is another file


def test_a_dependency_that_cannot_be_resolved_is_named(offline: Path) -> None:
    with pytest.raises(LockError) as caught:
        locks.compile_lock(SPEC, CAT, None, dependencies=("tinypkg", "missingpkg>=3"))
    first = caught.value.what.splitlines()[0]
    assert "missingpkg>=3" in first and "tinypkg" not in first and "TF 2.7.0" in first
    assert "missingpkg" in caught.value.what.partition("\n")[2]  # uv's own reason follows


def test_a_run_whose_dependency_cannot_be_resolved_is_a_skip(
    offline: Path, tmp_path: Path, reports: Path
) -> None:
    script = tmp_path / "repro.py"
    script.write_text(SCRIPT)
    scenario = find_script(str(script))
    assert scenario.dependencies == ("TinyPkg>=1", "missingpkg")
    runner = Runner(
        CAT, Settings(reports_dir=reports, cache_dir=reports / "cache"), Progress(quiet=True), have={}
    )
    result = runner.run(EnvSpec("2.7.0", "3.9", backend="venv"), scenario)
    assert result.record.outcome is Outcome.SKIP and result.record.infrastructure
    assert "missingpkg" in result.record.verdict_summary.splitlines()[0]
    assert not (reports / "cache" / "venvs").exists()  # nothing was installed


def test_the_harness_reports_the_installed_version_of_each_dependency(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "tinypkg-1.5.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.5\n")
    script = tmp_path / "repro.py"
    script.write_text(SCRIPT)
    scenario = find_script(str(script))
    arguments = scenario.arguments(str(script), str(harness_path()))
    assert arguments[arguments.index("--dependency") :].count("--dependency") == 2
    output = tmp_path / "result.json"
    subprocess.run(
        [sys.executable, *arguments, "--output", str(output)],
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        check=False,
        timeout=120,
    )
    document = json.loads(output.read_text())
    assert document["script"]["dependencies"] == {"TinyPkg": "1.5", "missingpkg": None}
    record = dataclasses.replace(recorded("tf2.21.0"), document=document)  # as `show` prints it
    assert "  dependencies   TinyPkg 1.5, missingpkg not installed" in record_text(record)
