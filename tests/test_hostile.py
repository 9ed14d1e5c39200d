"""Hostile scenarios against the venv path, with real processes: escape, flood, lie, hang.

Each scenario runs on this machine's own Python (no TF needed), through the same `execute`
step as every run; what is asserted is what a user relies on: the run ends in time, nothing
of the scenario survives it, and what is stored is small, honest and says what happened.
"""

from __future__ import annotations

import os
import platform
import shlex
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tfbisect.cli import build_parser
from tfbisect.core import catalogue, interrupt
from tfbisect.core.limits import (
    LOG_FILE_HEAD_BYTES,
    LOG_FILE_TAIL_BYTES,
    LOG_TAIL_MAX_BYTES,
    RESULT_MAX_BYTES,
)
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.record import RunRecord
from tfbisect.core.scenario import Scenario, find
from tfbisect.core.spec import EnvSpec
from tfbisect.envs import locks
from tfbisect.envs.backend_venv import VenvBackend
from tfbisect.envs.environments import Environments
from tfbisect.envs.interpreters import Interpreter
from tfbisect.runs.runner import Runner, Settings

from conftest import ROOT, empty_locks

CAT = catalogue.load_snapshot()
SPEC = EnvSpec("2.2.3", "3.8")
LOCK = locks.load(locks.LockSpec("2.2.3", "3.8"))
# What the scenarios' children carry, so that a survivor can be found in /proc.
MARKER = f"tfbisect-test-{os.getpid()}"


def runner(reports: Path, timeout: float = 60, progress: Progress | None = None) -> Runner:
    settings = Settings(reports_dir=reports, cache_dir=reports / "cache", timeout=timeout)
    return Runner(CAT, settings, progress or Progress(quiet=True), have={})


def scenario(tmp_path: Path, body: str, name: str = "hostile") -> Scenario:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(body).replace("MARKER", MARKER))
    return find(str(path))


def run(reports: Path, tmp_path: Path, body: str, timeout: float = 60) -> RunRecord:
    return runner(reports, timeout).execute(SPEC, scenario(tmp_path, body), Path(sys.executable), LOCK, "now")


def survivors() -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if MARKER.encode() in cmdline and int(entry.name) != os.getpid():
                found.append(int(entry.name))
    return found


@pytest.fixture(autouse=True)
def no_survivors() -> object:
    yield
    left = survivors()
    for pid in left:
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes of a scenario outlived its run: {left}"


SLEEPER = """[sys.executable, "-c", "import time; tag = 'MARKER'; time.sleep(600)"]"""


# -- processes ----------------------------------------------------------------------------
def test_double_forked_daemon_holding_the_pipe_is_killed_when_the_run_ends(
    reports: Path, tmp_path: Path
) -> None:
    start = time.monotonic()
    record = run(
        reports,
        tmp_path,
        f"""
        import os, subprocess, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                subprocess.Popen({SLEEPER}).wait()
                os._exit(0)
            os._exit(0)
        os.wait()
        print("left a daemon behind", flush=True)
        sys.exit(3)
        """,
    )
    assert time.monotonic() - start < 10
    assert record.outcome is Outcome.ERROR
    assert record.extra["leftover_processes_killed"] >= 1


def test_timeout_is_a_hard_bound_whatever_the_children_do(reports: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    record = run(
        reports,
        tmp_path,
        f"""
        import os, signal, subprocess, sys, time
        subprocess.Popen([sys.executable, "-c",
            "import signal, time; tag = 'MARKER'; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"])
        if os.fork() == 0:
            os.setsid()
            os.environ.clear()
            subprocess.Popen({SLEEPER})
            time.sleep(600)
        time.sleep(600)
        """,
        timeout=3,
    )
    took = time.monotonic() - start
    assert record.outcome is Outcome.TIMEOUT and 3 <= took < 3 + 5, took
    assert record.failure is not None and "did not finish in 3s" in record.failure.message
    assert record.timeout_s == 3


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGABRT, signal.SIGKILL])
def test_death_by_signal_is_named(reports: Path, tmp_path: Path, sig: signal.Signals) -> None:
    record = run(reports, tmp_path, f"import os\nprint('about to die')\nos.kill(os.getpid(), {int(sig)})\n")
    assert record.outcome is Outcome.ERROR
    assert record.failure is not None and f"killed by {sig.name}" in record.failure.message


def test_a_traceback_is_an_error_with_its_real_message_never_bad(reports: Path, tmp_path: Path) -> None:
    record = run(reports, tmp_path, "raise RuntimeError('shapes (3, 4) and (5,) do not fit')\n")
    assert record.outcome is Outcome.ERROR and record.exit_code == 1
    assert record.failure is not None
    assert (record.failure.type, record.failure.message) == (
        "RuntimeError",
        "shapes (3, 4) and (5,) do not fit",
    )


