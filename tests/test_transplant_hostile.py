"""The transplant's runs against hostile input and a failing machine: a full disk, a timeout or the
network never stored as "not testable"; pins checked strictly and installed against their lock
hashes; stored records read bounded (a FIFO, a link, another key's record, nesting); a store that
cannot be written loses no result; the budget and the candidates bounded; the words; the copies a
killed driver left swept.  The install itself is real uv against handmade wheels (tests of the
hard-link guard: the cached venv keeps every byte and inode)."""

from __future__ import annotations

import base64
import errno
import hashlib
import os
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tfbisect.core.errors import MachineFaultError
from tfbisect.core.outcome import Outcome
from tfbisect.core.record import RunRecord
from tfbisect.core.spec import EnvSpec
from tfbisect.core.store import ResultStore
from tfbisect.envs import cache
from tfbisect.envs.locks import uv_binary
from tfbisect.envs.wheelhouse import Pin, pins
from tfbisect.narrow.proof import ProofPlan, Unit, proof_of
from tfbisect.narrow.transplant import (
    MAX_CANDIDATES,
    NotInstalled,
    TransplantPlan,
    transplant_proof,
    wheel_is_pure,
)
from tfbisect.narrow.wiring import LockedHashes, not_installed
from tfbisect.report.findings import trial_text
from tfbisect.runs import patched
from tfbisect.runs.patched import (
    PatchedRuns,
    PinError,
    checked_pins,
    install_failure,
    install_pins,
    requirements_text,
    unshare_replaced,
    venv_copy,
)
from tfbisect.search.narrowlog import DependencyChange, Verdict

SPEC = EnvSpec("2.7.0rc1", "3.9")
HASH = "a" * 64
LOG = Path("/logs/x.install.log")
SCENARIO = SimpleNamespace(slug="predict_uprank.script", sha256="s" * 64)
KERAS = [Pin("keras", "2.6.0", frozenset({HASH}))]


# ---- 1. what a failed install was ---------------------------------------------------------------


def test_a_full_disk_while_installing_is_the_machine_s_fault_never_a_verdict() -> None:
    found = install_failure(KERAS, "error: failed to write: No space left on device (os error 28)", 2, LOG)
    assert isinstance(found, MachineFaultError)
    assert "No space left on device" in found.what and "df -h" in found.todo


@pytest.mark.parametrize(
    "tail",
    [
        "error: Request failed after 3 retries\n  Caused by: dns error: failed to lookup address information",
        "error: Failed to fetch: `https://pypi.org/simple/keras/`\n  Caused by: Connection refused (os error 111)",
        "error: error sending request for url (https://pypi.org/simple/keras/): connection reset by peer",
        "error: Failed to fetch\n  Caused by: tunnel error: unsuccessful proxy CONNECT",
    ],
)
def test_the_network_failing_is_inconclusive_and_never_stored(tail: str) -> None:
    found = install_failure(KERAS, tail, 2, LOG)
    assert isinstance(found, PinError) and found.inconclusive and not found.lasting
    assert "network" in found.what and str(LOG) in found.todo


def test_a_timeout_or_a_kill_is_inconclusive_and_never_stored() -> None:
    for code in (None, -9):
        found = install_failure(KERAS, "Resolved 1 package", code, LOG)
        assert isinstance(found, PinError) and found.inconclusive and not found.lasting


def test_only_a_pin_that_cannot_be_resolved_is_stored() -> None:
    lasting = install_failure(
        KERAS,
        "  \u00d7 No solution found when resolving dependencies:\n  ╰─▶ Because there is no version of keras==2.6.0",
        1,
        LOG,
    )
    assert isinstance(lasting, PinError) and lasting.lasting and not lasting.inconclusive
    other = install_failure(KERAS, "error: something else went wrong", 1, LOG)
    assert isinstance(other, PinError) and not other.lasting and not other.inconclusive


# ---- 2. the pins: strict, and installed against their hashes ------------------------------------


