"""`--script FILE`: a plain repro script as the scenario, through the one command-line builder,
its identity (the file and the harness options that change its verdict), the refusal of a
stranger's code outside containers, the summary others can rerun, and a scenario that takes no
`--probe` traced whole by the narrowing."""

from __future__ import annotations

import dataclasses
import shlex
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from test_narrowing import HAVE, _trace_document, found_report, narrower, record
from test_report import report_data, write_bisect_log
from tfbisect.cli import build_parser, options_for
from tfbisect.commands.common import allowed_backends
from tfbisect.core import catalogue, issuetext, scenario
from tfbisect.core.errors import ScenarioError, UsageError
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.spec import EnvSpec
from tfbisect.envs import locks
from tfbisect.narrow.traces import refused_probe
from tfbisect.report import mdsummary
from tfbisect.runs.runner import Runner, RunResult, Settings, reproduce_command
from tfbisect.runs.tracing import TraceRun
from tfbisect.search.bisectplan import BisectRequest

from conftest import ROOT

SPEC = EnvSpec("2.2.3", "3.8")
LOCK = locks.load(locks.LockSpec("2.2.3", "3.8"))
FAKE_TF = '__version__ = "2.2.3"\n\nclass version:\n    GIT_VERSION = "v2.2.3-fake"\n'


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---- the options and the identity --------------------------------------------------------------


def test_script_and_scenario_exclude_each_other() -> None:
    with pytest.raises(SystemExit) as stopped:
        build_parser().parse_args(["run", "--tf", "2.3", "--script", "a.py", "--scenario", "b"])
    assert stopped.value.code == 2


def test_a_script_round_trips_with_its_flags(tmp_path: Path) -> None:
    repro = write(tmp_path / "repro.py", "assert True\n")
    parser = build_parser()
    words = [
        "bisect",
        "--script",
        str(repro),
        "--bad-if-raises",
        "ValueError:bad",
        "--bad-if-raises",
        "KeyError",
    ]
    options = options_for(parser.parse_args(words))
    assert options.env.script == str(repro) and options.env.bad_if_raises == ("ValueError:bad", "KeyError")
    again = options.to_argv()
    assert options_for(parser.parse_args(again[1:])) == options
    assert "--scenario" not in again


def test_the_flags_are_part_of_the_identity(tmp_path: Path) -> None:
    repro = write(tmp_path / "repro.py", "assert True\n")
    plain = scenario.find_script(str(repro))
    raising = scenario.find_script(str(repro), ("ValueError",))
    other = scenario.find_script(str(repro), ("KeyError",))
    as_scenario = scenario.find(str(repro))
    # the same bytes: the same sha256 (what the harness writes), never the same stored name
    assert plain.sha256 == raising.sha256 == as_scenario.sha256
    assert len({plain.name, raising.name, other.name, as_scenario.name}) == 4
    assert plain.name == "repro.script" and raising.slug == raising.name
    assert plain.arguments("/s/repro.py", "/h.py") == [
        "/h.py",
        "--script",
        "/s/repro.py",
        "--name",
        plain.name,
    ]
    assert raising.arguments("/s/repro.py", "/h.py")[3:5] == ["--bad-if-raises", "ValueError"]
    assert as_scenario.arguments("/s/repro.py", "/h.py") == ["/s/repro.py"]


def test_bad_if_raises_needs_a_script() -> None:
    with pytest.raises(ScenarioError) as refused:
        scenario.chosen(scenario.DEFAULT, None, ("ValueError",))
    assert refused.value.todo


def test_the_stored_runs_command_names_the_script_with_its_flags(tmp_path: Path) -> None:
    repro = scenario.find_script(str(write(tmp_path / "repro.py", "assert True\n")), ("ValueError",))
    words = shlex.split(reproduce_command(SPEC, repro))
    assert words[words.index("--script") + 1] == str(repro.path)
    assert words[words.index("--bad-if-raises") + 1] == "ValueError"
    back = options_for(build_parser().parse_args(words[1:]))
    assert scenario.chosen(back.env.scenario, back.env.script, back.env.bad_if_raises) == repro


def test_the_log_keeps_the_script_and_its_flags(tmp_path: Path) -> None:
    repro = scenario.find_script(str(write(tmp_path / "repro.py", "assert True\n")), ("KeyError",))
    request = BisectRequest(scenario=repro, good="2.3", bad="2.4", backend="venv")
    kept = request.to_record()
    assert kept["script"] is True and kept["bad_if_raises"] == ["KeyError"]
    assert BisectRequest.from_record(kept, repro) == request
    words = shlex.split(request.command())
    assert "--script" in words and "--scenario" not in words


