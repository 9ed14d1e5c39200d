from __future__ import annotations

import configparser
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tfbisect import toxini
from tfbisect.core import catalogue
from tfbisect.core.errors import LockError
from tfbisect.core.spec import Flavour, KerasVariant
from tfbisect.envs import locks

ROOT = Path(__file__).resolve().parents[1]
CAT = catalogue.load_snapshot()


def test_cutoff_is_release_upload_plus_grace() -> None:
    requirements, cutoff = locks.top_level_requirements(locks.LockSpec("2.2.0", "3.8"), CAT)
    assert requirements == ["tensorflow-cpu==2.2.0"]
    assert cutoff.startswith("2020-05-21")  # uploaded 2020-05-07, 14 days of grace


def test_legacy_keras_pins_tf_keras_and_waits_for_it() -> None:
    requirements, cutoff = locks.top_level_requirements(
        locks.LockSpec("2.21.0", "3.11", keras=KerasVariant.LEGACY), CAT
    )
    assert requirements == ["tensorflow-cpu==2.21.0", "tf-keras==2.21.0"]
    # tf-keras 2.21.0 shipped twelve days after TF 2.21.0: the cutoff follows the later one.
    assert cutoff > "2026-04-01"


def test_legacy_keras_before_2_16_is_refused() -> None:
    with pytest.raises(LockError, match=r"TF_USE_LEGACY_KERAS applies to TF 2\.16"):
        locks.top_level_requirements(locks.LockSpec("2.10.1", "3.10", keras=KerasVariant.LEGACY), CAT)


def test_cuda_flavour_uses_and_cuda_extra_from_2_14() -> None:
    requirements, _ = locks.top_level_requirements(locks.LockSpec("2.15.1", "3.11", Flavour.CUDA), CAT)
    assert requirements == ["tensorflow[and-cuda]==2.15.1"]


def test_nightly_lock_pins_tf_nightly_as_of_its_day() -> None:
    requirements, cutoff = locks.top_level_requirements(locks.LockSpec("2.23.0.dev20261012", "3.12"), CAT)
    assert requirements == ["tf-nightly==2.23.0.dev20261012"]
    # uploaded 2026-10-12T20:40:59Z: half a day of grace, not the two weeks of a release
    assert cutoff == "2026-10-13T08:40:59Z"
    requirements, _ = locks.top_level_requirements(
        locks.LockSpec("2.23.0.dev20261012", "3.12", Flavour.CUDA), CAT
    )
    assert requirements == ["tf-nightly[and-cuda]==2.23.0.dev20261012"]


def test_rc_lock_keeps_the_release_grace() -> None:
    requirements, cutoff = locks.top_level_requirements(locks.LockSpec("2.13.0rc1", "3.11"), CAT)
    assert requirements == ["tensorflow-cpu==2.13.0rc1"]
    assert cutoff == "2023-06-13T17:45:07Z"  # uploaded 2023-05-30T17:45:07Z + 14 days


def test_nightly_with_tf_keras_is_refused() -> None:
    with pytest.raises(LockError, match="tf-keras-nightly") as info:
        locks.top_level_requirements(
            locks.LockSpec("2.23.0.dev20261012", "3.12", keras=KerasVariant.LEGACY), CAT
        )
    assert "drop the tf-keras variant" in info.value.todo