@pytest.mark.parametrize("line", ["keras==2.*", "numpy==1.19.5,!=1.19.5"])
def test_a_lock_line_that_is_no_exact_version_is_refused_as_not_testable(line: str) -> None:
    found = pins(f"{line} --hash=sha256:{HASH}\n")
    assert found, "the lock's reader takes it: the check is the transplant's"
    with pytest.raises(PinError) as raised:
        checked_pins(found)
    assert "not one exact version" in raised.value.what
    assert not raised.value.lasting and not raised.value.inconclusive


def test_a_name_that_is_no_package_name_is_refused() -> None:
    with pytest.raises(PinError, match="not one exact version"):
        checked_pins([Pin("keras --index-url http://evil", "2.6.0", frozenset({HASH}))])


def test_a_pin_without_its_hash_is_refused_and_the_hashes_go_to_uv() -> None:
    with pytest.raises(PinError, match="no sha256 hash"):
        checked_pins([Pin("keras", "2.6.0", frozenset())])
    with pytest.raises(PinError, match="no sha256 hash"):
        checked_pins([Pin("keras", "2.6.0", frozenset({"zz"}))])
    checked = checked_pins([Pin("Keras_Nightly", "2.6.0.dev1", frozenset({HASH, "b" * 64}))])
    assert (
        requirements_text(checked)
        == f"keras-nightly==2.6.0.dev1 --hash=sha256:{HASH} --hash=sha256:{'b' * 64}\n"
    )


def test_the_install_requires_the_hashes_from_a_file_in_the_copy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "folder" / "venv"
    (copy / "lib" / "python3.9" / "site-packages").mkdir(parents=True)
    (copy / "bin").mkdir()
    seen: list[list[str]] = []

    def run_logged(command: list[str], **kwargs: Any) -> SimpleNamespace:
        seen.append(command)
        return SimpleNamespace(exit_code=0, log_tail="", log_error=None)

    monkeypatch.setattr(patched, "run_logged", run_logged)
    install_pins(copy, KERAS, tmp_path / "install.log")
    command = seen[0]
    assert "--require-hashes" in command and "--no-deps" in command
    requirements = Path(command[command.index("-r") + 1])
    assert requirements.parent == copy.parent
    assert requirements.read_text() == f"keras==2.6.0 --hash=sha256:{HASH}\n"
    assert not any(part.startswith("keras==") for part in command)


def test_the_wiring_gives_each_pin_the_hashes_of_the_lock_it_comes_from() -> None:
    locked = LockedHashes()
    locked.learn(f"keras==2.6.0 \\\n    --hash=sha256:{HASH}\nnumpy==1.19.5 --hash=sha256:{'c' * 64}\n")
    locked.learn(f"keras==2.7.0 --hash=sha256:{'d' * 64}\n")
    found = locked.pins({"Keras": "2.6.0", "numpy": "1.21.4"})
    assert found == [Pin("Keras", "2.6.0", frozenset({HASH})), Pin("numpy", "1.21.4", frozenset())]


# ---- 3. 4. 6. the store: hostile reads, failing writes, the words --------------------------------


def fake_runner(tmp_path: Path, said: list[str]) -> Any:
    venv = tmp_path / "venvs" / "v"
    (venv / "bin").mkdir(parents=True)
    (venv / "lib" / "python3.9" / "site-packages").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr\n")
    (venv / "bin" / "python").symlink_to(sys.executable)
    lock = SimpleNamespace(sha256="l" * 64)
    return SimpleNamespace(
        settings=SimpleNamespace(
            reports_dir=tmp_path / "reports", cache_dir=tmp_path / "cache", force=False, timeout=60
        ),
        prepare=lambda spec, scenario: (lock, venv / "bin" / "python"),
        log_dir=lambda scenario: tmp_path / "logs",
        progress=SimpleNamespace(say=said.append),
    )


