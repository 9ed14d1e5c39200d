"""The bisect workflow driven by scripted outcomes: which versions it runs, and what it says."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from packaging.version import Version

from tfbisect.core import catalogue
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.record import Failure, RunRecord
from tfbisect.core.scenario import Scenario, find, find_script
from tfbisect.core.spec import EnvSpec, KerasVariant
from tfbisect.envs.interpreters import Interpreter
from tfbisect.report import findings
from tfbisect.report.show import bisect_log_text, bisect_text
from tfbisect.runs.runner import Runner, RunResult, Settings
from tfbisect.search.bisection import Bisection, BisectRequest
from tfbisect.search.bisectlog import BisectReport, Status, load_report
from tfbisect.search.prefetch import LATER_PER_WORKER

CAT = catalogue.load_snapshot()
HAVE = {
    p: Interpreter(p, Path(f"/nonexistent/python{p}"), p + ".0")
    for p in ("3.7", "3.8", "3.9", "3.10", "3.11")
}
SCENARIO = find("gradient_mismatch")

Script = Callable[[str], tuple[Outcome, Failure | None, str | None]]


def record(spec: EnvSpec, outcome: Outcome, failure: Failure | None, probe: str | None) -> RunRecord:
    document = None
    if probe is not None:
        document = {
            "environment": {"git_version": f"v{spec.tf_version}-0-gabc"},
            "probes": [{"name": "gradient_eager_plain", "outcome": probe}],
        }
    return RunRecord(
        spec=spec,
        scenario=SCENARIO.name,
        scenario_sha256=SCENARIO.sha256,
        outcome=outcome,
        exit_code=None,
        document=document,
        failure=failure,
        log_tail="",
        command="",
        started_at="",
        duration_s=1.0,
    )


def bisect(
    tmp_path: Path,
    script: Script,
    *,
    have: dict[str, Interpreter] = HAVE,
    progress: Progress | None = None,
    **options: object,
) -> tuple[BisectReport, list[str]]:
    runner = Runner(CAT, Settings(tmp_path, tmp_path / "cache"), Progress(quiet=True), have=have)
    calls: list[str] = []

    def execute(spec: EnvSpec) -> RunResult:
        calls.append(spec.tf_version)
        outcome, failure, probe = script(spec.tf_version)
        return RunResult(record(spec, outcome, failure, probe), reused=False, seconds=1.0)

    request = BisectRequest(scenario=SCENARIO, **options)  # type: ignore[arg-type]
    shown = progress or Progress(quiet=True)
    report = Bisection(request, runner, shown, tmp_path / "log.json", execute).run()
    return report, calls


def regression_at(first_bad: str) -> Script:
    def script(version: str) -> tuple[Outcome, Failure | None, str | None]:
        bad = Version(version) >= Version(first_bad)
        return (Outcome.REPRODUCED if bad else Outcome.NOT_REPRODUCED), None, None

    return script


def test_single_change_point(tmp_path: Path) -> None:
    report, calls = bisect(tmp_path, regression_at("2.4.0"), good="2.3.0", bad="2.5.0")
    assert report.versions == [
        "2.3.0",
        "2.3.1",
        "2.3.2",
        "2.3.3",
        "2.3.4",
        "2.4.0",
        "2.4.1",
        "2.4.2",
        "2.4.3",
        "2.4.4",
        "2.5.0",
    ]
    assert calls[:2] == ["2.3.0", "2.5.0"]  # both ends first
    assert report.status is Status.FOUND
    assert (report.last_old, report.first_new) == ("2.3.4", "2.4.0")
    assert report.compare_url == "https://github.com/tensorflow/tensorflow/compare/v2.3.4...v2.4.0"
    assert len(calls) <= 6  # ceil(log2 11) + 2
    assert report.term_old == "good" and report.term_new == "bad"
    text = bisect_text(report)
    assert "last good:  2.3.4" in text and "first bad:  2.4.0" in text
    assert load_report(tmp_path / "log.json").to_dict() == report.to_dict()
    log = bisect_log_text(report)
    assert log.count("round") == len(calls) and "good" in log and "bad" in log


def test_both_ends_alike_stops_after_two_runs(tmp_path: Path) -> None:
    report, calls = bisect(tmp_path, regression_at("2.0.0"), good="2.3.0", bad="2.5.0")
    assert report.status is Status.NO_CHANGE and calls == ["2.3.0", "2.5.0"]
    assert "both ends are reproduced" in findings.explain(report) and "sweep" in findings.explain(report)


def test_search_for_a_fix_turns_the_terms_round(tmp_path: Path) -> None:
    def fixed_in_2_4(version: str) -> tuple[Outcome, Failure | None, str | None]:
        outcome = regression_at("2.4.0")(version)[0]
        flipped = Outcome.NOT_REPRODUCED if outcome is Outcome.REPRODUCED else Outcome.REPRODUCED
        return flipped, None, None

    report, _ = bisect(tmp_path, fixed_in_2_4, good="2.3.0", bad="2.5.0")
    assert (report.term_old, report.term_new) == ("bad", "good")
    assert (report.last_old, report.first_new) == ("2.3.4", "2.4.0")
    assert "a fix in TF 2.4.0" in bisect_text(report)


def test_skips_at_the_boundary_give_an_honest_set(tmp_path: Path) -> None:
    def script(version: str) -> tuple[Outcome, Failure | None, str | None]:
        if version in ("2.3.4", "2.4.0"):
            return Outcome.SKIP, Failure("Skip", "exit 125"), None
        return regression_at("2.4.0")(version)

    report, _ = bisect(tmp_path, script, good="2.3.0", bad="2.5.0")
    assert report.status is Status.AMBIGUOUS
    assert report.last_old == "2.3.3" and report.candidates == ["2.3.4", "2.4.0", "2.4.1"]
    assert "one of 2.3.4, 2.4.0, 2.4.1" in findings.explain(report)


def test_skipped_end_moves_inward(tmp_path: Path) -> None:
    def script(version: str) -> tuple[Outcome, Failure | None, str | None]:
        if version == "2.3.0":
            return Outcome.SKIP, Failure("EnvironmentBuildError", "install failed"), None
        return regression_at("2.4.0")(version)

    report, calls = bisect(tmp_path, script, good="2.3.0", bad="2.5.0")
    assert calls[:3] == ["2.3.0", "2.5.0", "2.3.1"]  # both ends, then the next version inward
    assert report.status is Status.FOUND and report.first_new == "2.4.0"


def test_untestable_ends_say_so(tmp_path: Path) -> None:
    report, _ = bisect(
        tmp_path, lambda v: (Outcome.SKIP, Failure("Skip", "no"), None), good="2.3.0", bad="2.5.0"
    )
    assert report.status is Status.UNDECIDABLE and "--good/--bad" in findings.explain(report)


def test_error_of_another_kind_is_not_bad(tmp_path: Path) -> None:
    def script(version: str) -> tuple[Outcome, Failure | None, str | None]:
        if version == "2.4.0":
            return Outcome.ERROR, Failure("ImportError", "libcudart.so.11.0 missing"), None
        return regression_at("2.4.0")(version)

    report, _ = bisect(tmp_path, script, good="2.3.0", bad="2.5.0")
    assert report.status is Status.AMBIGUOUS
    assert report.candidates == ["2.4.0", "2.4.1"]
    step = next(s for s in report.steps if s.version == "2.4.0")
    assert step.cls == "other" and step.state is not None and "ImportError" in step.state


def crash_from(first: str) -> Script:
    def script(version: str) -> tuple[Outcome, Failure | None, str | None]:
        if Version(version) >= Version(first):
            return Outcome.ERROR, Failure("ValueError", f"Shapes ({version[2]}, 3) are incompatible"), None
        return Outcome.NOT_REPRODUCED, None, None

    return script


def test_a_crash_from_a_version_on_is_a_failure_never_the_bad_state(tmp_path: Path) -> None:
    report, _ = bisect(tmp_path, crash_from("2.4.0"), good="2.3.0", bad="2.5.0")
    assert report.status is Status.END_FAILS
    assert report.first_new is None and report.last_old is None  # no "first bad" at all
    assert report.end_failures == {"2.5.0": "ValueError: Shapes (5, 3) are incompatible"}  # the real message
    assert report.failure_finding is not None
    assert (report.failure_finding["last_without"], report.failure_finding["first_with"]) == (
        "2.3.4",
        "2.4.0",
    )
    assert "the newer end, TF 2.5.0, fails: ValueError: Shapes (5, 3) are incompatible" in findings.explain(
        report
    )
    shown = bisect_text(report) + bisect_log_text(report)
    assert "last run without the failure 2.3.4, first with it 2.4.0" in shown
    assert "(N, N)" not in shown, "people see the real message, never the masked signature"
    assert "first bad" not in findings.explain(report) and "last good" not in findings.explain(report)


def test_an_error_at_the_older_end_is_never_called_good(tmp_path: Path) -> None:
    def script(version: str) -> tuple[Outcome, Failure | None, str | None]:
        if Version(version) < Version("2.4.0"):
            return Outcome.ERROR, Failure("ImportError", "cannot import name 'x'"), None
        return Outcome.REPRODUCED, None, "mismatch"

    report, _ = bisect(tmp_path, script, good="2.3.0", bad="2.5.0", probe="gradient_eager_plain")
    assert report.status is Status.END_FAILS
    assert "the older end, TF 2.3.0, fails: ImportError: cannot import name 'x'" in findings.explain(report)
    finding = report.failure_finding
    assert finding is not None and finding["direction"] == "stops"
    assert (finding["last_with"], finding["first_without"]) == ("2.3.4", "2.4.0")
    assert all(step.cls != "old" or step.state != "match" for step in report.steps)
    # Read back from its log, it says the same (the direction and both versions survive).
    again = BisectReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.failure_finding == finding
    assert findings.explain(again) == findings.explain(report)
    assert findings.failure_finding_text(again) == "last run with the failure 2.3.4, first without it 2.4.0"


def test_regress_error_bisects_the_failure_with_words_of_its_own(tmp_path: Path) -> None:
    report, _ = bisect(tmp_path, crash_from("2.4.0"), good="2.3.0", bad="2.5.0", regress="error")
    assert report.status is Status.FOUND
    assert (report.last_old, report.first_new) == ("2.3.4", "2.4.0")
    assert (report.term_old, report.term_new) == ("working", "failing")
    assert report.question == "where the scenario starts to fail"
    assert findings.explain(report).startswith(
        "last run without the failure: TF 2.3.4, first with it: TF 2.4.0"
    )
    assert "(N, N)" not in bisect_text(report) + bisect_log_text(report)
    assert "--regress error" in report.command


def test_stored_results_inside_the_range_are_evidence(tmp_path: Path) -> None:
    runner = Runner(CAT, Settings(tmp_path, tmp_path / "cache"), Progress(quiet=True), have=HAVE)

    def storing(script: Script) -> Callable[[EnvSpec], RunResult]:
        def execute(spec: EnvSpec) -> RunResult:
            outcome, failure, probe = script(spec.tf_version)
            made = record(spec, outcome, failure, probe)
            runner.store.put(made)
            return RunResult(made, reused=False, seconds=1.0)

        return execute

    first = BisectRequest(scenario=SCENARIO, good="2.3.0", bad="2.5.0")
    Bisection(first, runner, Progress(quiet=True), tmp_path / "a.json", storing(regression_at("2.4.0"))).run()
    # The same range again, where the ends now agree (say, after a fix on both): the stored
    # results in between still say otherwise, so "nothing changed" would be false.
    never: Script = lambda version: (Outcome.NOT_REPRODUCED, None, None)  # noqa: E731
    report = Bisection(first, runner, Progress(quiet=True), tmp_path / "b.json", never_at_ends(never)).run()
    assert report.status is Status.NON_MONOTONIC, findings.explain(report)
    assert ("2.3.4", "2.4.0") in report.changes and "sweep" in findings.explain(report)
    assert any(step.reused and step.round == 0 for step in report.steps)


def never_at_ends(script: Script) -> Callable[[EnvSpec], RunResult]:
    def execute(spec: EnvSpec) -> RunResult:
        outcome, failure, probe = script(spec.tf_version)
        return RunResult(record(spec, outcome, failure, probe), reused=False, seconds=1.0)

    return execute


def test_an_unresolved_first_bad_is_never_shown_alone(tmp_path: Path) -> None:
    def script(version: str) -> tuple[Outcome, Failure | None, str | None]:
        if version == "2.4.0":
            return Outcome.SKIP, Failure("Skip", "no wheel"), None
        return regression_at("2.4.0")(version)

    report, _ = bisect(tmp_path, script, good="2.3.0", bad="2.5.0")
    assert report.status is Status.AMBIGUOUS
    assert report.first_new_text == "one of 2.4.0, 2.4.1"


def test_non_monotonic_results_are_reported(tmp_path: Path) -> None:
    bad = {"2.3.2", "2.3.3", "2.4.2", "2.4.3", "2.4.4", "2.5.0"}

    def script(version: str) -> tuple[Outcome, Failure | None, str | None]:
        return (Outcome.REPRODUCED if version in bad else Outcome.NOT_REPRODUCED), None, None

    report, _ = bisect(tmp_path, script, good="2.3.0", bad="2.5.0", jobs=10)
    assert report.status is Status.NON_MONOTONIC
    assert report.changes == [("2.3.1", "2.3.2"), ("2.3.3", "2.3.4"), ("2.4.1", "2.4.2")]
    assert "sweep" in findings.explain(report)


def test_probe_narrows_the_question(tmp_path: Path) -> None:
    def script(version: str) -> tuple[Outcome, Failure | None, str | None]:
        probe = "mismatch" if Version(version) >= Version("2.4.0") else "match"
        return Outcome.REPRODUCED, None, probe  # the verdict never changes; the probe does

    report, _ = bisect(tmp_path, script, good="2.3.0", bad="2.5.0", probe="gradient_eager_plain")
    assert report.status is Status.FOUND and report.first_new == "2.4.0"
    assert report.old_state == "match" and report.new_state == "mismatch"
    assert report.git_versions["2.4.0"] == "v2.4.0-0-gabc"


def test_jobs_cut_rounds(tmp_path: Path) -> None:
    one, _ = bisect(tmp_path / "a", regression_at("2.4.2"), good="2.2.0", bad="2.6.0")
    four, _ = bisect(tmp_path / "b", regression_at("2.4.2"), good="2.2.0", bad="2.6.0", jobs=4)
    assert one.first_new == four.first_new == "2.4.2"
    assert four.rounds < one.rounds


def test_default_ends_are_what_this_machine_can_run(tmp_path: Path) -> None:
    only_38 = {"3.8": HAVE["3.8"]}
    report, calls = bisect(tmp_path, regression_at("2.4.0"), have=only_38)
    # the oldest and newest releases with a cp38 wheel
    assert report.versions[0] == "2.2.0" and report.versions[-1] == "2.13.1"
    assert calls[:2] == ["2.2.0", "2.13.1"]


def test_versions_with_no_python_here_are_skips_without_runs(tmp_path: Path) -> None:
    have = {"3.7": HAVE["3.7"], "3.11": HAVE["3.11"]}  # TF 2.11.1 has wheels for 3.8-3.10 only
    report, calls = bisect(tmp_path, regression_at("2.11.1"), have=have, good="2.11.0", bad="2.12.0")
    assert calls == ["2.11.0", "2.12.0"]
    assert report.status is Status.AMBIGUOUS and report.candidates == ["2.11.1", "2.12.0"]
    step = next(s for s in report.steps if s.version == "2.11.1")
    assert step.outcome == "unavailable" and "3.8" in step.summary


def test_legacy_keras_before_2_16_runs_the_default_environment(tmp_path: Path) -> None:
    seen: list[EnvSpec] = []
    runner = Runner(
        CAT, Settings(tmp_path, tmp_path / "c"), Progress(quiet=True), have=HAVE | {"3.12": HAVE["3.11"]}
    )

    def execute(spec: EnvSpec) -> RunResult:
        seen.append(spec)
        return RunResult(record(spec, regression_at("2.16.1")(spec.tf_version)[0], None, None), False, 1.0)

    request = BisectRequest(scenario=SCENARIO, good="2.15.0", bad="2.16.1", keras=KerasVariant.LEGACY)
    Bisection(request, runner, Progress(quiet=True), tmp_path / "l.json", execute).run()
    keras = {s.tf_version: s.keras for s in seen}
    assert keras["2.15.0"] is KerasVariant.DEFAULT and keras["2.16.1"] is KerasVariant.LEGACY


def test_interrupt_saves_the_log_and_names_the_resume_command(tmp_path: Path) -> None:
    def script(version: str) -> tuple[Outcome, Failure | None, str | None]:
        if version not in ("2.3.0", "2.5.0"):
            raise KeyboardInterrupt
        return regression_at("2.4.0")(version)

    with pytest.raises(KeyboardInterrupt):
        bisect(tmp_path, script, good="2.3.0", bad="2.5.0")
    saved = load_report(tmp_path / "log.json")
    assert saved.status is Status.INTERRUPTED and len(saved.steps) == 2
    assert "tfbisect bisect --scenario gradient_mismatch --good 2.3.0 --bad 2.5.0" in findings.explain(saved)


def test_confirm_runs_the_neighbours_of_the_change_point(tmp_path: Path) -> None:
    plain, plain_calls = bisect(tmp_path / "a", regression_at("2.4.0"), good="2.3.0", bad="2.5.0")
    confirmed, calls = bisect(tmp_path / "b", regression_at("2.4.0"), good="2.3.0", bad="2.5.0", confirm=True)
    assert plain.first_new == confirmed.first_new == "2.4.0"
    assert {"2.3.3", "2.4.1"} <= set(calls) and not {"2.3.3", "2.4.1"} <= set(plain_calls)
    assert confirmed.status is Status.FOUND and "--confirm" in confirmed.command


def test_auto_runs_what_no_base_fits_in_venvs_without_contacting_an_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")  # placing needs no engine
    seen: dict[str, str] = {}

    def script(version: str) -> tuple[Outcome, Failure | None, str | None]:
        return regression_at("2.6.0")(version)

    runner = Runner(CAT, Settings(tmp_path, tmp_path / "cache"), Progress(quiet=True), have=HAVE)

    def execute(spec: EnvSpec) -> RunResult:
        seen[spec.tf_version] = spec.backend
        outcome, failure, probe = script(spec.tf_version)
        return RunResult(record(spec, outcome, failure, probe), reused=False, seconds=1.0)

    request = BisectRequest(
        scenario=SCENARIO, good="2.4.0", bad="2.7.0", backend="docker", venv_fallback=True
    )
    report = Bisection(request, runner, Progress(quiet=True), tmp_path / "auto.json", execute).run()
    assert report.status is Status.FOUND and report.first_new == "2.6.0"
    # TF 2.4 has wheels up to Python 3.8, which no Debian base offers: a venv; 2.5+ run on 3.9 in containers.
    assert seen["2.4.0"] == "venv" and seen["2.7.0"] == "docker"
    assert "--backend auto" in report.command


def test_the_log_is_typed_versioned_and_reads_the_first_version(tmp_path: Path) -> None:
    report, _ = bisect(tmp_path, regression_at("2.4.0"), good="2.3.0", bad="2.5.0", jobs=2)
    data = report.to_dict()
    assert data["log_version"] == 4 and data["narrowing"] is None
    assert data["request"]["jobs"] == 2 and data["request"]["confirm"] is False  # not "2", "False"
    assert {s["cls"] for s in data["steps"]} <= {"old", "new", "skip", "other"}
    assert BisectReport.from_dict(data).to_dict() == data
    old = dict(data, request={k: str(v) if v is not None else None for k, v in data["request"].items()})
    del old["log_version"]
    again = BisectReport.from_dict(old)
    assert again.request["jobs"] == 2 and again.request["venv_fallback"] is False
    with pytest.raises(ValueError, match="newer"):
        BisectReport.from_dict(dict(data, log_version=99))


def test_the_next_rounds_environments_are_prepared_while_a_round_runs(tmp_path: Path) -> None:
    """Both outcomes of each round are prepared ahead (at most --prefetch), so every run after
    the first round finds its environment being prepared or ready, and idle workers go on with
    the rounds after next's; prefetch 0 prepares nothing."""
    runner = Runner(CAT, Settings(tmp_path, tmp_path / "cache"), Progress(quiet=True), have=HAVE)
    ran: list[str] = []
    prepared: list[str] = []
    script = regression_at("2.4.0")

    def execute(spec: EnvSpec) -> RunResult:
        ran.append(spec.tf_version)
        outcome, failure, probe = script(spec.tf_version)
        return RunResult(record(spec, outcome, failure, probe), reused=False, seconds=1.0)

    def prefetch(spec: EnvSpec) -> object:
        prepared.append(spec.tf_version)
        return True

    request = BisectRequest(scenario=SCENARIO, good="2.0.0", bad="2.21.0")
    report = Bisection(request, runner, Progress(quiet=True), tmp_path / "a.json", execute, prefetch).run()
    assert report.first_new == "2.4.0"
    ends, inner = ran[:2], ran[2:]
    assert set(ends) == {"2.0.0", "2.21.0"} and inner
    assert all(version in prepared for version in inner), "every run after the ends was prepared ahead"
    rounds = len(ran) - 1  # the ends are one round
    assert len(prepared) == len(set(prepared)), "each prepared once"
    # --prefetch (2) of the next round's, and up to LATER_PER_WORKER each of the rounds after next's.
    assert len(prepared) <= (2 + 2 * LATER_PER_WORKER) * rounds
    prepared.clear()
    quiet = replace(request, prefetch=0)
    Bisection(quiet, runner, Progress(quiet=True), tmp_path / "b.json", execute, prefetch).run()
    assert prepared == []