@pytest.mark.parametrize(
    ("version", "python", "strategy"),
    [("2.23.0.dev20261012", "3.12", True), ("2.13.0rc1", "3.11", True), ("2.13.1", "3.11", False)],
)
def test_prerelease_strategy_only_for_prerelease_tf(
    version: str, python: str, strategy: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """uv's pre-release strategy is pinned for RCs and nightlies (whose dependencies are
    pre-releases); final-release locks keep the command their committed locks came from."""
    monkeypatch.setenv("TFBISECT_LOCKS", str(tmp_path))
    seen: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        seen.append(command)
        return subprocess.CompletedProcess(
            command, 0, stdout="six==1.17.0 \\\n    --hash=sha256:00\n", stderr=""
        )

    monkeypatch.setattr(subprocess, "run", fake_run)
    lock = locks.compile_lock(locks.LockSpec(version, python), CAT, None)
    assert lock.path.parent == tmp_path
    (command,) = seen
    assert ("--prerelease" in command) is strategy
    if strategy:
        assert command[command.index("--prerelease") + 1] == "if-necessary-or-explicit"


def test_preferred_python_is_newest_with_wheels() -> None:
    assert locks.preferred_python(CAT.resolve("2.2")) == "3.8"
    assert locks.preferred_python(CAT.resolve("2.21")) == "3.13"
    assert locks.preferred_python(CAT.resolve("2.21"), have={"3.11", "3.8"}) == "3.11"


def test_missing_lock_says_how_to_make_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFBISECT_LOCKS", str(tmp_path))
    with pytest.raises(LockError) as info:
        locks.load(locks.LockSpec("2.2.3", "3.7"))
    assert "tfbisect lock --tf 2.2.3 --python 3.7" in info.value.todo


def test_hand_written_lock_is_rejected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFBISECT_LOCKS", str(tmp_path))
    (tmp_path / "tf2.2.3-py3.8-cpu.txt").write_text("tensorflow-cpu==2.2.3\n")
    with pytest.raises(LockError, match="not written by `tfbisect lock`"):
        locks.load(locks.LockSpec("2.2.3", "3.8"))


COMMITTED = sorted(locks.locks_dir().glob("tf*.txt"))  # the CUDA sets: test_cudasets.py
NAME = re.compile(r"^tf(?P<tf>[^-]+)-py(?P<py>3\.\d+)-(?P<flavour>cpu|cuda)(?P<legacy>-tfkeras)?\.txt$")


def test_every_final_release_has_a_committed_lock() -> None:
    names = {p.name for p in COMMITTED}
    for release in CAT.releases():
        spec = locks.LockSpec(release.version, locks.preferred_python(release))
        assert spec.filename in names, f"no lock for {release.version}: run `tfbisect lock --missing`"


@pytest.mark.parametrize("path", COMMITTED, ids=[p.name for p in COMMITTED])
def test_committed_lock_is_consistent(path: Path) -> None:
    match = NAME.match(path.name)
    assert match, path.name
    spec = locks.LockSpec(
        match["tf"],
        match["py"],
        Flavour(match["flavour"]),
        KerasVariant.LEGACY if match["legacy"] else KerasVariant.DEFAULT,
    )
    lock = locks.load(spec)
    requirements, cutoff = locks.top_level_requirements(spec, CAT)
    assert list(lock.requirements) == requirements
    assert lock.exclude_newer == cutoff
    text = path.read_text()
    for requirement in requirements:
        name, version = requirement.replace("[and-cuda]", "").split("==")
        assert re.search(rf"^{re.escape(name)}=={re.escape(version)} \\$", text, re.M), requirement
    # every pin carries hashes, so pip and uv install exactly what was resolved
    pins = re.findall(r"^\S+==\S+", text, re.M)
    assert pins and text.count("--hash=sha256:") >= len(pins)


def test_known_breakages_are_locked_out() -> None:
    """numpy 2 breaks TF 2.7-2.11 and 2.14.0; protobuf 4 breaks 2.0-2.5."""

    def pin(version: str, python: str, name: str) -> str:
        text = locks.load(locks.LockSpec(version, python)).path.read_text()
        found = re.search(rf"^{name}==(\S+)", text, re.M)
        assert found, f"{name} not pinned for {version}"
        return found.group(1)

    for version, python in [("2.7.4", "3.9"), ("2.11.1", "3.10"), ("2.14.0", "3.11")]:
        assert pin(version, python, "numpy").startswith("1."), version
    for version, python in [("2.0.4", "3.7"), ("2.5.3", "3.9")]:
        assert pin(version, python, "protobuf").startswith("3."), version


def test_tox_ini_matches_the_catalogue() -> None:
    text = (ROOT / "tox.ini").read_text()
    assert toxini.render(CAT) in text, "tox.ini is stale: paste the output of `tfbisect tox-ini`"
    assert f"env_list = {toxini.env_list(CAT)}" in text


def test_each_tox_line_names_one_release_its_lock_and_its_python() -> None:
    """Per factor, tox.ini's release, lock and interpreter agree (and the command uses them)."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(ROOT / "tox.ini")
    testenv = parser["testenv"]

    def by_factor(key: str) -> dict[str, str]:
        rows = [line.split(":", 1) for line in testenv[key].strip().splitlines()]
        return {factor.strip(): value.strip() for factor, value in rows}

    releases, deps, pythons = by_factor(toxini.RELEASE_KEY), by_factor("deps"), by_factor("base_python")
    expected = toxini.line_envs(CAT)
    assert list(releases) == list(deps) == list(pythons) == [factor for factor, _, _ in expected]
    for factor, version, python in expected:
        assert releases[factor] == version
        assert pythons[factor] == f"python{python}"
        lock = locks.LockSpec(version, python)
        assert deps[factor] == f"-r bisect/tfbisect/data/locks/{lock.filename}"
        assert (ROOT / deps[factor].removeprefix("-r ")).is_file(), factor
    command = " ".join(testenv["commands"].replace("\\\n", " ").split())
    assert command.startswith("tfbisect --reports {env:TFBISECT_TOX_REPORTS:{toxinidir}/reports} run ")
    for part in ("--tf {[testenv]tf_release}", "--interpreter {envpython}", "--via tox"):
        assert part in command
    assert "tfbisect" in testenv["allowlist_externals"].split()