def record_for(key: str) -> dict[str, Any]:
    found = RunRecord(
        spec=SPEC,
        scenario="predict_uprank.script",
        scenario_sha256="s" * 64,
        outcome=Outcome.REPRODUCED,
        exit_code=0,
        document=None,
        failure=None,
        log_tail="",
        command="",
        started_at="",
        duration_s=1.0,
        extra={"proof_key": key},
    )
    return found.to_dict()


def test_a_stored_record_is_read_bounded_and_only_for_its_own_key(tmp_path: Path) -> None:
    runs = PatchedRuns(fake_runner(tmp_path, []))
    key, other = "k" * 64, "o" * 64
    path = runs.store_path(SCENARIO, key)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True)
    runs.keep(path, record_for(key))
    assert runs.stored(SCENARIO, key) is not None  # type: ignore[arg-type]
    runs.keep(path, record_for(other))  # another key's record copied in: run again
    assert runs.stored(SCENARIO, key) is None  # type: ignore[arg-type]
    path.write_text("[" * 100_000 + "]" * 100_000)  # nested past the parser
    assert runs.stored(SCENARIO, key) is None  # type: ignore[arg-type]
    path.write_text('{"extra": {"proof_key": "' + key + '"}, "spec": 3}')  # wrong types
    assert runs.stored(SCENARIO, key) is None  # type: ignore[arg-type]
    path.unlink()
    (tmp_path / "elsewhere.json").write_text(__import__("json").dumps(record_for(key)))
    path.symlink_to(tmp_path / "elsewhere.json")  # never through a link
    assert runs.stored(SCENARIO, key) is None  # type: ignore[arg-type]


def test_a_fifo_in_the_store_or_a_wheel_file_never_hangs(tmp_path: Path) -> None:
    runs = PatchedRuns(fake_runner(tmp_path, []))
    key = "k" * 64
    path = runs.store_path(SCENARIO, key)  # type: ignore[arg-type]
    path.parent.mkdir(parents=True)
    os.mkfifo(path)
    os.mkfifo(path.with_suffix(patched.UNINSTALLABLE))
    info = tmp_path / "site" / "keras-2.6.0.dist-info"
    info.mkdir(parents=True)
    os.mkfifo(info / "WHEEL")
    answers: list[object] = []
    worker = threading.Thread(
        target=lambda: answers.extend(
            [
                runs.stored(SCENARIO, key),  # type: ignore[arg-type]
                runs.not_installed(SCENARIO, key),  # type: ignore[arg-type]
                wheel_is_pure([tmp_path / "site"], "keras"),
            ]
        ),
        daemon=True,
    )
    worker.start()
    worker.join(10)
    assert answers == [None, None, None]


def test_a_stored_reason_is_one_printable_line_and_its_todo_says_force(tmp_path: Path) -> None:
    runs = PatchedRuns(fake_runner(tmp_path, []))
    key = "k" * 64
    runs.keep_not_installed(SCENARIO, key, "keras==2.6.0 did not install: \x1b[2J\x1b]0;pwned\x07\nfake line")  # type: ignore[arg-type]
    reason = runs.not_installed(SCENARIO, key)  # type: ignore[arg-type]
    assert reason is not None and "\x1b" not in reason and "\n" not in reason and "\x07" not in reason
    assert runs.not_installed(SCENARIO, "o" * 64) is None  # type: ignore[arg-type]
    words = not_installed(PinError(reason, "it was tried before: --force tries it again.", reused=True))
    assert words.reused and "--force tries it again" in words.reason
    fresh = not_installed(PinError("keras==2.6.0 did not install: x", f"see {LOG}; the others still run."))
    assert not fresh.reused and str(LOG) in fresh.reason


def test_a_proof_store_is_no_run_for_tfbisect_show(tmp_path: Path) -> None:
    runs = PatchedRuns(fake_runner(tmp_path, []))
    key = "k" * 64
    runs.keep(runs.store_path(SCENARIO, key), record_for(key))  # type: ignore[arg-type]
    runs.keep_not_installed(SCENARIO, "o" * 64, "no solution")  # type: ignore[arg-type]
    warned: list[str] = []
    listed = list(ResultStore(tmp_path / "reports" / "results", warn=warned.append).records())
    assert listed == [] and warned == []


