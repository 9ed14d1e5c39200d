"""tfbisect installed as a package (not editable), as pipx or `uv tool install` would: the built-in
scenario is found from any folder, and a run writes nothing into the package or the checkout.
The lookup order itself is a quick test; the install is slow (it builds and installs a wheel)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tfbisect.core import scenario

from conftest import ROOT, empty_locks


def test_lookup_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """./scenarios first, then the checkout's scenarios/, then the copy installed with the package."""
    monkeypatch.delenv("TFBISECT_SCENARIOS", raising=False)
    shipped = tmp_path / "prefix" / "share" / "tfbisect" / "scenarios"
    shipped.mkdir(parents=True)
    (shipped / "gradient_mismatch.py").write_text("# shipped\n")
    (shipped / "only_shipped.py").write_text("# shipped\n")
    monkeypatch.setattr(scenario, "shipped_dirs", lambda: [shipped])
    work = tmp_path / "work"
    (work / "scenarios").mkdir(parents=True)
    (work / "scenarios" / "mine.py").write_text("# mine\n")
    monkeypatch.chdir(work)
    assert scenario.search_path() == [work / "scenarios", ROOT / "scenarios", shipped]
    assert scenario.find("mine").path == (work / "scenarios" / "mine.py").resolve()
    assert scenario.find("gradient_mismatch").path == (ROOT / "scenarios" / "gradient_mismatch.py").resolve()
    assert scenario.find("only_shipped").path == (shipped / "only_shipped.py").resolve()
    assert {"mine", "gradient_mismatch", "only_shipped"} <= set(scenario.available())
    (work / "scenarios" / "gradient_mismatch.py").write_text("# a user's own copy comes first\n")
    assert scenario.find("gradient_mismatch").path == (work / "scenarios" / "gradient_mismatch.py").resolve()


def test_the_wheel_ships_the_scenarios() -> None:
    text = (ROOT / "pyproject.toml").read_text()
    assert '"share/tfbisect/scenarios" = ["scenarios/*.py"]' in text
    assert scenario.shipped_dirs()[0] == Path(sys.prefix) / "share" / "tfbisect" / "scenarios"


@pytest.mark.slow
@pytest.mark.network
def test_installed_package_runs_the_builtin_scenario_from_an_empty_folder(tmp_path: Path) -> None:
    # Built from a copy of the tracked files: a build in the checkout would leave build/ and
    # bisect/tfbisect.egg-info behind.
    source = tmp_path / "source"
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, source / name)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", "-q", str(source)], check=True, timeout=900)
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TFBISECT_SCENARIOS")}
    # Header-only locks: the run's venv gets no TensorFlow, so the built-in scenario answers
    # "skip: TensorFlow cannot be imported here", which proves it was found and ran.
    env["TFBISECT_LOCKS"] = str(empty_locks(tmp_path / "locks", ("2.21.0",)))
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    argv = ["run", "--tf", "2.21.0", "--python", "3.11", "--backend", "venv", "--timeout", "300"]
    tfbisect = [
        str(venv / "bin" / "tfbisect"),
        "--reports",
        str(tmp_path / "r"),
        "--cache",
        str(tmp_path / "c"),
    ]
    done = subprocess.run(
        [*tfbisect, *argv], cwd=empty, env=env, capture_output=True, text=True, timeout=900, check=False
    )
    assert "There is no scenario" not in done.stderr, done.stderr
    assert done.returncode == 125, done.stdout + done.stderr
    assert "TensorFlow cannot be imported here" in done.stdout + done.stderr
    assert list(empty.iterdir()) == []
    installed = venv / "share" / "tfbisect" / "scenarios" / "gradient_mismatch.py"
    assert installed.read_bytes() == (ROOT / "scenarios" / "gradient_mismatch.py").read_bytes()
