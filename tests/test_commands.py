"""Commands tfbisect prints (resume, reproduce) run as printed: they round-trip through the parser."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tfbisect.cli import build_parser
from tfbisect.core.scenario import find
from tfbisect.core.spec import EnvSpec, Flavour, KerasVariant
from tfbisect.runs.runner import reproduce_command
from tfbisect.search.bisection import BisectRequest

from conftest import ROOT


def parsed(command: str) -> object:
    words = shlex.split(command)
    assert words[0] == "tfbisect"
    return build_parser().parse_args(words[1:])


REQUESTS = [
    BisectRequest(scenario=find("gradient_mismatch")),
    BisectRequest(
        scenario=find("gradient_mismatch"),
        good="2.3.0",
        bad="2.4.1",
        probe="gradient_eager_plain",
        flavour=Flavour.CUDA,
        keras=KerasVariant.LEGACY,
        backend="docker",
        venv_fallback=True,
        python="3.11",
        jobs=3,
        pre=True,
        confirm=True,
        term_old="fast",
        term_new="slow",
        timeout=120.5,
        regress="error",
    ),
    BisectRequest(scenario=find("gradient_mismatch"), backend="venv", timeout=60),
]


@pytest.mark.parametrize("request_", REQUESTS)
def test_a_bisect_command_parses_back_to_the_same_request(request_: BisectRequest) -> None:
    args = parsed(request_.command())
    backend = "auto" if request_.venv_fallback else request_.backend
    got = vars(args)
    assert find(got["scenario"]).path == request_.scenario.path
    assert (got["good"], got["bad"], got["probe"], got["python"]) == (
        request_.good,
        request_.bad,
        request_.probe,
        request_.python,
    )
    assert (got["base"], got["keras"], got["backend"]) == (
        request_.flavour.value,
        request_.keras.value,
        backend,
    )
    assert (
        got["jobs"] or 1,
        got["pre"],
        got["confirm"],
        got["regress"],
    ) == (  # no --jobs: 1 (not on a swarm)
        request_.jobs,
        request_.pre,
        request_.confirm,
        request_.regress,
    )
    assert (got["term_old"], got["term_new"]) == (request_.term_old, request_.term_new)
    assert got["prefetch"] == request_.prefetch
    assert got["timeout"] == (request_.timeout if request_.timeout is not None else 900.0)


def test_a_scenario_given_by_path_is_named_by_its_absolute_path(tmp_path: Path) -> None:
    script = tmp_path / "mine.py"
    script.write_text("print('hi')\n")
    chosen = find(str(script))
    for command in (
        BisectRequest(scenario=chosen, good="2.3.0", bad="2.4.0").command(),
        reproduce_command(EnvSpec("2.3.4", "3.8"), chosen),
    ):
        args = parsed(command)
        assert Path(vars(args)["scenario"]) == script.resolve()


def test_reproduce_commands_run_as_printed_from_another_directory(tmp_path: Path) -> None:
    """The default scenario is found by name from anywhere (the checkout's scenarios/)."""
    command = reproduce_command(EnvSpec("2.3.4", "3.8"), find("gradient_mismatch"))
    args = parsed(command)
    assert vars(args)["scenario"] == "gradient_mismatch"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from tfbisect.core.scenario import find; print(find(sys.argv[1]).path)",
            "gradient_mismatch",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == ROOT / "scenarios" / "gradient_mismatch.py"


def test_the_resume_command_makes_paths_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tfbisect.cli import resume_command

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text("")
    command = resume_command(
        ["--reports", "rep", "bisect", "--scenario", "mine.py", "--probe", "x", "--cache=c"]
    )
    words = shlex.split(command)
    assert words[words.index("--scenario") + 1] == str(tmp_path / "mine.py")
    assert words[words.index("--reports") + 1] == str(tmp_path / "rep")
    assert f"--cache={tmp_path / 'c'}" in words and words[words.index("--probe") + 1] == "x"
    assert resume_command(["run", "--scenario", "gradient_mismatch"]).endswith("--scenario gradient_mismatch")