# ---- a stranger's code --------------------------------------------------------------------------


def test_a_marked_script_is_refused_on_the_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marked = write(tmp_path / "from_issue.py", issuetext.mark("assert 1\n", "o/r#1"))
    chosen = scenario.find_script(str(marked))
    with pytest.raises(UsageError) as refused:
        allowed_backends(chosen, ("venv",), trusted=False, progress=Progress())
    assert "stranger's code" in refused.value.what and "--trust-script" in refused.value.todo
    # auto with an engine: containers only, the releases no image fits are skipped
    assert allowed_backends(chosen, ("docker", "venv"), trusted=False, progress=Progress()) == ("docker",)
    assert allowed_backends(chosen, ("docker",), trusted=False, progress=Progress()) == ("docker",)
    # trusted: it runs here, and the user is told so
    capsys.readouterr()
    assert allowed_backends(chosen, ("venv",), trusted=True, progress=Progress()) == ("venv",)
    assert "on this host" in capsys.readouterr().err
    # the mark removed: the user vouches for it
    unmarked = write(tmp_path / "mine.py", "assert 1\n")
    assert allowed_backends(
        scenario.find_script(str(unmarked)), ("venv",), trusted=False, progress=Progress()
    )


def test_run_refuses_a_marked_script_with_backend_venv(tmp_path: Path) -> None:
    marked = write(tmp_path / "from_issue.py", issuetext.mark("assert 1\n", "o/r#1"))
    done = subprocess.run(
        [sys.executable, "-m", "tfbisect", "--reports", str(tmp_path / "r"), "run", "--tf", "2.3",
         "--script", str(marked), "--backend", "venv"],
        capture_output=True, text=True, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode != 0 and "stranger's code" in done.stderr and "--trust-script" in done.stderr


# ---- a script's ending, through the driver's own reading ---------------------------------------


@pytest.fixture(scope="module")
def fake_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv whose `tensorflow` is a stand-in, as the venv backend would run in."""
    folder = tmp_path_factory.mktemp("env")
    venv.create(folder, with_pip=False)
    [site] = sorted((folder / "lib").glob("python*/site-packages"))
    (site / "tensorflow").mkdir()
    (site / "tensorflow" / "__init__.py").write_text(FAKE_TF)
    return folder / "bin" / "python"


def _run(tmp_path: Path, python: Path, body: str, raises: tuple[str, ...] = ()) -> tuple[Outcome, str]:
    chosen = scenario.find_script(str(write(tmp_path / "repro.py", body)), raises)
    settings = Settings(reports_dir=tmp_path / "reports", cache_dir=tmp_path / "cache", timeout=60)
    runner = Runner(catalogue.load_snapshot(), settings, Progress(quiet=True), have={})
    done = runner.execute(SPEC, chosen, python, LOCK, "now")
    assert done.scenario == chosen.name and done.scenario_sha256 == chosen.sha256
    return done.outcome, done.failure.type if done.failure else ""


def test_an_api_an_old_release_lacks_is_a_failing_end_never_bad(tmp_path: Path, fake_env: Path) -> None:
    """The repro calls an API this release does not have: an error (a failing end), not the bug."""
    missing = "import tensorflow as tf\ntf.experimental.numpy.ones(3)\n"
    assert _run(tmp_path, fake_env, missing) == (Outcome.ERROR, "AttributeError")
    # ... unless the user says that exception is the bug
    assert _run(tmp_path, fake_env, missing, ("AttributeError",))[0] is Outcome.REPRODUCED
    assert _run(tmp_path, fake_env, missing, ("AttributeError:no such",))[0] is Outcome.ERROR
    # an assert is the bug; ending normally is not
    assert (
        _run(tmp_path, fake_env, "import tensorflow as tf\nassert tf.__version__ == '9'\n")[0]
        is Outcome.REPRODUCED
    )
    assert (
        _run(tmp_path, fake_env, "import tensorflow as tf\nprint(tf.__version__)\n")[0]
        is Outcome.NOT_REPRODUCED
    )


# ---- the summary ------------------------------------------------------------------------------


def test_the_summary_carries_the_script_and_names_it_by_file_name(tmp_path: Path) -> None:
    write_bisect_log(tmp_path, command="tfbisect bisect --script /home/me/work/repro.py --good 2.3 --bad 2.4")
    data = report_data(tmp_path)
    source = mdsummary.Source(
        "repro.py", "import tensorflow as tf\nassert tf.ones(1).dtype == tf.float32\n", True
    )
    text = mdsummary.render(data, source=source)
    assert "<details><summary>The script `repro.py`" in text
    assert "assert tf.ones(1).dtype == tf.float32" in text
    assert "`tfbisect bisect --script repro.py --good 2.3 --bad 2.4`" in text
    assert "/home/me" not in text
    assert mdsummary.shareable("tfbisect run --tf 2.7.0 --script /a/b/repro.py") == (
        "tfbisect run --tf 2.7.0 --script repro.py"
    )
    assert mdsummary.shareable("tfbisect run --scenario gradient_mismatch") == (
        "tfbisect run --scenario gradient_mismatch"
    )


def test_a_huge_script_still_fits_a_comment(tmp_path: Path) -> None:
    write_bisect_log(tmp_path)
    data = report_data(tmp_path)
    source = mdsummary.Source("repro.py", "x = 1  # " + "y" * 200 + "\n" * 1 + ("z = 2\n" * 30_000), True)
    text = mdsummary.render(data, source=source)
    assert len(text) <= 65_536 and text.rstrip().endswith("</details>")
    assert "characters cut" in text


# ---- a scenario without --probe: traced whole -------------------------------------------------


def test_a_scenario_without_probe_exits_2_on_one_probe(tmp_path: Path) -> None:
    old = ROOT / "tests" / "data" / "scenarios" / "no_probe.py"
    output = tmp_path / "r.json"
    done = subprocess.run(
        [sys.executable, str(old), "--output", str(output), "--probe", "changed"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and not output.exists()
    run = TraceRun(SPEC, ("changed",), {}, None, 0.1, done.returncode, tmp_path / "log")
    assert refused_probe(run)
    assert not refused_probe(dataclasses.replace(run, result={"probes": []}))


def test_the_narrowing_traces_a_scenario_without_probe_whole(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    runner = Runner(
        catalogue.load_snapshot(), Settings(tmp_path, tmp_path / "cache"), Progress(quiet=True), have=HAVE
    )
    request = BisectRequest(scenario=scenario.find(str(ROOT / "tests/data/scenarios/no_probe.py")))
    report = found_report(request, "2.3.4", "2.4.0")
    asked: list[tuple[str, ...]] = []
    document = _trace_document({"tensorflow/x.py": {"lines": [1]}}) | {"window": {"opened": 0}}

    def trace(
        spec: EnvSpec, scenario: object, probes: list[str], *args: object, **kwargs: object
    ) -> TraceRun:
        asked.append(tuple(probes))
        if probes:  # argparse: unknown option, nothing written
            return TraceRun(spec, tuple(probes), {"files": {}}, None, 1.0, 2, tmp_path / "t.log")
        assert kwargs.get("window_only") is False or kwargs.get("window_only") is None
        result = {"probes": [{"name": "gradient_eager_plain"}, {"name": "gradient_eager_decorated"}]}
        return TraceRun(spec, (), document, result, 1.0, 0, tmp_path / "t.log")

    monkeypatch.setattr(runner, "trace", trace)
    monkeypatch.setattr(runner, "source_places", lambda spec, scenario: [])

    def execute(spec: EnvSpec) -> RunResult:
        return RunResult(record(spec, spec.tf_version == "2.4.0"), reused=False, seconds=1.0)

    found = narrower(report, request, runner, tmp_path / "log.json", None, execute).run()
    # both builds traced whole (the suspects then need real installed sources, which these lack)
    assert found.trace is not None and {"failing_old", "failing_new"} <= set(found.trace.seconds)
    assert found.trace.error is None or "traced nothing" not in str(found.trace.error)
    assert () in asked  # traced whole
    assert found.trace.passing_probe is None  # a whole run is no control


def test_report_renders_the_newest_bisection_of_a_script_given_by_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tfbisect.cli import main

    repro = scenario.find_script(str(write(tmp_path / "repro.py", "assert True\n")), ("KeyError",))
    request = BisectRequest(scenario=repro, good="2.3.4", bad="2.4.0", backend="venv").to_record()
    write_bisect_log(tmp_path, "script.json", request=request)
    assert main(["--reports", str(tmp_path), "report"]) == 0  # no options: the newest bisection's
    summary = (tmp_path / "summary.md").read_text()
    assert (
        summary.startswith(f"### tfbisect {mdsummary.escape(repro.name)}")
        and "<details><summary>The script `repro.py`" in summary
    )
    assert (
        main(["--reports", str(tmp_path), "report", "--bisect", str(tmp_path / "bisect" / "script.json")])
        == 0
    )
    (tmp_path / "repro.py").unlink()
    assert (
        main(["--reports", str(tmp_path), "report", "--bisect", str(tmp_path / "bisect" / "script.json")])
        != 0
    )
    assert "not there any more" in capsys.readouterr().err