# -- output -------------------------------------------------------------------------------
def test_two_hundred_megabytes_on_one_line_give_a_small_record_and_a_bounded_log(
    reports: Path, tmp_path: Path
) -> None:
    record = run(
        reports,
        tmp_path,
        """
        import sys
        sys.stdout.write("start " + "A" * (200 * 1024 * 1024) + " end\\n")
        for i in range(100000):
            sys.stdout.write("line %d\\n" % i)
        sys.stdout.flush()
        sys.exit(4)
        """,
    )
    stored = reports / "results" / "hostile"
    [path] = list(stored.rglob("*.json"))
    assert path.stat().st_size < 2 * LOG_TAIL_MAX_BYTES + 64 * 1024
    assert len(record.log_tail.encode()) <= LOG_TAIL_MAX_BYTES + 4096
    assert record.log_tail.endswith("line 99999")
    log = Path(record.extra["log"])
    assert log.stat().st_size <= LOG_FILE_HEAD_BYTES + LOG_FILE_TAIL_BYTES + 4096
    text = log.read_text(errors="replace")
    assert text.count("bytes of output cut here") == 1 and text.rstrip().endswith("line 99999")


def test_escape_sequences_never_reach_the_terminal(reports: Path, tmp_path: Path) -> None:
    import io

    stream = io.StringIO()
    body = """
    import sys
    print("probe x: \\x1b]0;pwned\\x07\\x1b[2J", flush=True)
    raise ValueError("\\x1b[31mred\\x9b")
    """
    record = runner(reports, progress=Progress(stream)).execute(
        SPEC, scenario(tmp_path, body), Path(sys.executable), LOCK, "now"
    )
    from tfbisect.core.textsafe import printable
    from tfbisect.report.show import record_text

    shown = stream.getvalue() + printable(record_text(record))
    assert "\x1b" not in shown and "\x9b" not in shown and "\x07" not in shown
    assert "\\x1b[31mred" in shown


# -- the result document ------------------------------------------------------------------
WRITE = """
import os, sys
out = sys.argv[sys.argv.index("--output") + 1]
{make}
sys.exit(1)
"""


@pytest.mark.parametrize(
    ("make", "said"),
    [
        ("os.symlink('/etc/shadow', out)", "symbolic link"),
        ("os.symlink('/dev/zero', out)", "symbolic link"),
        ("os.mkfifo(out)", "FIFO"),
        ("os.mkdir(out)", "folder"),
        ("import socket; socket.socket(socket.AF_UNIX).bind(out)", "socket"),
    ],
)
def test_anything_but_a_regular_file_is_never_opened(
    reports: Path, tmp_path: Path, make: str, said: str
) -> None:
    start = time.monotonic()
    record = run(reports, tmp_path, WRITE.format(make=make))
    assert time.monotonic() - start < 10  # a FIFO would block a reader for ever
    assert record.outcome is Outcome.ERROR
    assert record.failure is not None and record.failure.type == "UnsafeResult"
    assert said in record.failure.message
    assert record.document is None


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a device needs root")
def test_a_device_node_is_never_opened(reports: Path, tmp_path: Path) -> None:
    record = run(
        reports,
        tmp_path,
        WRITE.format(make="os.mknod(out, 0o600 | __import__('stat').S_IFCHR, os.makedev(1, 5))"),
    )
    assert record.failure is not None and "character device" in record.failure.message


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (f"open(out, 'wb').truncate({RESULT_MAX_BYTES + 1})", "larger than the 16 MiB cap"),
        ("open(out, 'wb').truncate(100 * 1024 ** 3)", "larger than the 16 MiB cap"),
        ("open(out, 'wb').write(b'{\"a\": \"\\xc3\\x28\"}')", "not UTF-8: invalid byte at offset 7"),
        ("open(out, 'w').write('[' * 100000 + ']' * 100000)", "nested too deeply"),
        ("open(out, 'w').write('{\"verdict\": ')", "not JSON"),
        (
            "open(out, 'w').write('{\"schema_version\": 2}')",
            "does not match the schema: (document): 'scenario' is a required",
        ),
    ],
)
def test_a_bad_document_is_an_error_that_says_why(
    reports: Path, tmp_path: Path, make: str, said: str
) -> None:
    record = run(reports, tmp_path, WRITE.format(make=make))
    assert record.outcome is Outcome.ERROR
    assert record.failure is not None and said in record.failure.message, record.failure