def test_a_resolution_failure_is_stored_a_network_one_is_not_and_a_full_store_hides_neither(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    said: list[str] = []
    runs = PatchedRuns(fake_runner(tmp_path, said))
    failures = iter(
        [
            PinError("keras==2.6.0 did not install: dns error", "see the log.", inconclusive=True),
            PinError("keras==2.6.0 did not install: No solution found", "see the log.", lasting=True),
        ]
    )

    def install(copy: Path, wanted: object, log_path: Path) -> None:
        raise next(failures)

    monkeypatch.setattr(patched, "install_pins", install)
    with pytest.raises(PinError, match="dns error"):
        runs.run(SPEC, SCENARIO, "probe", pins=KERAS)  # type: ignore[arg-type]
    assert not list((tmp_path / "reports").rglob("*.not-installed"))
    # The store cannot be written (a file where its folder goes): said, and the PinError stands.
    (tmp_path / "reports" / "results" / "proofs").mkdir(parents=True)
    (tmp_path / "reports" / "results" / "proofs" / SCENARIO.slug).write_text("")
    with pytest.raises(PinError, match="No solution found"):
        runs.run(SPEC, SCENARIO, "probe", pins=KERAS)  # type: ignore[arg-type]
    assert len(said) == 1 and "could not be stored" in said[0] and "free space" in said[0]
    (tmp_path / "reports" / "results" / "proofs" / SCENARIO.slug).unlink()
    failures = iter([PinError("keras==2.6.0 did not install: No solution found", "see.", lasting=True)])
    with pytest.raises(PinError):
        runs.run(SPEC, SCENARIO, "probe", pins=KERAS)  # type: ignore[arg-type]
    with pytest.raises(PinError, match="--force") as again:
        runs.run(SPEC, SCENARIO, "probe", pins=KERAS)  # type: ignore[arg-type]
    assert again.value.reused
    assert not list((tmp_path / "cache" / "proof-copies").iterdir())  # each copy gone


# ---- 5. the budget, the candidates --------------------------------------------------------------


def test_failed_installs_spend_the_budget_and_the_candidates_are_bounded() -> None:
    changes = [DependencyChange(f"pkg{i:02d}", "1.0", "2.0", True) for i in range(MAX_CANDIDATES + 8)]
    plan = TransplantPlan("probe", EnvSpec("1.0", "3.9"), SPEC, "not_reproduced", "reproduced", 1000)
    tried: list[int] = []

    def run(spec: EnvSpec, probe: str, wanted: object) -> NotInstalled:
        tried.append(len(wanted))  # type: ignore[arg-type]
        return NotInstalled("did not install: timed out", inconclusive=True)

    found = transplant_proof(plan, run, changes, lambda name: None)
    assert max(tried) <= MAX_CANDIDATES and found.runs == len(tried)
    assert found.trials[0].verdict is Verdict.NOT_TESTABLE and "8 more packages" in found.trials[0].units[0]
    inconclusive = found.trials[1]
    assert inconclusive.verdict is Verdict.INCONCLUSIVE
    assert trial_text(inconclusive) == "pkg00 2.0 → 1.0 in 2.7.0rc1: inconclusive: did not install: timed out"
    small = transplant_proof(
        TransplantPlan("probe", EnvSpec("1.0", "3.9"), SPEC, "not_reproduced", "reproduced", 3),
        run,
        changes,
        lambda name: None,
    )
    assert small.runs == 3


def test_a_machine_fault_in_a_transplant_stops_the_proof() -> None:
    def run(spec: EnvSpec, probe: str, wanted: object) -> NotInstalled:
        raise MachineFaultError(
            "the machine failed while installing keras: No space left on device", "free space."
        )

    plan = TransplantPlan("probe", EnvSpec("1.0", "3.9"), SPEC, "not_reproduced", "reproduced", 30)
    with pytest.raises(MachineFaultError):
        transplant_proof(plan, run, [DependencyChange("keras", "1.0", "2.0", True)], lambda name: None)


def test_a_full_disk_while_setting_up_a_copy_is_a_machine_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runs = PatchedRuns(fake_runner(tmp_path, []))

    def install(copy: Path, wanted: object, log_path: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(copy))

    monkeypatch.setattr(patched, "install_pins", install)
    with pytest.raises(MachineFaultError, match="No space left"):
        runs.run(SPEC, SCENARIO, "probe", pins=KERAS)  # type: ignore[arg-type]
    assert not list((tmp_path / "reports").rglob("*.not-installed"))


def test_a_machine_fault_in_a_revert_stops_the_proof() -> None:
    def run(spec: EnvSpec, probe: str, texts: object) -> NotInstalled:
        raise MachineFaultError(
            "the machine failed while copying the venv: No space left on device", "free space."
        )

    plan = ProofPlan(
        probe="probe",
        old_spec=EnvSpec("1.0", "3.9"),
        new_spec=SPEC,
        old_state="match",
        new_state="mismatch",
        old_sources={"m.py": "def f():\n    return 1\n"},
        new_sources={"m.py": "def f():\n    return 2\n"},
        units=(Unit("m.py", "f"),),
        files=("m.py",),
        budget=30,
    )
    with pytest.raises(MachineFaultError):
        proof_of(plan, run, lambda text: None, ("a", "b"))  # type: ignore[arg-type]


# ---- 7. copies a killed driver left -------------------------------------------------------------


def test_copies_left_by_a_dead_driver_are_swept_a_living_one_s_and_young_ones_kept(tmp_path: Path) -> None:
    copies = tmp_path / "cache" / "proof-copies"
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    gone = copies / f"tfbisect-proof-{dead.stdout.strip()}-abc"
    living = copies / f"tfbisect-proof-{os.getpid()}-def"
    young = copies / f"tfbisect-proof-{dead.stdout.strip()}-ghi"
    unowned = copies / "tfbisect-proof-xyz"  # an older copy's name: no pid, age alone
    for folder in (gone, living, young, unowned):
        (folder / "venv").mkdir(parents=True)
    old = time.time() - 2 * cache.PROOF_COPY_MAX_AGE_S
    for folder in (gone, living, unowned):
        os.utime(folder, (old, old))
    assert cache.sweep_proof_copies(copies) == 2
    assert sorted(p.name for p in copies.iterdir()) == sorted([living.name, young.name])
    os.utime(young, (old, old))
    cache.evict([], tmp_path / "cache")  # `tfbisect cache prune` sweeps them too
    assert [p.name for p in copies.iterdir()] == [living.name]


# ---- 8. real uv: the cached venv keeps its bytes and inodes ---------------------------------------


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def tiny_wheel(folder: Path, version: str) -> Path:
    """A pure wheel of `tinypkg` made by hand: its module says its version."""
    info = f"tinypkg-{version}.dist-info"
    files = {
        "tinypkg/__init__.py": f"VERSION = {version!r}\n".encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: tinypkg\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: hand\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        f"{info}/entry_points.txt": b"[console_scripts]\ntinytool = tinypkg:main\n",
    }
    record = "\n".join([*(record_line(n, d) for n, d in files.items()), f"{info}/RECORD,,"]) + "\n"
    path = folder / f"tinypkg-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr(f"{info}/RECORD", record)
    return path


def snapshot(root: Path) -> dict[str, tuple[int, int, bytes]]:
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink():
            info = path.lstat()
            found[str(path.relative_to(root))] = (info.st_ino, info.st_size, path.read_bytes())
    return found


def test_a_real_install_into_the_copy_leaves_the_cached_venv_untouched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    tiny_wheel(wheels, "1.0")
    new = tiny_wheel(wheels, "2.0")
    uv_cache = tmp_path / "uv"
    env = dict(os.environ, UV_CACHE_DIR=str(uv_cache), UV_OFFLINE="1", UV_PYTHON_DOWNLOADS="never")
    venv = tmp_path / "cache" / "venvs" / "v"
    subprocess.run([uv_binary(), "venv", "-q", "--python", sys.executable, str(venv)], env=env, check=True)
    subprocess.run(
        [
            uv_binary(),
            "pip",
            "install",
            "-q",
            "--python",
            str(venv / "bin" / "python"),
            "--no-index",
            "--find-links",
            str(wheels),
            "tinypkg==1.0",
        ],
        env=env,
        check=True,
    )
    assert (venv / "bin" / "tinytool").is_file()
    before = snapshot(venv)
    monkeypatch.setattr(patched, "uv_cache_dir", lambda: uv_cache)
    monkeypatch.setattr(patched, "other_file_system", lambda copy: True)  # the guard on
    for key, value in (("UV_OFFLINE", "1"), ("UV_NO_INDEX", "1"), ("UV_FIND_LINKS", str(wheels))):
        monkeypatch.setenv(key, value)
    digest = hashlib.sha256(new.read_bytes()).hexdigest()
    with venv_copy(venv, tmp_path / "cache" / "proof-copies") as copy:
        install_pins(copy, [Pin("tinypkg", "2.0", frozenset({digest}))], tmp_path / "install.log")
        site = next((copy / "lib").glob("python*/site-packages"))
        assert (site / "tinypkg" / "__init__.py").read_text() == "VERSION = '2.0'\n"
        assert (copy / "bin" / "tinytool").lstat().st_nlink == 1  # no longer shared with the venv
        with pytest.raises(PinError):  # a wheel that is not the lock's: refused
            install_pins(copy, [Pin("tinypkg", "1.0", frozenset({"0" * 64}))], tmp_path / "bad.log")
    assert snapshot(venv) == before


def test_the_guard_leaves_no_file_of_the_replaced_package_shared(tmp_path: Path) -> None:
    root = tmp_path / "v"
    site = root / "lib" / "python3.9" / "site-packages"
    (site / "keras").mkdir(parents=True)
    (site / "keras-2.7.0.dist-info").mkdir()
    (root / "bin").mkdir()
    (site / "keras" / "__init__.py").write_text("x = 1\n")
    (site / "keras-2.7.0.dist-info" / "RECORD").write_text(
        "keras/__init__.py,,\n../../../bin/keras-tool,,\n../../../../../outside,,\nloop/x,,\nout/outside,,\n"
    )
    (root / "bin" / "keras-tool").write_text("#!/bin/sh\n")
    (root / "bin" / "keras-tool").chmod(0o755)
    (tmp_path / "outside").write_text("never touched\n")
    (site / "loop").symlink_to(site / "loop")
    (site / "out").symlink_to(tmp_path)  # through a link, out of the copy
    copy = tmp_path / "copy"
    subprocess.run(["cp", "-al", str(root), str(copy)], check=True)
    os.link(tmp_path / "outside", tmp_path / "outside-link")
    unshare_replaced(copy, ["keras"])
    csite = copy / "lib" / "python3.9" / "site-packages"
    for path in (
        csite / "keras" / "__init__.py",
        csite / "keras-2.7.0.dist-info" / "RECORD",
        copy / "bin" / "keras-tool",
    ):
        assert path.lstat().st_nlink == 1, path
    assert (copy / "bin" / "keras-tool").stat().st_mode & 0o777 == 0o755
    assert (site / "keras" / "__init__.py").lstat().st_nlink == 1 and (
        site / "keras" / "__init__.py"
    ).read_text() == "x = 1\n"
    assert (tmp_path / "outside").lstat().st_nlink == 2  # outside the copy: left alone
