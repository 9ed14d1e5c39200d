"""The narrowing's measuring half, for real: the probe tracer's `--window-only` and its list of the
imported distributions under real Pythons (sys.settrace before 3.12, sys.monitoring after), the
flagship scenario's `--probe`, the backends' traced launches, and `Runner.trace` in real venvs
(the standard library's `json` as the traced package where no TF is installed; TF 2.4 in the slow
tests)."""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, cast
from unittest.mock import ANY

import pytest

from tfbisect.core import catalogue
from tfbisect.core.errors import TraceError
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.record import classify
from tfbisect.core.scenario import Scenario, find
from tfbisect.core.spec import EnvSpec
from tfbisect.envs import interpreters
from tfbisect.envs.backend_docker import TRACER_PATH, DockerBackend, Image
from tfbisect.envs.backend_swarm import SwarmAddress, SwarmBackend, SwarmImage
from tfbisect.envs.bases import Base
from tfbisect.envs.docker_engine import Engine
from tfbisect.envs.environments import Traced
from tfbisect.narrow.traces import ProbeRunner, checked_trace
from tfbisect.runs import tracing
from tfbisect.runs.runner import Runner, Settings
from tfbisect.runs.tracing import STORE_FOLDER, STORED_SUFFIX, TraceRun

from conftest import ROOT, empty_locks

TRACER = ROOT / "bisect" / "tfbisect" / "data" / "probe_tracer.py"
SCENARIO = ROOT / "scenarios" / "gradient_mismatch.py"
CAT = catalogue.load_snapshot()
ALL_PROBES = [
    "gradient_eager_plain",
    "gradient_eager_decorated",
    "gradient_graph_plain",
    "gradient_graph_decorated",
    "training_loop",
    "fit_report_labels",
    "fit_shape_robust",
]


def pyenv(minor: str) -> str | None:
    if minor == f"{sys.version_info[0]}.{sys.version_info[1]}":
        return sys.executable
    found = sorted(Path.home().glob(f".pyenv/versions/{minor}.*/bin/python"))
    return str(found[-1]) if found else None


def pythons(*minors: str) -> list[Any]:
    """The Pythons asked for that this machine has (3.7 and 3.8 trace with sys.settrace and read
    metadata differently, 3.11 is the driver's, 3.12+ trace with sys.monitoring)."""
    return [pytest.param(pyenv(minor), id=f"python{minor}") for minor in minors if pyenv(minor)]


def version_of(python: str) -> tuple[int, int]:
    command = [python, "-c", "import sys; print(sys.version_info[0], sys.version_info[1])"]
    major, minor = subprocess.run(command, capture_output=True, text=True, check=True).stdout.split()
    return int(major), int(minor)


def traced(
    python: str, folder: Path, *tracer_options: str, packages: str = "pkg"
) -> tuple[int, dict[str, Any], str]:
    """`probe.py` in `folder` run under the tracer with `folder/site` on the path: its exit status,
    the document and what it printed."""
    written = folder / "trace.json"
    written.unlink(missing_ok=True)
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTHON")}
    env["PYTHONPATH"] = str(folder / "site")
    command = [python, str(TRACER), "--packages", packages, *tracer_options, "--output", "trace.json"]
    done = subprocess.run(
        [*command, "--", "probe.py"], cwd=folder, env=env, capture_output=True, text=True, timeout=120
    )
    assert written.exists(), done.stderr
    return done.returncode, json.loads(written.read_text()), done.stdout + done.stderr