def test_strings_in_a_valid_document_are_clipped(reports: Path, tmp_path: Path) -> None:
    body = """
    import hashlib, json, sys
    out = sys.argv[sys.argv.index("--output") + 1]
    sha = hashlib.sha256(open(__file__, "rb").read()).hexdigest()
    json.dump({"schema_version": 1, "scenario": {"name": "hostile", "sha256": sha},
               "environment": {"python": "3"}, "probes": [], "timings": {},
               "verdict": {"outcome": "reproduced", "summary": "S" * 10_000_000, "disagreements": []}},
              open(out, "w"))
    sys.exit(1)
    """
    record = run(reports, tmp_path, body)
    assert record.outcome is Outcome.REPRODUCED and record.document is not None
    summary = record.document["verdict"]["summary"]
    assert len(summary) < 5000 and summary.endswith("characters cut by tfbisect]")
    [path] = list((reports / "results").rglob("*.json"))
    assert path.stat().st_size < 64 * 1024


# -- reuse and concurrency ----------------------------------------------------------------
SLOW_VALID = """
import hashlib, json, os, sys, time
with open(os.environ["COUNTER"], "a") as counter:
    counter.write("ran\\n")
time.sleep(float(os.environ.get("NAP", "2")))
out = sys.argv[sys.argv.index("--output") + 1]
sha = hashlib.sha256(open(__file__, "rb").read()).hexdigest()
json.dump({"schema_version": 1, "scenario": {"name": "slow", "sha256": sha},
           "environment": {"python": "3"}, "probes": [], "timings": {},
           "verdict": {"outcome": "not_reproduced", "summary": "fine", "disagreements": []}}, open(out, "w"))
"""