def test_an_untestable_end_says_why_once_and_the_log_says_why_for_each(tmp_path: Path) -> None:
    """No release of the range has a wheel for the pinned Python: the console says why (and what
    to do) the first time an end cannot be tested, not at each step inward; `bisect log` gives
    each version's own reason, once."""
    out = io.StringIO()
    report, calls = bisect(
        tmp_path, regression_at("2.4.0"), progress=Progress(out), good="2.3.0", bad="2.5.0", python="3.11"
    )
    assert report.status is Status.UNDECIDABLE and calls == []
    assert "`tfbisect bisect log` says why for each version" in findings.explain(report)
    said = out.getvalue()
    assert said.count("cannot be tested here") == 8, said
    assert said.count("Python 3.11 was asked for") == 1 and said.count("What to do:") == 1, said
    assert "TF 2.3.0 cannot be tested here: Python 3.11 was asked for, but TF 2.3.0 has no wheel" in said
    assert "TF 2.3.1 cannot be tested here either; moving the end inward" in said
    versions = [step.version for step in report.steps]
    assert len(versions) == len(set(versions)), "one step per untestable version"
    log = bisect_log_text(load_report(tmp_path / "log.json"))
    for version in ("2.3.0", "2.3.1", "2.5.0"):
        line = next(line for line in log.splitlines() if line.startswith("round") and f" {version} " in line)
        assert f"cannot be tested: Python 3.11 was asked for, but TF {version} has no wheel" in line, line