def write_files(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def distribution(site: Path, name: str, version: str, record: list[str] | None, top_level: str = "") -> None:
    """A distribution's .dist-info as installers leave it: METADATA, and RECORD (or only a
    top_level.txt, as some old installs have)."""
    info = site / f"{name.replace('-', '_')[:40]}-{version[:20]}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if record is not None:
        rows = [
            *(f"{path},sha256=x,1" for path in record),
            f"{info.name}/METADATA,,",
            f"{info.name}/RECORD,,",
        ]
        (info / "RECORD").write_text("".join(f"{row}\n" for row in rows))
    if top_level:
        (info / "top_level.txt").write_text(top_level)


# ---- The tracer's window ------------------------------------------------------------------------

MODULE = '''\
"""A traced package."""
import threading


def before():
    return 1


def inside(x):
    y = x + 1
    return y


def threaded():
    done = []
    worker = threading.Thread(target=lambda: done.append(in_thread()))
    worker.start()
    worker.join()
    return done


def in_thread():
    return "thread"


def after():
    return 2


def running(callback):
    callback()
    z = 3
    return z


def again():
    return 4
'''
LINES = {"inside": [10, 11], "threaded": [15, 16, 17, 18, 19], "in_thread": [23], "again": [37]}
LINES["lambda"] = [16]  # the thread's target, on the line that defines it
RUNNING_AFTER_THE_WINDOW_OPENED = [32, 33]

WINDOW_PROBE = """\
import builtins
import json
import sys

import pkg.mod as mod


def tracing():
    # Whether any tracing is on right now: a trace function (before 3.12) or monitoring events.
    if sys.version_info >= (3, 12):
        return any(sys.monitoring.get_events(tool) for tool in range(6))
    return sys.gettrace() is not None


window = builtins.__tfbisect_trace__
states = {"start": tracing()}
mod.before()
mod.running(lambda: window(True))  # a frame of the package already running when the window opens
states["open"] = tracing()
mod.inside(1)
mod.threaded()
window(False)
states["closed"] = tracing()
mod.after()
window(True)
mod.again()
window(False)
print("states " + json.dumps(states, sort_keys=True))
"""


@pytest.fixture
def window_probe(tmp_path: Path) -> Path:
    write_files(tmp_path, {"site/pkg/__init__.py": "", "site/pkg/mod.py": MODULE, "probe.py": WINDOW_PROBE})
    return tmp_path


def states(output: str) -> dict[str, bool]:
    line = next(line for line in output.splitlines() if line.startswith("states "))
    return cast(dict[str, bool], json.loads(line[len("states ") :]))


@pytest.mark.parametrize("python", pythons("3.7", "3.8", "3.11", "3.12", "3.13"))
def test_window_only_traces_nothing_outside_the_window(python: str, window_probe: Path) -> None:
    code, document, output = traced(python, window_probe, "--window-only")
    assert code == 0 and document["exit_code"] == 0, output
    # No tracing at all before the window first opens (the imports) and while it is closed.
    assert states(output) == {"start": False, "open": True, "closed": False}
    assert document["window"] == {"only": True, "opened": 2}
    # Only what ran in the window: not the module bodies (imported before), not `before` or
    # `after`, not the rest of `running`, whose frame started before the window opened; the
    # thread started in the window is traced, and a window opened again counts again.
    assert list(document["files"]) == ["pkg/mod.py"]
    expected = sorted({line for lines in LINES.values() for line in lines})
    assert document["files"]["pkg/mod.py"]["lines"] == expected
    firsts = [first for _, first in document["files"]["pkg/mod.py"]["functions"]]
    assert firsts == [9, 14, 16, 22, 36]  # inside, threaded, its lambda, in_thread, again


@pytest.mark.parametrize("python", pythons("3.7", "3.11", "3.13"))
def test_without_window_only_tracing_runs_from_the_start(python: str, window_probe: Path) -> None:
    code, document, output = traced(python, window_probe)
    assert code == 0, output
    assert states(output) == {"start": True, "open": True, "closed": True}
    assert document["window"] == {"only": False, "opened": 2}
    # The window still decides what counts; a frame running when it opened counts from then on.
    expected = sorted(
        {*(line for lines in LINES.values() for line in lines), *RUNNING_AFTER_THE_WINDOW_OPENED}
    )
    assert document["files"]["pkg/mod.py"]["lines"] == expected


@pytest.mark.parametrize("python", pythons("3.7", "3.13"))
def test_window_only_without_a_window_traces_nothing(python: str, tmp_path: Path) -> None:
    write_files(tmp_path, {"site/pkg/__init__.py": "", "site/pkg/mod.py": MODULE})
    (tmp_path / "probe.py").write_text("import pkg.mod\npkg.mod.inside(1)\nraise SystemExit(3)\n")
    code, document, _ = traced(python, tmp_path, "--window-only")
    assert code == 3 and document["exit_code"] == 3
    assert document["files"] == {} and document["window"] == {"only": True, "opened": 0}


# ---- When and how deep each line ran ------------------------------------------------------------

DEEP = """\
import threading


def top(n):
    middle(n)
    return n


def middle(n):
    if n:
        bottom()


def bottom():
    return 0


def later():
    x = 1
    return x


def in_thread():
    return 1


def spawn():
    worker = threading.Thread(target=in_thread)
    worker.start()
    worker.join()
"""
DEEP_PROBE = """\
import builtins
import contextlib

import pkg.deep as deep


@contextlib.contextmanager
def window():
    builtins.__tfbisect_trace__(True)
    try:
        yield
    finally:
        builtins.__tfbisect_trace__(False)


def probe():
    deep.top(0)
    with window():  # as the flagship scenario opens it: from a context manager, in a function
        deep.top(1)
        deep.later()
        deep.spawn()


probe()
"""


@pytest.mark.parametrize("python", pythons("3.7", "3.8", "3.11", "3.12", "3.13"))
@pytest.mark.parametrize("window_only", [True, False])
def test_each_line_has_its_first_execution_order_and_call_depth(
    python: str, window_only: bool, tmp_path: Path
) -> None:
    """Order: the lines as they first ran, across functions (`bottom` before `later`, though
    `later` comes first in neither the file nor the calls' depth).  Depth: from the probe's own
    frame, out of the context manager that opened the window (`top` and `later` called by it: 1),
    the thread's lines none."""
    write_files(tmp_path, {"site/pkg/__init__.py": "", "site/pkg/deep.py": DEEP, "probe.py": DEEP_PROBE})
    code, document, output = traced(python, tmp_path, *(["--window-only"] if window_only else []))
    assert code == 0 and document["schema"] == 2, output
    entry = document["files"]["pkg/deep.py"]
    assert len(entry["first"]) == len(entry["depth"]) == len(entry["lines"])
    first = dict(zip(entry["lines"], entry["first"], strict=True))
    depth = dict(zip(entry["lines"], entry["depth"], strict=True))
    # top, middle, bottom, top's return, later, spawn; the thread's line before or after `join`'s
    ran = [5, 10, 11, 15, 6, 19, 20, 28, 29]
    assert sorted(first, key=first.__getitem__) in ([*ran, 24, 30], [*ran, 30, 24]), first
    assert len(set(first.values())) == len(first), "one number per line"
    assert {line: depth[line] for line in (5, 6, 10, 11, 15, 19, 20, 28)} == {
        5: 1,
        6: 1,
        10: 2,
        11: 2,
        15: 3,
        19: 1,
        20: 1,
        28: 1,
    }
    assert depth[24] is None, "another thread's stack is not below the probe's frame"


def test_a_trace_of_schema_1_reads_as_one_without_order_or_depth() -> None:
    """Traces kept before order and depth were recorded still read: their lines, nothing more."""
    from tfbisect.narrow.traces import Trace

    old = {
        "schema": 1,
        "python": "3.8.18",
        "exit_code": 0,
        "packages": {},
        "files": {"p/m.py": {"lines": [1, 2]}},
    }
    trace = Trace.from_dict(old)
    assert trace.lines == {"p/m.py": frozenset({1, 2})} and trace.first == {} and trace.depth == {}
    # A schema 1 document with the new fields (hand-made) is still read as schema 1: ignored.
    old["files"]["p/m.py"]["first"] = "garbage"  # type: ignore[index]
    assert Trace.from_dict(old).first == {}


# ---- What was imported ----------------------------------------------------------------------------

IMPORTING_PROBE = """\
import builtins

import legacy
import longmod
import ns.a
import pkg
import single

builtins.__tfbisect_trace__(True)
pkg.value()
builtins.__tfbisect_trace__(False)
"""


@pytest.fixture
def importing_probe(tmp_path: Path) -> Path:
    site = tmp_path / "site"
    write_files(
        tmp_path,
        {
            "site/pkg/__init__.py": "def value():\n    return 1\n",
            "site/pkg/mod.py": "",
            "site/other/__init__.py": "",
            "site/ns/a/__init__.py": "",
            "site/ns/b/__init__.py": "",
            "site/single.py": "",
            "site/legacy.py": "",
            "site/longmod.py": "",
            "probe.py": IMPORTING_PROBE,
        },
    )
    distribution(site, "My_Pkg", "1.2.3", ["pkg/__init__.py", "pkg/mod.py"])
    distribution(site, "other", "9.0", ["other/__init__.py"])  # installed, never imported
    # Two distributions in one namespace package: only the one whose part was imported counts.
    distribution(site, "ns-a", "1.0", ["ns/a/__init__.py"])
    distribution(site, "ns.b", "2.0", ["ns/b/__init__.py"])
    distribution(site, "single", "0.1", ["single.py", "../../bin/single-tool"])
    distribution(site, "legacy-dist", "3.0", None, top_level="legacy\n")
    distribution(site, "L" * 150, "1." + "0" * 150, ["longmod.py"])
    # A RECORD row with too many fields: importlib.metadata's own packages_distributions() raises.
    distribution(site, "broken", "0.0", ["broken.py,sha256=x,1,extra"])
    return tmp_path


@pytest.mark.parametrize("python", pythons("3.7", "3.8", "3.11", "3.12", "3.13"))
def test_the_document_names_the_imported_distributions(python: str, importing_probe: Path) -> None:
    code, document, output = traced(python, importing_probe, "--window-only")
    assert code == 0, output
    assert document["files"]["pkg/__init__.py"]["lines"] == [2]
    if version_of(python) < (3, 8):  # no importlib.metadata: unknown, not "nothing"
        assert document["imported"] == {} and document["imported_known"] is False
        return
    imported = document["imported"]
    assert document["imported_known"] is True
    # The package's version comes from the distribution that installed it, whatever its name.
    assert document["packages"]["pkg"]["version"] == "1.2.3"
    mine = {name: version for name, version in imported.items() if not name.startswith("l" * 20)}
    expected = {"my-pkg": "1.2.3", "ns-a": "1.0", "single": "0.1", "legacy-dist": "3.0"}
    assert {name: mine[name] for name in expected if name in mine} == expected
    assert "other" not in imported and "ns-b" not in imported
    assert imported["l" * 100] == "1." + "0" * 98  # names and versions clipped to 100 characters
    assert list(imported) == sorted(imported)


def test_the_list_of_imported_distributions_is_bounded(tmp_path: Path) -> None:
    site = tmp_path / "site"
    for number in range(2100):
        write_files(site, {f"mod{number}.py": ""})
        distribution(site, f"dist{number}", "1.0", [f"mod{number}.py"])
    (tmp_path / "probe.py").write_text("for n in range(2100):\n    __import__('mod%d' % n)\n")
    code, document, output = traced(sys.executable, tmp_path)
    assert code == 0, output
    assert len(document["imported"]) == 2000 and document["imported_known"] is True


# ---- The scenario's --probe, where no TF is needed ---------------------------------------------


@pytest.mark.parametrize("python", pythons("3.6", "3.11"))
def test_an_unknown_probe_is_a_skip_before_tensorflow_is_imported(python: str, tmp_path: Path) -> None:
    output = tmp_path / "result.json"
    command = [python, str(SCENARIO), "--output", str(output), "--probe", "training_loop", "--probe", "nope"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 125
    message = "no probe named nope; the probes are: " + ", ".join(ALL_PROBES)
    assert message in done.stderr
    raw = output.read_bytes()
    document = json.loads(raw)
    # Not "TensorFlow cannot be imported": the name was refused first (this Python has no TF).
    assert document["verdict"] == {"outcome": "skip", "summary": message, "disagreements": []}
    outcome, _, failure = classify(
        125, raw, "", timed_out=False, expected_sha256=find("gradient_mismatch").sha256
    )
    assert outcome is Outcome.SKIP and failure is not None and failure.message == message


def test_the_probes_asked_for_are_recorded_in_the_document(tmp_path: Path) -> None:
    output = tmp_path / "result.json"
    command = [sys.executable, str(SCENARIO), "--output", str(output)]
    command += ["--probe", "fit_shape_robust", "--probe", "gradient_eager_plain"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 125  # this Python has no TensorFlow
    document = json.loads(output.read_text())
    assert document["scenario"]["parameters"]["probes"] == ["gradient_eager_plain", "fit_shape_robust"]
    assert "TensorFlow cannot be imported" in document["verdict"]["summary"]


# ---- The backends' traced launches ----------------------------------------------------------------

REQUEST = Traced(TRACER, ("tensorflow", "keras"), ("gradient_eager_plain", "training_loop"))


def test_venv_launch_runs_the_scenario_under_the_tracer(tmp_path: Path) -> None:
    from tfbisect.envs.backend_venv import VenvBackend

    backend = VenvBackend(tmp_path, Progress(quiet=True), {})
    scenario = find("gradient_mismatch")
    python = tmp_path / "env" / "bin" / "python"
    probes = ["--probe", "gradient_eager_plain", "--probe", "training_loop"]
    with backend.launch(EnvSpec("2.4.0", "3.8"), scenario, python, tmp_path, REQUEST) as launch:
        assert launch.argv == [
            str(python),
            str(TRACER),
            "--packages",
            "tensorflow,keras",
            "--window-only",
            "--output",
            str(tmp_path / "trace.json"),
            "--",
            str(scenario.path),
            "--output",
            str(tmp_path / "result.json"),
            *probes,
        ]
        assert launch.trace == tmp_path / "trace.json" and launch.results is None
    untraced = Traced(None, (), REQUEST.probes)
    with backend.launch(EnvSpec("2.4.0", "3.8"), scenario, python, tmp_path, untraced) as launch:
        assert launch.argv == [
            str(python),
            str(scenario.path),
            "--output",
            str(tmp_path / "result.json"),
            *probes,
        ]
        assert launch.trace is None


class FakeEngine:
    """What `DockerBackend.launch` asks of an engine to build its command line (no engine runs)."""

    def command(self, *args: str) -> list[str]:
        return ["docker", *args]

    @contextlib.contextmanager
    def container_name(self, stem: str, *, keep: bool = False) -> Iterator[str]:
        yield f"tfbisect-{stem}-0"

    def has_nvidia_runtime(self) -> bool:
        return False

    def image_repo_digest(self, ref: str) -> str | None:
        return None

    def run_env(self, env: dict[str, str]) -> dict[str, str]:
        return dict(env)


IMAGE = Image(
    "tfbisect:tf2.4.0-py3.8-cpu-x",
    "sha256:1",
    Base("python:3.8", "3.8", "official", "sha256:0"),
    EnvSpec("2.4.0", "3.8").flavour,
    False,
)


def test_docker_launch_mounts_the_tracer_read_only(tmp_path: Path) -> None:
    backend = DockerBackend(tmp_path, Progress(quiet=True), engine=cast(Engine, FakeEngine()))
    scenario = find("gradient_mismatch")
    spec = EnvSpec("2.4.0", "3.8", backend="docker")
    (tmp_path / "traced").mkdir()
    with backend.launch(spec, scenario, IMAGE, tmp_path / "traced", REQUEST) as launch:
        argv = launch.argv
        assert (
            f"{TRACER}:{TRACER_PATH}:ro" in argv
            and f"{scenario.path}:/scenario/{scenario.path.name}:ro" in argv
        )
        assert argv[argv.index(IMAGE.tag) + 1 :] == [
            "python",
            TRACER_PATH,
            "--packages",
            "tensorflow,keras",
            "--window-only",
            "--output",
            "/out/trace.json",
            "--",
            f"/scenario/{scenario.path.name}",
            "--output",
            "/out/result.json",
            "--probe",
            "gradient_eager_plain",
            "--probe",
            "training_loop",
        ]
        assert "--read-only" in argv and argv[argv.index("--user") + 1] == "10001:10001"
        assert launch.results == tmp_path / "traced" / "out" and launch.trace == launch.results / "trace.json"
    (tmp_path / "plain").mkdir()
    with backend.launch(spec, scenario, IMAGE, tmp_path / "plain") as launch:
        assert not any(TRACER_PATH in argument for argument in launch.argv) and launch.trace is None
        assert launch.argv[-4:] == [
            "python",
            f"/scenario/{scenario.path.name}",
            "--output",
            "/out/result.json",
        ]


def test_swarm_refuses_single_probe_runs(tmp_path: Path) -> None:
    address = SwarmAddress("unix:///nonexistent/manager.sock", "localhost:5000", "localhost:5000")
    backend = SwarmBackend(tmp_path, Progress(quiet=True), address)
    spec = EnvSpec("2.4.0", "3.8", backend="swarm")
    with (
        pytest.raises(TraceError, match="do not go to a swarm") as info,
        backend.launch(spec, find("gradient_mismatch"), SwarmImage(IMAGE, "registry/x"), tmp_path, REQUEST),
    ):
        pass
    assert "Docker backend" in info.value.todo


# ---- Runner.trace in a real venv (no TF: the standard library's json is the traced package) --------

CONTRACT_SCENARIO = """\
import argparse
import builtins
import json
import os
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--output")
parser.add_argument("--probe", action="append")
args = parser.parse_args()
json.loads('{"outside": "the window"}')  # json's decoder: not traced
window = getattr(builtins, "__tfbisect_trace__", None)
if window is not None:
    window(True)
try:
    text = json.dumps({"probes": args.probe}, indent=1)  # json's encoder, in the window
finally:
    if window is not None:
        window(False)
print("probe " + " ".join(args.probe))
if "die" in args.probe:
    os._exit(3)  # no tracer gets to write anything
if "hang" in args.probe:
    time.sleep(600)
open(args.output, "w").write(text)
sys.exit(1 if "bad" in args.probe else 0)
"""


@pytest.fixture
def venv_runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Runner, EnvSpec, Scenario]:
    monkeypatch.setenv("TFBISECT_LOCKS", str(empty_locks(tmp_path / "locks", ("2.21.0",))))
    python = interpreters.find("3.11")
    assert python is not None
    settings = Settings(reports_dir=tmp_path / "reports", cache_dir=tmp_path / "cache", timeout=60)
    runner = Runner(CAT, settings, Progress(quiet=True), have={"3.11": python})
    (tmp_path / "contract.py").write_text(CONTRACT_SCENARIO)
    return runner, EnvSpec("2.21.0", "3.11"), find(str(tmp_path / "contract.py"))


def test_runner_traces_probes_alone(
    venv_runner: tuple[Runner, EnvSpec, Scenario],
) -> None:
    runner, spec, scenario = venv_runner
    done = runner.trace(spec, scenario, ["first", "bad"], ["json"])
    assert (done.spec, done.probes, done.exit_code) == (spec, ("first", "bad"), 1)
    assert done.result == {"probes": ["first", "bad"]}
    # Only what the window saw of the traced package: dumps and its encoder, not the decoder.
    assert sorted(done.document["files"]) == ["json/__init__.py", "json/encoder.py"]
    assert done.document["window"] == {"only": True, "opened": 1} and done.document["exit_code"] == 1
    assert 0 < done.seconds < 60
    assert re.fullmatch(r"tf2\.21\.0-py3\.11-cpu-venv\.trace-first\+bad\.\d{8}T\d{6}-\d+\.log", done.log.name)
    assert done.log.parent == runner.log_dir(scenario)
    assert "--window-only" in done.log.read_text().splitlines()[0]
    assert not list((runner.settings.reports_dir / "results").rglob("*.json")), "no run's record"
    assert runner.stored(spec, scenario) is None

    plain = runner.trace(spec, scenario, ["first"], ["json"], traced=False)  # the tracer's yardstick
    assert plain.document == {} and plain.result == {"probes": ["first"]} and plain.exit_code == 0
    assert ".probes-first." in plain.log.name and str(TRACER.name) not in plain.log.read_text()
    whole = runner.trace(spec, scenario, ["first"], ["json"], window_only=False)
    assert whole.document["window"] == {"only": False, "opened": 1}


def kept(run: tracing.TraceRun) -> tracing.TraceRun:
    """A run stored as the narrowing stores one its checks accept (`ProbeRunner.traced`)."""
    run.keep()
    return run


def stored_traces(runner: Runner) -> list[Path]:
    return sorted((runner.settings.reports_dir / "results" / STORE_FOLDER).rglob(f"*{STORED_SUFFIX}"))


def test_traced_runs_are_stored_and_reused_unless_forced(
    venv_runner: tuple[Runner, EnvSpec, Scenario], capsys: pytest.CaptureFixture[str]
) -> None:
    runner, spec, scenario = venv_runner
    first = kept(runner.trace(spec, scenario, ["first", "bad"], ["json"]))
    [path] = stored_traces(runner)
    assert not first.reused and path.parent.name == scenario.slug
    logs = sorted(runner.log_dir(scenario).glob("*.log"))
    again = kept(runner.trace(spec, scenario, ["first", "bad"], ["json"]))
    assert again.reused and sorted(runner.log_dir(scenario).glob("*.log")) == logs, "no run now"
    assert (again.document, again.result, again.exit_code) == (first.document, first.result, 1)
    assert (again.probes, again.log, again.seconds) == (first.probes, first.log, round(first.seconds, 3))
    # Keyed by the probes, the packages, traced or not: each of these is a run of its own.
    for probes, packages, traced in ((["first"], ["json"], True), (["first", "bad"], ["csv"], True)):
        assert not kept(runner.trace(spec, scenario, probes, packages, traced=traced)).reused
    untraced = kept(runner.trace(spec, scenario, ["first"], ["json"], traced=False))
    assert not untraced.reused and kept(runner.trace(spec, scenario, ["first"], [], traced=False)).reused
    # csv is no package here: that run traced nothing, so it was not stored and runs again.
    assert len(stored_traces(runner)) == 3
    assert not kept(runner.trace(spec, scenario, ["first", "bad"], ["csv"])).reused
    forced = Runner(CAT, replace(runner.settings, force=True), Progress(quiet=True), have=runner.have)
    assert not kept(forced.trace(spec, scenario, ["first", "bad"], ["json"])).reused


@pytest.mark.parametrize(
    "damage",
    [
        b"{not json",
        b'{"schema": 1}',
        b"[]",
        b'{"schema": 2, "key": "x"}',
        "too large",
        "another key",
        "a bad field",
        "not a trace",
        "stored untraced",
        "a FIFO",
        "a link to /dev/zero",
    ],
)
def test_a_damaged_stored_trace_is_run_again_with_a_note(
    venv_runner: tuple[Runner, EnvSpec, Scenario],
    damage: bytes | str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    runner, spec, scenario = venv_runner
    said = io.StringIO()
    runner.progress = Progress(said)
    first = kept(runner.trace(spec, scenario, ["first"], ["json"]))
    [path] = stored_traces(runner)
    stored = json.loads(path.read_text())
    if damage == "too large":
        monkeypatch.setattr(tracing, "STORED_MAX_BYTES", 100)
    elif damage == "another key":
        path.write_text(json.dumps({**stored, "key": "0" * 64}))
    elif damage == "a bad field":
        path.write_text(json.dumps({**stored, "seconds": -1, "exit_code": "1"}))
    elif damage == "not a trace":
        path.write_text(json.dumps({**stored, "document": {"schema": 1, "files": []}}))
    elif damage == "stored untraced":  # the same key, flipped by hand: asked traced, not reused
        path.write_text(json.dumps({**stored, "traced": False}))
    elif damage == "a FIFO":  # read blocking, it would wait for a writer forever
        path.unlink()
        os.mkfifo(path)
    elif damage == "a link to /dev/zero":  # read whole, it would fill the memory
        path.unlink()
        path.symlink_to("/dev/zero")
    else:
        assert isinstance(damage, bytes)
        path.write_bytes(damage)
    again = kept(runner.trace(spec, scenario, ["first"], ["json"]))
    assert not again.reused and again.document["files"] == first.document["files"]
    assert f"the stored traced run {path} is damaged" in said.getvalue(), said.getvalue()
    monkeypatch.setattr(tracing, "STORED_MAX_BYTES", 64 * 2**20)
    assert kept(runner.trace(spec, scenario, ["first"], ["json"])).reused, "the rerun replaced it"


def test_a_traced_run_too_large_to_store_is_not_stored(
    venv_runner: tuple[Runner, EnvSpec, Scenario], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, spec, scenario = venv_runner
    said = io.StringIO()
    runner.progress = Progress(said)
    monkeypatch.setattr(tracing, "STORED_MAX_BYTES", 100)
    assert not kept(runner.trace(spec, scenario, ["first"], ["json"])).reused
    assert not stored_traces(runner) and "not stored" in said.getvalue()
    assert not kept(runner.trace(spec, scenario, ["first"], ["json"])).reused


def test_a_traced_run_is_stored_only_once_kept_and_a_dropped_one_runs_again(
    venv_runner: tuple[Runner, EnvSpec, Scenario],
) -> None:
    runner, spec, scenario = venv_runner
    first = runner.trace(spec, scenario, ["first"], ["json"])
    assert not stored_traces(runner), "not stored before its caller's checks accept it"
    assert not runner.trace(spec, scenario, ["first"], ["json"]).reused
    first.keep()
    [path] = stored_traces(runner)
    again, inode = runner.trace(spec, scenario, ["first"], ["json"]), path.stat().st_ino
    again.keep()  # a reused run is not written again
    assert again.reused and path.stat().st_ino == inode
    again.drop()  # its caller's checks rejected it
    assert not stored_traces(runner) and not runner.trace(spec, scenario, ["first"], ["json"]).reused
    first.drop()  # a run made now has nothing stored to forget
    assert not stored_traces(runner)


def test_the_narrowing_stores_only_the_traces_its_checks_accept(
    venv_runner: tuple[Runner, EnvSpec, Scenario], tmp_path: Path
) -> None:
    """The contract scenario names its probes as bare strings, so the narrowing's check finds the
    probe did not run: that trace is not stored (it was, and was reused, before); one whose
    result names the probe is stored, and a second narrowing reuses it."""
    runner, spec, scenario = venv_runner

    def probe_runner(on: Scenario) -> ProbeRunner:
        def trace(spec: EnvSpec, probes: Sequence[str], packages: Sequence[str], traced: bool) -> TraceRun:
            return runner.trace(spec, on, probes, packages, traced=traced, window_only=bool(probes))

        return ProbeRunner(trace, ("json",), lambda text: None)

    for _ in range(2):
        rejected = probe_runner(scenario)
        rejected.traced(spec, "first")
        assert (rejected.runs, rejected.reused) == (1, 0) and not stored_traces(runner)
    named = tmp_path / "named.py"
    named.write_text(
        CONTRACT_SCENARIO.replace('{"probes": args.probe}', '{"probes": [{"name": p} for p in args.probe]}')
    )
    accepted = probe_runner(find(str(named)))
    checked_trace(accepted.traced(spec, "first"), "first", spec.label)
    assert (accepted.runs, accepted.reused) == (1, 0) and len(stored_traces(runner)) == 1
    again = probe_runner(find(str(named)))
    checked_trace(again.traced(spec, "first"), "first", spec.label)
    assert (again.runs, again.reused) == (0, 1)


def test_a_disk_that_cannot_store_a_traced_run_loses_nothing(
    venv_runner: tuple[Runner, EnvSpec, Scenario], monkeypatch: pytest.MonkeyPatch
) -> None:
    runner, spec, scenario = venv_runner
    said = io.StringIO()
    runner.progress = Progress(said)

    def full(path: Path, text: str, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(tracing, "write_text_atomic", full)
    done = runner.trace(spec, scenario, ["first"], ["json"])
    done.keep()  # no exception: the run stands
    assert done.result == {"probes": ["first"]} and not stored_traces(runner)
    note = said.getvalue()
    assert "the traced run of first was not stored (" in note and "No space left on device" in note
    assert "free space (or make" in note, "what to do"


def test_the_trace_key_covers_a_plain_scripts_harness_and_its_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    spec = EnvSpec("2.21.0", "3.11")

    def key(scenario: Scenario) -> str:
        return tracing.trace_key(spec, "lock", scenario, ("script",), ("tensorflow",), True, True)

    plain = Scenario("repro", Path("/x/repro.py"), "a" * 64)
    script = replace(plain, script=True)
    flagged = replace(script, bad_if_raises=("ValueError",))
    keys = {key(plain), key(script), key(flagged), key(replace(script, bad_if_raises=("TypeError",)))}
    assert len(keys) == 4
    real = tracing.data_sha256
    monkeypatch.setattr(
        tracing, "data_sha256", lambda name: "0" * 64 if name == "script_harness.py" else real(name)
    )
    assert key(script) not in keys, "another harness: another key"
    assert key(plain) in keys, "a scenario that runs no harness keeps its key"


def test_runner_trace_without_a_trace_is_a_trace_error(
    venv_runner: tuple[Runner, EnvSpec, Scenario],
) -> None:
    runner, spec, scenario = venv_runner
    with pytest.raises(TraceError) as info:
        runner.trace(spec, scenario, ["die"], ["json"])
    assert "the traced run of die exited 3 and wrote no trace" in info.value.what
    assert "probe die" in info.value.what  # its last output
    log = next(runner.log_dir(scenario).glob("*.trace-die.*.log"))
    assert str(log) in info.value.todo
    with pytest.raises(TraceError, match="lower-case letters"):
        runner.trace(spec, scenario, ["../x"], ["json"])
    with pytest.raises(TraceError, match=r"Python 3\.7 or newer"):
        runner.trace(EnvSpec("2.1.4", "3.6"), scenario, ["first"], ["json"])


def test_runner_trace_timeout_is_a_trace_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFBISECT_LOCKS", str(empty_locks(tmp_path / "locks", ("2.21.0",))))
    python = interpreters.find("3.11")
    assert python is not None
    settings = Settings(reports_dir=tmp_path / "reports", cache_dir=tmp_path / "cache", timeout=3)
    runner = Runner(CAT, settings, Progress(quiet=True), have={"3.11": python})
    (tmp_path / "contract.py").write_text(CONTRACT_SCENARIO)
    with pytest.raises(TraceError, match="timed out and wrote no trace"):
        runner.trace(EnvSpec("2.21.0", "3.11"), find(str(tmp_path / "contract.py")), ["hang"], ["json"])


def test_runner_trace_of_an_environment_that_cannot_be_built(tmp_path: Path) -> None:
    settings = Settings(reports_dir=tmp_path / "reports", cache_dir=tmp_path / "cache", timeout=60)
    runner = Runner(CAT, settings, Progress(quiet=True), have={})
    with pytest.raises(TraceError, match=r"could not be prepared: Python 3\.8 is not installed here") as info:
        runner.trace(
            EnvSpec("2.4.0", "3.8"), find("gradient_mismatch"), ["gradient_eager_plain"], ["tensorflow"]
        )
    assert "pyenv install 3.8" in info.value.todo


# ---- Real TensorFlow -------------------------------------------------------------------------------

TF_PACKAGES = ("tensorflow", "tensorflow_core", "keras", "tf_keras")


@pytest.mark.slow
def test_tf_2_4_probe_traced_alone(tmp_path: Path) -> None:
    """TF 2.4.0 on Python 3.8, its venv built through the Runner (uv's wheel cache keeps it quick):
    the eager plain gradient is wrong there (README), traced alone and untraced."""
    settings = Settings(reports_dir=tmp_path / "reports", cache_dir=tmp_path / "cache", timeout=600)
    runner = Runner(CAT, settings, Progress(quiet=True))
    spec = runner.spec_for("2.4.0", python="3.8")
    scenario = find("gradient_mismatch")
    done = runner.trace(spec, scenario, ["gradient_eager_plain"], TF_PACKAGES)
    assert done.exit_code == 1 and done.result is not None  # reproduced
    assert [(p["name"], p["outcome"]) for p in done.result["probes"]] == [
        ("gradient_eager_plain", "mismatch")
    ]
    assert done.result["scenario"]["parameters"]["probes"] == ["gradient_eager_plain"]
    document = done.document
    assert document["window"] == {"only": True, "opened": 1} and document["python"].startswith("3.8.")
    # TF 2.4 bundles Keras, tensorflow_core is 2.0-2.1; the wheel is the distribution tensorflow-cpu.
    assert document["packages"] == {"tensorflow": {"root": ANY, "version": "2.4.0"}}
    files = document["files"]
    # The probe's own work only: the loss and the tape ran, the import did not.
    assert "tensorflow/__init__.py" not in files
    assert "tensorflow/python/keras/losses.py" in files and "tensorflow/python/eager/backprop.py" in files
    assert document["imported_known"] is True
    assert document["imported"]["tensorflow-cpu"] == "2.4.0" and "numpy" in document["imported"]

    plain = runner.trace(spec, scenario, ["gradient_eager_plain"], TF_PACKAGES, traced=False)
    assert plain.document == {} and plain.exit_code == 1 and plain.result is not None
    assert plain.result["probes"][0]["outcome"] == "mismatch"

    # Probes that are not gradients decide the verdict when no gradient probe was asked for.
    python = runner.environment("venv").prepare(spec, runner.lock_for(spec), tmp_path)
    output = tmp_path / "training.json"
    command = [
        str(python),
        str(SCENARIO),
        "--output",
        str(output),
        "--probe",
        "training_loop",
        "--epochs",
        "2",
    ]
    ran = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    raw = output.read_bytes()
    outcome, result, _ = classify(
        ran.returncode, raw, ran.stdout, timed_out=False, expected_sha256=scenario.sha256
    )
    assert outcome is Outcome.REPRODUCED and result is not None, ran.stdout + ran.stderr
    assert [p["name"] for p in result["probes"]] == ["training_loop"]
    assert result["verdict"]["summary"] == "reproduced: off the class_weight reference curve in training_loop"
