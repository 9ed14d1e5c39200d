"""A failing machine is never a verdict: a full or read-only `reports/`, a disk-full tool under a
preparation, a driver killed with SIGKILL.  The real CLI runs against real tmpfs and read-only
mounts (root only: skipped elsewhere), with header-only locks, so no TensorFlow is needed."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tfbisect.core.errors import (
    EnvironmentBuildError,
    ExitCode,
    MachineFaultError,
    as_machine_fault,
    machine_fault_in,
    machine_fault_of,
)
from tfbisect.core.scenario import Scenario, find
from tfbisect.core.spec import EnvSpec
from tfbisect.platform.process import abandon, reset_abandoned, run_logged
from tfbisect.runs.launching import Cell, skip_record
from tfbisect.search.rounds import RoundExecutor

from conftest import ROOT, empty_locks

MARKER = f"tfbisect-machine-{os.getpid()}"
SPEC = EnvSpec("2.21.0", "3.11")


# -- classification ---------------------------------------------------------------------------
def test_the_errnos_of_a_failing_machine_are_machine_faults() -> None:
    for code in (errno.ENOSPC, errno.EROFS, errno.EIO, errno.EDQUOT):
        fault = machine_fault_of(OSError(code, os.strerror(code), "/x/reports/results/a.json"))
        assert fault is not None and fault.exit_code == ExitCode.MACHINE
        assert "/x/reports/results/a.json" in str(fault) and "cache prune" in str(fault)
    assert machine_fault_of(OSError(errno.ENOENT, "gone", "/x")) is None
    assert machine_fault_of(ValueError("no")) is None
    # At the command boundary every OSError ends as a machine fault (never exit 1 "reproduced").
    assert as_machine_fault(PermissionError(errno.EACCES, "denied", "/r")).exit_code == ExitCode.MACHINE


def test_a_tool_that_says_the_disk_is_full_names_the_line() -> None:
    log = "Collecting tensorflow\nERROR: Could not install: OSError: [Errno 28] No space left on device\n"
    fault = machine_fault_in(log, "fetching wheels")
    assert fault is not None and "No space left on device" in fault.what and "fetching wheels" in fault.what
    assert machine_fault_in("ERROR: No matching distribution found for tensorflow==9", "x") is None


def test_a_preparation_that_failed_for_want_of_disk_is_no_skip(tmp_path: Path) -> None:
    chosen = _scenario(tmp_path, "print('hi')\n")
    cell = Cell(SPEC, chosen, "now", 60)
    with pytest.raises(MachineFaultError, match="No space left on device"):
        skip_record(
            cell,
            EnvironmentBuildError(
                "Fetching wheels for Python 3.13 failed: [Errno 28] No space left on device", "x"
            ),
        )
    swarm = EnvironmentBuildError("the swarm task ended rejected: No such image", "see the node's log")
    assert skip_record(cell, swarm).outcome.value == "skip"  # not the machine's, as far as it says


def test_a_machine_fault_in_one_run_of_a_round_ends_the_round_at_once() -> None:
    ran: list[int] = []
    halted: list[MachineFaultError] = []

    def execute(spec: EnvSpec) -> object:
        if spec.tf_version == "2.20.0":
            raise OSError(errno.ENOSPC, "No space left on device", "/r/results/x.json")
        time.sleep(0.2)
        return spec.tf_version

    rounds = RoundExecutor(execute, 2, halt=lambda: None, abandon=halted.append)  # type: ignore[arg-type]
    with pytest.raises(MachineFaultError, match=r"/r/results/x\.json"):
        rounds.run([(0, EnvSpec("2.20.0", "3.11")), (1, SPEC)], lambda i, _: ran.append(i))
    assert len(halted) == 1 and ran == []  # the first in order failed: nothing judged before it


def test_an_abandoned_run_is_killed_and_is_no_result(tmp_path: Path) -> None:
    fault = MachineFaultError("the disk is full", "free space")
    try:
        abandon(fault)
        with pytest.raises(MachineFaultError):
            run_logged(["sleep", "30"], log_path=tmp_path / "log", timeout=60)
    finally:
        reset_abandoned()


# -- the real CLI on a failing disk -------------------------------------------------------------
def _scenario(folder: Path, body: str, name: str = "machine") -> Scenario:
    path = folder / f"{name}.py"
    path.write_text(textwrap.dedent(body).replace("MARKER", MARKER))
    return find(str(path))


def _root_mounts() -> None:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs or a read-only bind mount needs root")


@contextlib.contextmanager
def _mounted(target: Path, *commands: list[str]) -> Iterator[Path]:
    target.mkdir(parents=True, exist_ok=True)
    done = []
    try:
        for command in commands:
            result = subprocess.run(command, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                pytest.skip(f"cannot mount here: {result.stderr.strip()}")
            done.append(command)
        yield target
    finally:
        for _ in done:
            subprocess.run(["umount", "-l", str(target)], check=False)


def _tfbisect(
    tmp_path: Path, reports: Path, *args: str, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, TFBISECT_LOCKS=str(empty_locks(tmp_path / "locks")), TMPDIR=str(_tmp(tmp_path)))
    command = [
        sys.executable,
        "-m",
        "tfbisect",
        "--reports",
        str(reports),
        "--cache",
        str(tmp_path / "cache"),
    ]
    return subprocess.run(
        [*command, *args], cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=timeout
    )


def _tmp(tmp_path: Path) -> Path:
    folder = tmp_path / "tmp"
    folder.mkdir(exist_ok=True)
    return folder


def _stored(reports: Path) -> list[Path]:
    return [p for p in (reports / "results").rglob("*.json")] if (reports / "results").is_dir() else []


LOUD = "import sys\nfor i in range(60000):\n    sys.stdout.write('x' * 100 + '\\n')\nprint('done')\n"


def test_run_on_a_reports_folder_that_fills_up_is_a_machine_fault(tmp_path: Path) -> None:
    """The run's log fills a 2 MB `reports/`: exit 15 at once, naming the log, no traceback, and
    nothing stored for the version (its output was still drained: no hang until the timeout)."""
    _root_mounts()
    chosen = _scenario(tmp_path, LOUD)
    reports = tmp_path / "small"
    with _mounted(reports, ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(reports)]):
        start = time.monotonic()
        done = _tfbisect(
            tmp_path, reports, "run", "--tf", "2.21.0", "--python", "3.11", "--scenario", str(chosen.path),
            "--timeout", "300",
        )  # fmt: skip
        took = time.monotonic() - start
        assert done.returncode == ExitCode.MACHINE, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        assert str(reports / "logs") in done.stderr and "No space left on device" in done.stderr
        assert "Resume with" in done.stderr and "cache prune" in done.stderr
        assert not _stored(reports), "a machine fault stored a verdict or a skip"
        assert took < 100, f"took {took:.0f}s"


def test_run_on_a_read_only_reports_folder_is_a_machine_fault(tmp_path: Path) -> None:
    _root_mounts()
    chosen = _scenario(tmp_path, "print('hello')\n")
    source, reports = tmp_path / "rw", tmp_path / "ro"
    source.mkdir()
    with _mounted(
        reports,
        ["mount", "--bind", str(source), str(reports)],
        ["mount", "-o", "remount,ro,bind", str(reports)],
    ):
        done = _tfbisect(
            tmp_path, reports, "run", "--tf", "2.21.0", "--python", "3.11", "--scenario", str(chosen.path)
        )
        assert done.returncode == ExitCode.MACHINE, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        assert "Read-only file system" in done.stderr and str(reports) in done.stderr
    assert not _stored(source)


def test_a_bisection_on_a_reports_folder_that_fills_up_stops_with_the_resume_command(tmp_path: Path) -> None:
    _root_mounts()
    chosen = _scenario(tmp_path, LOUD)
    reports = tmp_path / "small"
    with _mounted(reports, ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(reports)]):
        start = time.monotonic()
        done = _tfbisect(
            tmp_path, reports, "bisect", "--good", "2.20.0", "--bad", "2.21.0", "--python", "3.11",
            "--scenario", str(chosen.path), "--backend", "venv", "--timeout", "300", "--no-narrow",
            "--prefetch", "0",
        )  # fmt: skip
        took = time.monotonic() - start
        assert done.returncode == ExitCode.MACHINE, done.stderr[-2000:]
        assert "Traceback" not in done.stderr
        assert "Resume with" in done.stderr and "tfbisect bisect" in done.stderr
        assert "--force" not in done.stderr.split("Resume with")[-1]
        assert not _stored(reports)
        assert took < 100, f"took {took:.0f}s: the bisection did not stop at the fault"


# -- the driver killed with SIGKILL ------------------------------------------------------------
def _alive(needle: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            state = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()[0]
            environ = (entry / "environ").read_bytes()
        except (OSError, IndexError):
            continue
        if state not in (b"Z", b"X") and needle.encode() in environ:
            found.append(int(entry.name))
    return found


def _wait(predicate: Callable[[], object], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return bool(predicate())


def test_kill_9_of_the_driver_takes_the_scenario_with_it_and_the_next_command_reaps_the_rest(
    tmp_path: Path,
) -> None:
    scenario_marker = f"{MARKER}-scenario"
    grandchild = "import os, time\nos.setsid()\ntime.sleep(600)\n"
    chosen = _scenario(
        tmp_path,
        f"""
        import os, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c", {grandchild!r}], env=dict(os.environ, KILLED_DRIVER_GRANDCHILD="1"))
        print("up", flush=True)
        time.sleep(600)
        """,
    )
    env = dict(
        os.environ,
        TFBISECT_LOCKS=str(empty_locks(tmp_path / "locks")),
        TMPDIR=str(_tmp(tmp_path)),
        MACHINE_TEST=scenario_marker,  # inherited by the driver, and so by the scenario's tree
    )
    command = [
        sys.executable,
        "-m",
        "tfbisect",
        "--reports",
        str(tmp_path / "r"),
        "--cache",
        str(tmp_path / "c"),
    ]
    argv = ["run", "--tf", "2.21.0", "--python", "3.11", "--scenario", str(chosen.path), "--timeout", "300"]
    driver = subprocess.Popen(
        [*command, *argv], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:

        def tree() -> list[int]:
            return [p for p in _alive(f"MACHINE_TEST={scenario_marker}") if p != driver.pid]

        def grandchild_up() -> bool:  # the scenario is up and has started its child
            return bool(set(_alive("KILLED_DRIVER_GRANDCHILD=1")) & set(tree()))

        assert _wait(grandchild_up, 120), "the scenario and its child never started"
        assert list(_tmp(tmp_path).glob("tfbisect-run-*")), (
            "the run's temporary folder is named for its driver"
        )
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        # The scenario itself dies with its driver (PR_SET_PDEATHSIG) …
        assert _wait(lambda: len(tree()) <= 1, 5), f"the scenario outlived its driver: {tree()}"
        # … and what it started (in a session of its own) goes at the next command.
        again = subprocess.run(
            [*command, "versions"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert again.returncode == 0, again.stderr[-2000:]
        assert _wait(lambda: not tree(), 5), f"left running after the next command: {tree()}"
        assert not list(_tmp(tmp_path).glob("tfbisect-run-*")), "the dead driver's temporary folder stayed"
    finally:
        with contextlib.suppress(OSError):
            driver.kill()
        driver.wait()
        for pid in _alive(f"MACHINE_TEST={scenario_marker}"):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