def test_a_stored_timeout_is_rerun_with_a_longer_timeout_only(
    reports: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = tmp_path / "counter"
    monkeypatch.setenv("COUNTER", str(counter))
    chosen = scenario(tmp_path, SLOW_VALID, "slow")
    short = runner(reports, timeout=1)
    assert short.execute(SPEC, chosen, Path(sys.executable), LOCK, "now").outcome is Outcome.TIMEOUT
    stored = short.store.get(chosen.name, chosen.sha256, SPEC)
    assert stored is not None and stored.timeout_s == 1
    assert stored.answers(1) and not stored.answers(30)
    longer = runner(reports, timeout=30)
    assert longer.execute(SPEC, chosen, Path(sys.executable), LOCK, "now").outcome is Outcome.NOT_REPRODUCED
    assert counter.read_text().count("ran") == 2
    again = longer.store.get(chosen.name, chosen.sha256, SPEC)
    assert again is not None and again.answers(30) and again.outcome is Outcome.NOT_REPRODUCED


def test_one_cell_runs_once_when_two_ask_for_it_at_once(
    reports: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    counter = tmp_path / "counter"
    monkeypatch.setenv("COUNTER", str(counter))
    chosen = scenario(tmp_path, SLOW_VALID, "slow")
    spec = EnvSpec("2.21.0", "3.11")
    python = Path(sys.executable)

    class Local(Runner):
        """The real `run`, with this Python standing in for the installed venv."""

        def lock_for(self, spec: EnvSpec, extras: tuple[str, ...] = ()) -> locks.Lock:
            return LOCK

        def _make(self, name: str) -> Environments[Any]:
            made = VenvBackend(self.settings.cache_dir, self.progress, self.have)
            made.prepare = lambda *args: python  # type: ignore[method-assign]
            return made

    def one() -> RunRecord:
        local = Local(
            CAT, Settings(reports_dir=reports, cache_dir=reports / "cache"), Progress(quiet=True), have={}
        )
        local.have = {"3.11": Interpreter("3.11", python, platform.python_version())}
        return local.run(spec, chosen).record

    results: list[RunRecord] = []
    threads = [threading.Thread(target=lambda: results.append(one())) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [r.outcome for r in results] == [Outcome.NOT_REPRODUCED] * 2, [r.failure for r in results]
    assert counter.read_text().count("ran") == 1
    assert results[0] == results[1]


def test_a_stopping_driver_starts_nothing_and_stores_no_killed_run(reports: Path, tmp_path: Path) -> None:
    chosen = scenario(tmp_path, "import time\ntime.sleep(600)\n")
    local = runner(reports)
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGTERM))
    start = time.monotonic()
    try:
        with interrupt.handled():
            timer.start()
            with pytest.raises(interrupt.Interrupted) as stopped:
                local.execute(SPEC, chosen, Path(sys.executable), LOCK, "now")
            assert stopped.value.exit_code == 143 and time.monotonic() - start < 10
            with pytest.raises(interrupt.Interrupted):
                local.run(SPEC, chosen)
    finally:
        timer.cancel()
        interrupt.reset()
    assert not list((reports / "results").rglob("*.json")), "a killed run is not a result"


# -- the command line under signals -------------------------------------------------------
@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129), (signal.SIGINT, 130)])
def test_a_signal_stops_tfbisect_run_kills_the_scenario_and_says_how_to_resume(
    tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    locks_dir = empty_locks(tmp_path / "locks")
    chosen = scenario(
        tmp_path,
        f"import subprocess, sys, time\nsubprocess.Popen({SLEEPER})\nprint('up', flush=True)\ntime.sleep(600)\n",
    )
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = dict(os.environ, TFBISECT_LOCKS=str(locks_dir), TMPDIR=str(temp))
    argv = ["run", "--tf", "2.21.0", "--python", "3.11", "--scenario", str(chosen.path), "--timeout", "120"]
    command = [
        sys.executable,
        "-m",
        "tfbisect",
        "--reports",
        str(tmp_path / "r"),
        "--cache",
        str(tmp_path / "c"),
        *argv,
    ]
    child = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 60
    while not survivors() and time.monotonic() < deadline:  # the scenario's child is up
        time.sleep(0.1)
    start = time.monotonic()
    child.send_signal(sig)
    _, err = child.communicate(timeout=30)
    assert child.returncode == code, err
    assert time.monotonic() - start < 10
    assert f"stopped by {sig.name}" in err and "Resume with" in err
    # The resume line is the same command (written by core/argv.py: options in its order).
    resume = shlex.split(err.split("Resume with (stored results are reused):\n", 1)[1].splitlines()[0])
    parser = build_parser()
    assert resume[0] == "tfbisect"
    assert vars(parser.parse_args(resume[1:])) == vars(parser.parse_args(command[3:]))
    assert not list(temp.iterdir()), "no temp folder outlives the driver"
    assert not list((tmp_path / "r").rglob("results/**/*.json")), "a killed run is not a result"


# -- found by a hostile-input review -------------------------------------------------------
VALID_WITH = """
import hashlib, json, sys
out = sys.argv[sys.argv.index("--output") + 1]
sha = hashlib.sha256(open(__file__, "rb").read()).hexdigest()
text = json.dumps({{"schema_version": 1, "scenario": {{"name": "hostile", "sha256": sha}},
    "environment": {{"python": "3"}}, "timings": {{}},
    "probes": [{{"name": "p", "kind": "k", "outcome": "match", "summary": "s", "duration_s": 0,
                 "metrics": {{"x": "SLOT"}}}}],
    "verdict": {{"outcome": "not_reproduced", "summary": "ok", "disagreements": []}}}})
open(out, "w").write(text.replace('"SLOT"', {slot!r}))
"""


@pytest.mark.parametrize(
    ("slot", "said"),
    [("1e400", "too large"), ("1" + "0" * 4000, "too large"), ("NaN", "not a JSON value")],
)
def test_numbers_no_record_can_keep_make_an_error(
    reports: Path, tmp_path: Path, slot: str, said: str
) -> None:
    record = run(reports, tmp_path, VALID_WITH.format(slot=slot))
    assert record.outcome is Outcome.ERROR
    assert record.failure is not None and said in record.failure.message


def test_a_lone_surrogate_is_replaced_not_a_crash(reports: Path, tmp_path: Path) -> None:
    record = run(reports, tmp_path, VALID_WITH.format(slot='"\\ud800"'))
    assert record.outcome is Outcome.NOT_REPRODUCED and record.document is not None
    assert record.document["probes"][0]["metrics"]["x"] == "\ufffd"


def test_nested_empty_containers_count_against_the_budget(reports: Path, tmp_path: Path) -> None:
    record = run(reports, tmp_path, VALID_WITH.format(slot="[" + "[], " * 2_000_000 + "[]]"))
    assert record.outcome is Outcome.NOT_REPRODUCED, record.failure
    [path] = list((reports / "results").rglob("*.json"))
    assert path.stat().st_size < 4 * 1024 * 1024


def test_an_escaped_child_with_a_clean_environment_is_killed_too(reports: Path, tmp_path: Path) -> None:
    record = run(
        reports,
        tmp_path,
        """
        import os, sys
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                os.execve(sys.executable, [sys.executable, "-c", "import time; tag = 'MARKER'; time.sleep(600)"], {})
            os._exit(0)
        os.wait()
        sys.exit(3)
        """,
    )
    assert record.outcome is Outcome.ERROR  # and the autouse fixture finds no survivor


def test_parallel_runs_never_take_each_other_for_escaped_processes(reports: Path, tmp_path: Path) -> None:
    """Runs in threads (`--jobs`): one run's watch must not kill or reap another run's scenario,
    which Python would then report as exit 0 (found when a real bisection said 'inconsistent')."""
    chosen = scenario(tmp_path, "import sys, time\ntime.sleep(0.05)\nsys.exit(3)\n")
    codes: list[int | None] = []

    def work() -> None:
        local = runner(reports)
        for _ in range(10):
            codes.append(local.execute(SPEC, chosen, Path(sys.executable), LOCK, "now").exit_code)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert codes == [3] * 80
