"""Bad input is refused before any work, with a message that says what is allowed.

Numeric options, --python, and names that become part of a file name (scenario, probe, variant).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from tfbisect import cli
from tfbisect.core.catalogue import load_snapshot
from tfbisect.core.errors import NoInterpreterError
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.record import RunRecord
from tfbisect.core.safe_names import MAX_LENGTH, is_safe_component, safe_component
from tfbisect.core.scenario import Scenario, find
from tfbisect.core.spec import EnvSpec, Flavour, KerasVariant
from tfbisect.core.store import ResultStore
from tfbisect.envs import interpreters
from tfbisect.envs.interpreters import Interpreter
from tfbisect.options import MAX_JOBS, known_pythons
from tfbisect.report.reportdata import collect
from tfbisect.runs.runner import Runner, RunResult, Settings
from tfbisect.search.bisection import Bisection, BisectRequest, log_name

from conftest import cli as run_cli

# Each command that takes the option, with what else it needs to get past the parser.
JOBS_COMMANDS = [["bisect"], ["sweep"]]
TIMEOUT_COMMANDS = [["run", "--tf", "2.10"], ["bisect"], ["sweep"]]
PYTHON_COMMANDS = [["run", "--tf", "2.10"], ["lock"], ["bisect"], ["sweep"]]


def refused(capsys: pytest.CaptureFixture[str], tmp_path: Path, *args: str) -> str:
    """`tfbisect ARGS` through cli.main: refused by the parser (exit 2); returns stderr.

    Should the parser let a value through, the command fails at once instead of doing any work."""

    def ran(args: object, progress: object) -> int:
        raise AssertionError(f"the parser let the command through: {args}")

    with pytest.MonkeyPatch.context() as patch:
        for command in ("cmd_run", "cmd_lock", "cmd_bisect", "cmd_sweep"):
            patch.setattr(cli, command, ran)
        with pytest.raises(SystemExit) as info:
            cli.main(["--reports", str(tmp_path / "reports"), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert not (tmp_path / "reports").exists()  # refused before any work
    return err


# -- numbers -----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", JOBS_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("value", ["0", "-1", "65", "1.5", "abc", "", "1e3", "9" * 5000])
def test_jobs_out_of_range_is_refused_on_every_command(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str], value: str
) -> None:
    err = refused(capsys, tmp_path, *command, f"--jobs={value}")
    assert f"--jobs must be a whole number from 1 to {MAX_JOBS}, got {value[:40]!r}" in err
    assert len(err) < 2000  # a huge value is not echoed whole


@pytest.mark.parametrize("command", TIMEOUT_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize(
    "value", ["nan", "NaN", "inf", "-inf", "infinity", "0", "-0", "-5", "1e400", "abc", "604801"]
)
def test_timeout_must_be_finite_and_above_zero(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str], value: str
) -> None:
    err = refused(capsys, tmp_path, *command, f"--timeout={value}")
    assert f"--timeout must be a number of seconds above 0 and at most 604800 (a week), got {value!r}" in err


def test_good_numbers_pass_the_parser() -> None:
    args = cli.build_parser().parse_args(["bisect", "--jobs", "64", "--timeout", "0.5", "--python", "3.8"])
    assert (args.jobs, args.timeout, args.python) == (64, 0.5, "3.8")
    args = cli.build_parser().parse_args(["sweep", "-j", "1", "--timeout", "604800"])
    assert (args.jobs, args.timeout) == (1, 604800.0)


def test_a_real_cli_call_refuses_jobs_zero_and_a_nan_timeout(tmp_path: Path) -> None:
    for args, message in [
        (["sweep", "--jobs", "0"], "--jobs must be a whole number from 1 to 64, got '0'"),
        (["bisect", "-j", "0"], "--jobs must be a whole number from 1 to 64, got '0'"),
        (["run", "--tf", "2.10", "--timeout", "nan"], "--timeout must be a number of seconds above 0"),
    ]:
        done = run_cli(tmp_path / "reports", *args, timeout=120)
        assert done.returncode == 2, done.stderr
        assert message in done.stderr
        assert "Traceback" not in done.stderr


# -- --python ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", PYTHON_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("value", ["banana", "3.1x", "3", "3.", "", "3.11.2", "py3.11", "3.11\n"])
def test_python_must_be_written_x_y(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str], value: str
) -> None:
    err = refused(capsys, tmp_path, *command, f"--python={value}")
    assert f"--python takes a version written X.Y (e.g. 3.11), got {value!r}" in err
    assert "this machine has" in err and "What to do:" in err


@pytest.mark.parametrize("command", PYTHON_COMMANDS, ids=lambda c: c[0])
@pytest.mark.parametrize("value", ["3.99", "2.7", "4.0", "3.4"])
def test_a_python_that_does_not_exist_names_real_ones(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: list[str], value: str
) -> None:
    err = refused(capsys, tmp_path, *command, f"--python={value}")
    here = interpreters.available()
    assert f"--python {value}" in err
    if value.startswith("3."):
        assert f"is not a Python any TF release has wheels for ({', '.join(known_pythons())})" in err
    else:
        assert "tfbisect runs scenarios on Python 3 only" in err
    assert f"this machine has {interpreters.listing(here)}" in err
    assert "What to do:" in err and "drop --python" in err
    suggested = re.findall(r"--python (\S+?)[),]", err.split("What to do:")[1])
    assert set(suggested) <= set(here)  # only interpreters that are installed here


def test_every_python_some_release_has_wheels_for_is_known() -> None:
    wheels = {p for r in load_snapshot().releases(pre=True) for p in r.pythons if p.startswith("3.")}
    assert wheels <= set(known_pythons())
    assert "2.7" not in known_pythons() and "3.99" not in known_pythons()


HERE = {p: Interpreter(p, Path(f"/nonexistent/python{p}"), p + ".0") for p in ("3.7", "3.11", "3.12")}


def test_a_pin_without_wheels_lists_the_wheels_and_suggests_only_pythons_here() -> None:
    with pytest.raises(NoInterpreterError) as info:
        interpreters.choose(["3.6", "3.7", "3.8"], HERE, pinned="3.11", release="2.2.3")
    assert info.value.what == (
        "Python 3.11 was asked for, but TF 2.2.3 has no wheel for it "
        "(wheels exist for 3.6, 3.7, 3.8; this machine has 3.7, 3.11, 3.12)."
    )
    assert info.value.todo.startswith("pin one that is here and has wheels (--python 3.7)")
    assert "pyenv install" not in info.value.todo  # nothing to install: 3.7 is here


def test_a_pin_with_wheels_that_is_not_here_says_install_it() -> None:
    with pytest.raises(NoInterpreterError) as info:
        interpreters.choose(["3.8", "3.9"], HERE, pinned="3.9")
    assert "but this machine has no such interpreter (wheels exist for 3.8, 3.9" in info.value.what
    assert info.value.todo == "install Python 3.9 (e.g. `pyenv install 3.9`), or use --backend docker."


def test_a_pin_that_nothing_fits_names_both_reasons() -> None:
    with pytest.raises(NoInterpreterError) as info:
        interpreters.choose(["3.5", "3.6"], HERE, pinned="3.10", release="2.0.4")
    assert "TF 2.0.4 has no wheel for it and this machine has no such interpreter" in info.value.what
    assert "no Python here has wheels for TF 2.0.4: install one of 3.5, 3.6" in info.value.todo


def test_run_with_a_python_the_release_has_no_wheel_for(tmp_path: Path) -> None:
    """A real CLI call: TF 2.2 has wheels up to 3.8; --python 3.12 exists but does not fit it."""
    done = run_cli(tmp_path / "reports", "run", "--tf", "2.2", "--python", "3.12", timeout=300)
    assert done.returncode == 4, done.stderr
    wheels = ", ".join(load_snapshot().resolve("2.2").pythons)
    assert "Python 3.12 was asked for, but" in done.stderr and "has no wheel for it" in done.stderr
    assert f"wheels exist for {wheels};" in done.stderr and "this machine has" in done.stderr
    suggested = re.findall(r"--python (\S+?)[),]", done.stderr.split("What to do:")[1])
    assert set(suggested) <= set(interpreters.available()) & set(wheels.split(", "))


# -- names that become file names --------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["gradient_eager_plain", "gradient_mismatch", "training_loop", "verdict", "tf2.2.3", "cpu", "default"],
)
def test_ordinary_names_are_unchanged(name: str) -> None:
    assert safe_component(name) == name and is_safe_component(name)


@pytest.mark.parametrize(
    "name",
    [
        "..",
        ".",
        "",
        "...",
        "../../etc/passwd",
        "a/b",
        "a\\b",
        "a\x00b",
        "\x1b[31mred\x07",
        ".hidden",
        "-rf",
        "a b$(x)",
        "a..b",
        "x" * 1000,
        "é\u202e",
        "\ud800",
        "CON",
    ],
)
def test_dangerous_names_become_one_safe_component(name: str) -> None:
    safe = safe_component(name)
    assert is_safe_component(safe)
    assert "/" not in safe and "\\" not in safe and ".." not in safe and "\x00" not in safe
    assert not safe.startswith((".", "-")) and len(safe) <= MAX_LENGTH
    assert all(" " < ch < "\x7f" for ch in safe)
    assert safe_component(name) == safe  # deterministic
    assert safe_component(safe) == safe  # already safe: kept


def test_distinct_names_stay_distinct_and_random_text_is_always_safe() -> None:
    rng = random.Random(20260101)
    alphabet = "ab./\\\x00\x1b -_é\u202e\n"
    names = {"".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12))) for _ in range(3000)}
    names |= {"a b", "a_b", "a/b", "a\\b", "..", "_", "x" * 200, "x" * 201}
    safe = {safe_component(n) for n in names}
    assert len(safe) == len(names)
    assert all(is_safe_component(s) for s in safe)


def _scenario_named(directory: Path, file_name: str) -> Scenario:
    directory.mkdir(exist_ok=True)
    (directory / file_name).write_text('"""A scenario with an odd file name."""\n')
    return find(str(directory / file_name))


@pytest.mark.parametrize("file_name", ["...py", "a b$(x).py", ".hidden.py", "-rf.py"])
def test_a_scenario_with_an_odd_file_name_has_a_safe_slug(tmp_path: Path, file_name: str) -> None:
    chosen = _scenario_named(tmp_path / "scenarios", file_name)
    assert chosen.name == file_name.removesuffix(".py")
    assert is_safe_component(chosen.slug) and chosen.slug == safe_component(chosen.name)
    assert (tmp_path / "logs" / chosen.slug).resolve().parent == (tmp_path / "logs").resolve()


def test_a_scenario_is_found_by_an_odd_name_too(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TFBISECT_SCENARIOS", str(tmp_path))
    for file_name in ("...py", "a b$(x).py"):
        (tmp_path / file_name).write_text("")
        assert find(file_name.removesuffix(".py")).path == (tmp_path / file_name).resolve()


def test_the_default_scenario_keeps_its_name_as_slug() -> None:
    assert find("gradient_mismatch").slug == "gradient_mismatch"


@pytest.mark.parametrize("probe", [None, "gradient_eager_plain", "../../x", "a/b\x00c", "\x1b[2J", "p" * 500])
def test_a_bisection_log_name_is_one_file_in_its_folder(tmp_path: Path, probe: str | None) -> None:
    chosen = _scenario_named(tmp_path / "scenarios", "...py")
    request = BisectRequest(scenario=chosen, probe=probe, flavour=Flavour.CUDA, keras=KerasVariant.LEGACY)
    name = log_name(request)
    assert re.fullmatch(r"\d{8}-\d{6}-.+\.json", name)
    assert "/" not in name and "\x00" not in name and not name.startswith(".") and len(name) < 255
    assert name.endswith(f"-{safe_component(probe or 'verdict')}-cuda-legacy.json")
    assert (tmp_path / name).resolve().parent == tmp_path.resolve()
    if probe == "gradient_eager_plain":
        assert f"-{chosen.slug}-gradient_eager_plain-cuda-legacy.json" in name


def test_bisect_log_and_report_find_a_bisection_of_an_oddly_named_scenario(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    chosen = _scenario_named(tmp_path / "scenarios", "a b$(x).py")
    reports = tmp_path / "reports"
    have = {p: Interpreter(p, Path(f"/nonexistent/python{p}"), p + ".0") for p in ("3.8", "3.11")}
    runner = Runner(load_snapshot(), Settings(reports, tmp_path / "cache"), Progress(quiet=True), have=have)

    def execute(spec: EnvSpec) -> RunResult:
        bad = spec.tf_version >= "2.4"
        made = RunRecord(
            spec=spec,
            scenario=chosen.name,
            scenario_sha256=chosen.sha256,
            outcome=Outcome.REPRODUCED if bad else Outcome.NOT_REPRODUCED,
            exit_code=None,
            document=None,
            failure=None,
            log_tail="",
            command="",
            started_at="",
            duration_s=1.0,
        )
        return RunResult(made, reused=False, seconds=1.0)

    request = BisectRequest(scenario=chosen, good="2.3.0", bad="2.5.0", probe="../evil")
    log_path = reports / "bisect" / log_name(request)
    Bisection(request, runner, Progress(quiet=True), log_path, execute).run()
    assert log_path.is_file() and log_path.parent == reports / "bisect"

    assert cli.main(["--reports", str(reports), "bisect", "log"]) == 0
    assert "a b$(x)" in capsys.readouterr().out
    found = collect(ResultStore(reports / "results"), chosen, reports / "bisect")
    assert [b.request["scenario"] for b in found.bisects] == ["a b$(x)"]
    assert [p.name for p in (reports / "bisect").iterdir()] == [log_path.name]