def test_a_good_end_newer_than_the_bad_one_is_a_range_and_says_so(tmp_path: Path) -> None:
    """--good and --bad are the range's ends in either order (the runs say which side is good):
    a reversed pair is searched like the other, and said once before the first round."""
    out = io.StringIO()
    report, _ = bisect(tmp_path, regression_at("2.4.0"), progress=Progress(out), good="2.5.0", bad="2.3.0")
    assert report.status is Status.FOUND and (report.last_old, report.first_new) == ("2.3.4", "2.4.0")
    assert (report.term_old, report.term_new) == ("good", "bad")
    said = out.getvalue()
    assert said.count("--good TF 2.5.0 is newer than --bad TF 2.3.0") == 1, said
    assert said.index("is newer than") < said.index("== round 1"), said
    assert "What to do:" in said
    out = io.StringIO()
    bisect(tmp_path / "again", regression_at("2.4.0"), progress=Progress(out), good="2.3.0", bad="2.5.0")
    assert "is newer than" not in out.getvalue()


def script_scenario(tmp_path: Path) -> Scenario:
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "repro.py"
    path.write_text("import tensorflow as tf\nraise ValueError('boom')\n", encoding="utf-8")
    return find_script(str(path))


def run_script_bisection(tmp_path: Path, failure: Failure, summary: str) -> BisectReport:
    """A plain script that works before 2.4.0 and ends with `failure` from there on."""
    scenario = script_scenario(tmp_path)
    runner = Runner(CAT, Settings(tmp_path, tmp_path / "cache"), Progress(quiet=True), have=HAVE)

    def execute(spec: EnvSpec) -> RunResult:
        fails = Version(spec.tf_version) >= Version("2.4.0")
        verdict = summary if fails else "not reproduced: the script ran to its end"
        done = replace(
            record(
                spec, Outcome.ERROR if fails else Outcome.NOT_REPRODUCED, failure if fails else None, None
            ),
            scenario=scenario.name,
            scenario_sha256=scenario.sha256,
            document={"verdict": {"outcome": "skip" if fails else "not_reproduced", "summary": verdict}},
        )
        return RunResult(done, reused=False, seconds=1.0)

    request = BisectRequest(scenario=scenario, good="2.3.0", bad="2.5.0")
    return Bisection(request, runner, Progress(quiet=True), tmp_path / "log.json", execute).run()


def test_a_script_that_raises_at_the_bad_end_is_advised_bad_if_raises(tmp_path: Path) -> None:
    """The runs of a plain script ended by raising (no verdict of the script's own): the closing
    advice names --bad-if-raises with the exception seen, as each run's own line does."""
    raised = (
        "error: ValueError: boom (repro.py:2); not the bug (--bad-if-raises ValueError would make it one)"
    )
    report = run_script_bisection(tmp_path, Failure("ValueError", "boom"), raised)
    assert report.status is Status.END_FAILS and report.request.get("script") is True
    found = report.failure_finding or {}
    assert (found.get("last_without"), found.get("first_with")) == ("2.3.4", "2.4.0")
    advice = findings.explain(report)
    assert "--bad-if-raises ValueError" in advice, advice
    again = load_report(tmp_path / "log.json")
    assert "--bad-if-raises ValueError" in bisect_text(again)
    # A failure of another kind (the run timed out) is no exception of the script's.
    other = run_script_bisection(
        tmp_path / "timeout", Failure("Timeout", "the scenario did not finish in 60s and was killed"), "skip"
    )
    assert other.status is Status.END_FAILS and "--bad-if-raises" not in findings.explain(other)
