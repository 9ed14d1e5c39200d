"""A new user's mistakes on the command line, each refused before any work with a message that
says what is wrong and what to do: global options after the command, a misspelled option, a
bad --bad-if-raises REGEX, a script with a syntax error (or a folder for a script), versions
written v2.3.0, 1.15 or 2,3; and the --backend help that says which backend is the default."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from test_argv import subparsers
from test_new import tfbisect  # `python -m tfbisect WORDS` for real, the words exactly as given
from tfbisect import cli_parser
from tfbisect.cli import build_parser
from tfbisect.core import scenario
from tfbisect.core.catalogue import load_snapshot
from tfbisect.core.errors import UnknownVersionError, UsageError
from tfbisect.envs import backend_docker

from conftest import cli as run_cli

HERE = f"{sys.version_info.major}.{sys.version_info.minor}"


# ---- global options after the command ---------------------------------------------------------


def test_global_options_are_read_after_the_command_too(tmp_path: Path) -> None:
    parse = build_parser().parse_args
    after = parse(["bisect", "--script", "repro.py", "--good", "2.3", "--bad", "2.5", "--reports", "/tmp/x"])
    assert (after.reports, after.script, after.good, after.action) == (
        Path("/tmp/x"),
        "repro.py",
        "2.3",
        None,
    )
    given = parse(["run", "--tf", "2.3", "--cache", str(tmp_path), "--cache-budget", "5G", "-q"])
    assert (given.cache, given.cache_budget, given.quiet) == (tmp_path, "5G", True)
    # A value given before the command is kept: the command's copies have no defaults.
    before = parse(["--reports", "A", "--cache", "C", "-q", "--cache-budget", "1G", "sweep"])
    assert (before.reports, before.cache, before.quiet, before.cache_budget) == (
        Path("A"),
        Path("C"),
        True,
        "1G",
    )
    both = parse(["--reports", "A", "--cache", "C", "bisect", "--reports", "B"])
    assert (both.reports, both.cache) == (Path("B"), Path("C"))
    assert parse(["bisect"]).reports == Path("reports")  # the default still stands
    # `bisect log` (the optional positional) still reads, options after it too.
    log = parse(["bisect", "log", "--reports", "R"])
    assert (log.action, log.reports) == ("log", Path("R"))


def test_a_real_bisect_log_reads_reports_given_after_it(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    done = tfbisect(tmp_path, "bisect", "log", "--reports", str(empty))
    assert done.returncode == 2, done.stderr
    assert f"There is no bisection log under {empty / 'bisect'}" in done.stderr
    assert "invalid choice" not in done.stderr


@pytest.mark.parametrize(
    "words",
    [
        ["bisect", "--scirpt", "repro.py", "--good", "2.3"],
        ["run", "--tf", "2.3", "--scirpt", "repro.py"],
        ["sweep", "--scirpt=repro.py"],
    ],
    ids=["bisect", "run", "sweep"],
)
def test_a_misspelled_option_is_named_with_the_one_meant(tmp_path: Path, words: list[str]) -> None:
    done = tfbisect(tmp_path, *words)
    assert done.returncode == 2, done.stderr
    assert "unrecognized option --scirpt (did you mean --script?)" in done.stderr
    assert "What to do:" in done.stderr and f"tfbisect {words[0]} --help" in done.stderr
    assert "invalid choice" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "reports").exists()


def test_an_option_nothing_is_close_to_is_named_without_a_guess(tmp_path: Path) -> None:
    done = tfbisect(tmp_path, "bisect", "--zzzzzz", "log")
    assert done.returncode == 2
    assert "unrecognized option --zzzzzz\n" in done.stderr and "did you mean" not in done.stderr


def test_a_wrong_action_is_still_an_invalid_choice(tmp_path: Path) -> None:
    done = tfbisect(tmp_path, "bisect", "lgo")
    assert done.returncode == 2
    assert "argument action: invalid choice: 'lgo'" in done.stderr


# ---- --bad-if-raises ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["bisect"], ["run", "--tf", "2.3"], ["sweep"], ["narrow"]])
def test_a_bad_regex_is_refused_while_parsing(tmp_path: Path, command: list[str]) -> None:
    repro = tmp_path / "repro.py"
    repro.write_text("assert False\n")
    reports = tmp_path / "reports"
    done = run_cli(reports, *command, "--script", str(repro), "--bad-if-raises", "ValueError:([", timeout=120)
    assert done.returncode == 2, done.stderr
    assert "the regular expression after the colon, '([', is not valid" in done.stderr
    assert "What to do: fix it" in done.stderr and "escape" in done.stderr
    assert not reports.exists()  # nothing ran


def test_bad_if_raises_values_the_harness_accepts_pass_unchanged() -> None:
    for value in ("ValueError", "ValueError:shape \\(3,\\)", "mod.KeyError:", "E:a:b"):
        args = build_parser().parse_args(["bisect", "--script", "r.py", "--bad-if-raises", value])
        assert args.bad_if_raises == [value]
    for value in (":x", "mod.:x"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["bisect", "--script", "r.py", "--bad-if-raises", value])


# ---- the script: compiled on the host, never run -----------------------------------------------


def test_a_script_with_a_syntax_error_is_refused_before_any_run(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    repro = tmp_path / "repro.py"
    repro.write_text(f"open({str(marker)!r}, 'w').close()\nx = (1,\ny = 2\n")
    reports = tmp_path / "reports"
    for command in (["run", "--tf", "2.3"], ["bisect", "--good", "2.3", "--bad", "2.5"], ["sweep"]):
        done = run_cli(reports, *command, "--backend", "venv", "--script", str(repro), timeout=120)
        assert done.returncode == 2, done.stderr
        assert "repro.py line 2: '(' was never closed" in done.stderr
        assert f"this host's Python {HERE}" in done.stderr
        assert "What to do: fix the script" in done.stderr
    assert not marker.exists()  # compiled, never executed
    assert not reports.exists()


def test_a_script_in_a_newer_pythons_syntax_is_not_refused(tmp_path: Path) -> None:
    # PEP 701 (3.12): quotes reused inside an f-string; this host's 3.11 cannot compile it, so
    # the newest Python on PATH decides, and what it compiles goes on to the runs.
    newest = scenario.newer_python_compiles(Path(scenario.__file__))
    if newest is None or sys.version_info >= (3, 12):
        pytest.skip("needs this host on Python 3.11 or older and a Python 3.12+ on PATH (pyenv has them)")
    marker = tmp_path / "ran"
    repro = tmp_path / "repro.py"
    repro.write_text(f'open({str(marker)!r}, "w").close()\nname = "x"\nprint(f"{{name + f"{{"y"}}"}}")\n')
    assert scenario.chosen(scenario.DEFAULT, str(repro)).path == repro.resolve()
    assert not marker.exists()  # compiled by the other Python too, never run
    # a script no Python compiles is still refused
    (tmp_path / "bad.py").write_text("x = (1,\n")
    with pytest.raises(UsageError, match="never closed"):
        scenario.chosen(scenario.DEFAULT, str(tmp_path / "bad.py"))


def test_a_script_that_compiles_is_taken(tmp_path: Path) -> None:
    repro = tmp_path / "repro.py"
    repro.write_text("# /// script\n# dependencies = []\n# ///\nimport tensorflow as tf\nassert tf\n")
    assert scenario.chosen(scenario.DEFAULT, str(repro)).path == repro.resolve()


def test_a_nul_byte_is_refused_with_two_parts(tmp_path: Path) -> None:
    repro = tmp_path / "repro.py"
    repro.write_bytes(b"x = 1\x00\n")
    with pytest.raises(UsageError) as refused:
        scenario.chosen(scenario.DEFAULT, str(repro))
    assert "repro.py" in refused.value.what and refused.value.todo


def test_a_directory_for_a_script_is_called_a_directory(tmp_path: Path) -> None:
    (tmp_path / "repro").mkdir()
    done = run_cli(
        tmp_path / "reports", "run", "--tf", "2.3", "--script", str(tmp_path / "repro"), timeout=120
    )
    assert done.returncode != 0
    assert "is a directory" in done.stderr and "There is no script" not in done.stderr
    assert "What to do: pass the path of the Python file in it" in done.stderr


# ---- versions ----------------------------------------------------------------------------------


def test_a_git_tag_spelling_names_the_release() -> None:
    catalogue = load_snapshot()
    assert catalogue.resolve("v2.3.0").version == "2.3.0"
    assert catalogue.resolve("V2.3") == catalogue.resolve("2.3")


def test_tf_1_is_out_of_scope_and_never_suggests_2_15() -> None:
    with pytest.raises(UnknownVersionError) as refused:
        load_snapshot().resolve("1.15")
    assert "TF 1.x is not supported" in refused.value.what and "TF 2.0 and later" in refused.value.what
    assert "2.15" not in str(refused.value) and refused.value.todo


def test_a_comma_for_a_dot_is_asked_about() -> None:
    with pytest.raises(UnknownVersionError) as refused:
        load_snapshot().resolve("2,3")
    assert "did you mean 2.3?" in refused.value.todo


def test_a_real_bisect_says_so_for_good_1_15(tmp_path: Path) -> None:
    repro = tmp_path / "repro.py"
    repro.write_text("assert True\n")
    done = run_cli(
        tmp_path / "reports",
        "bisect",
        "--backend",
        "venv",
        "--script",
        str(repro),
        "--good",
        "1.15",
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert "TF 1.x is not supported" in done.stderr and "What to do:" in done.stderr


# ---- help --------------------------------------------------------------------------------------


def test_the_backend_help_names_the_default_and_the_dockerfile(monkeypatch: pytest.MonkeyPatch) -> None:
    dockerfile = getattr(cli_parser, "DOCKERFILE", None)
    assert dockerfile == backend_docker.DOCKERFILE  # the help names the one the backend builds from
    monkeypatch.setenv("COLUMNS", "2000")  # one line per option: nothing wrapped inside a path
    subcommands = subparsers(build_parser())
    for name in ("bisect", "sweep"):
        text = " ".join(subcommands[name].format_help().split())
        assert "Default: auto (containers when Docker runs, else venvs)." in text
        assert f"images built from {dockerfile}" in text and "./Dockerfile" not in text
        assert "else venvs (default)" not in text
    assert "Default: venv." in " ".join(subcommands["run"].format_help().split())
