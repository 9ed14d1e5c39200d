"""The narrowing below releases, driven by scripted outcomes over hand-made catalogues: which builds
it runs, what it says when the index has nothing in between, the dependency changes, the probes
it would trace, and the log it keeps.  (The real runs are in test_real_narrow.py.)"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import pytest
from packaging.version import Version

from tfbisect.core import catalogue
from tfbisect.core.catalogue import Catalogue, Dist, ReleaseKind
from tfbisect.core.errors import NarrowError
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.record import RunRecord
from tfbisect.core.scenario import find
from tfbisect.core.spec import EnvSpec
from tfbisect.envs.interpreters import Interpreter
from tfbisect.narrow.builds import applicable
from tfbisect.narrow.dependencies import dependency_changes
from tfbisect.narrow.narrower import Narrower, NarrowOptions
from tfbisect.narrow.traces import choose_probes
from tfbisect.narrow.wiring import runner_seams
from tfbisect.report.findings import note_text
from tfbisect.runs.runner import Runner, RunResult, Settings
from tfbisect.runs.tracing import TraceRun
from tfbisect.search.bisectlog import BisectReport, Status, load_report
from tfbisect.search.bisectplan import BisectRequest
from tfbisect.search.narrowlog import Narrowing, NarrowStatus, NoteCode

from conftest import cli

HAVE = {p: Interpreter(p, Path(f"/nonexistent/python{p}"), p + ".0") for p in ("3.8", "3.10", "3.11", "3.12")}
SCENARIO = find("gradient_mismatch")
PYTHONS = ("3.10", "3.11")


def dist(project: str, version: str, day: str) -> Dist:
    return Dist(project, version, f"{day}T12:00:00Z", PYTHONS)


# 2.12.1, then master's nightlies of 2.13, the 2.13 branch's RCs, 2.13.0; the nightlies of 2.14 after.
MADE = Catalogue(
    dists=(
        dist("tensorflow", "2.12.1", "2023-06-01"),
        dist("tf-nightly", "2.13.0.dev20230601", "2023-06-01"),
        dist("tf-nightly", "2.13.0.dev20230602", "2023-06-02"),
        dist("tf-nightly", "2.13.0.dev20230603", "2023-06-03"),
        dist("tensorflow", "2.13.0rc0", "2023-06-05"),
        dist("tensorflow", "2.13.0rc1", "2023-06-10"),
        dist("tensorflow", "2.13.0rc2", "2023-06-20"),
        dist("tensorflow", "2.13.0", "2023-07-01"),
        dist("tf-nightly", "2.14.0.dev20230702", "2023-07-02"),
    ),
    fetched_at="2023-07-03T00:00:00Z",
)


def record(spec: EnvSpec, bad: bool) -> RunRecord:
    commit = f"{abs(hash(spec.tf_version)) % 16**12:012x}"
    return RunRecord(
        spec=spec,
        scenario=SCENARIO.name,
        scenario_sha256=SCENARIO.sha256,
        outcome=Outcome.REPRODUCED if bad else Outcome.NOT_REPRODUCED,
        exit_code=None,
        document={
            "environment": {"git_version": f"v1.12.1-{len(spec.tf_version)}-g{commit}"},
            "probes": [
                {
                    "name": "gradient_eager_plain",
                    "kind": "gradient",
                    "outcome": "mismatch" if bad else "match",
                },
                {"name": "gradient_eager_decorated", "kind": "gradient", "outcome": "match"},
            ],
        },
        failure=None,
        log_tail="",
        command="",
        started_at="",
        duration_s=1.0,
    )


def narrower(
    report: BisectReport,
    request: BisectRequest,
    runner: Runner,
    log: Path,
    options: NarrowOptions | None = None,
    execute: Callable[[EnvSpec], RunResult] | None = None,
    *,
    force: bool = False,
) -> Narrower:
    """A narrowing wired to the runner as the command line wires it, its runs scripted by `execute`."""
    progress = Progress(quiet=True)
    seams = runner_seams(report, request, runner, progress, log, execute=execute, force=force)
    return Narrower(report, request, seams, progress, log, options or NarrowOptions())


def found_report(request: BisectRequest, last_old: str, first_new: str) -> BisectReport:
    """A bisection log that found one change point between two releases."""
    return BisectReport(
        request=request.to_record(),
        command="tfbisect bisect",
        versions=[last_old, first_new],
        status=Status.FOUND,
        last_old=last_old,
        first_new=first_new,
    )


def narrow(
    tmp_path: Path, made: Catalogue, last_old: str, first_new: str, bad_from: str
) -> tuple[BisectReport, list[str]]:
    # No lock is resolved here (that needs the index): the dependency changes become a note.
    settings = Settings(tmp_path, tmp_path / "cache", lock_missing=False)
    runner = Runner(made, settings, Progress(quiet=True), have=HAVE)
    request = BisectRequest(scenario=SCENARIO, probe="gradient_eager_plain", pre=True)
    report = found_report(request, last_old, first_new)
    calls: list[str] = []

    def execute(spec: EnvSpec) -> RunResult:
        calls.append(spec.tf_version)
        return RunResult(
            record(spec, Version(spec.tf_version) >= Version(bad_from)), reused=False, seconds=1.0
        )

    log = tmp_path / "log.json"
    narrower(report, request, runner, log, NarrowOptions(trace=False), execute).run()
    return load_report(log), calls


def test_release_candidates_and_nightlies_between_two_releases_are_bisected(tmp_path: Path) -> None:
    report, calls = narrow(tmp_path, MADE, "2.12.1", "2.13.0", bad_from="2.13.0rc1")
    found = report.narrowing
    assert found is not None and found.status is NarrowStatus.NARROWED
    assert found.candidates == [
        "2.13.0.dev20230601",
        "2.13.0.dev20230602",
        "2.13.0.dev20230603",
        "2.13.0rc0",
        "2.13.0rc1",
        "2.13.0rc2",
    ]
    assert found.last_old is not None and found.first_new is not None
    assert (found.last_old.version, found.first_new.version) == ("2.13.0rc0", "2.13.0rc1")
    assert (found.last_old.kind, found.first_new.kind) == (ReleaseKind.RC, ReleaseKind.RC)
    assert found.compare_url == "https://github.com/tensorflow/tensorflow/compare/v2.13.0-rc0...v2.13.0-rc1"
    inner = [c for c in calls if c not in ("2.12.1", "2.13.0")]
    assert len(inner) <= math.ceil(math.log2(len(found.candidates))) + 1
    assert set(inner) >= {"2.13.0rc0", "2.13.0rc1"}
    assert [s.version for s in found.steps if s.version in inner] == inner  # every run is in the log


def test_a_change_between_nightlies_links_their_commits(tmp_path: Path) -> None:
    report, _ = narrow(tmp_path, MADE, "2.12.1", "2.13.0", bad_from="2.13.0.dev20230602")
    found = report.narrowing
    assert found is not None and found.first_new is not None and found.last_old is not None
    assert (found.last_old.version, found.first_new.version) == ("2.13.0.dev20230601", "2.13.0.dev20230602")
    assert found.first_new.kind is ReleaseKind.NIGHTLY
    old_ref, new_ref = found.last_old.ref, found.first_new.ref
    assert old_ref and new_ref and len(new_ref) == 12 and old_ref != new_ref
    assert found.compare_url == f"https://github.com/tensorflow/tensorflow/compare/{old_ref}...{new_ref}"
    # no lock here: said with the error's words
    assert [note.code for note in found.notes if note.code is NoteCode.NO_LOCKS]
    assert any("dependency changes are not listed: " in note_text(note) for note in found.notes)


def test_nothing_published_between_says_what_the_index_lacks(tmp_path: Path) -> None:
    """The flagship's range on the real catalogue: 2.4.0's RCs were deleted from the index, and
    its nightlies start in 2026."""
    real = catalogue.load_snapshot()
    report, calls = narrow(tmp_path, real, "2.3.4", "2.4.0", bad_from="2.4.0")
    found = report.narrowing
    assert found is not None and found.status is NarrowStatus.NOTHING_FINER
    assert found.candidates == [] and sorted(calls) == ["2.3.4", "2.4.0"]
    # 2.3.4 came out after 2.4.0: the dependency changes run backwards in time, said so (issue 19).
    assert [note.code for note in found.notes] == [
        NoteCode.RCS_DELETED,
        NoteCode.NIGHTLIES_GONE,
        NoteCode.BACKWARDS_IN_TIME,
    ]
    notes = " | ".join(note_text(note) for note in found.notes)
    assert "2.3.4 (uploaded 2021-" in notes and "run backwards in time" in notes
    assert "no release candidates of 2.4.0" in notes and "2.6.0rc0" in notes
    window = real.nightly_window()
    assert window is not None and f"nightlies on the index start at {window[0]}" in notes
    assert found.compare_url == "https://github.com/tensorflow/tensorflow/compare/v2.3.4...v2.4.0"
    # From the committed locks of both: TF 2.4 moved to numpy 1.19 and added flatbuffers.
    changed = {c.name: (c.old, c.new) for c in found.dependencies}
    assert changed["numpy"][0] != changed["numpy"][1] and changed["flatbuffers"][0] is None
    assert "tensorflow-cpu" not in changed


def test_only_a_single_change_point_of_behaviour_is_narrowed(tmp_path: Path) -> None:
    runner = Runner(MADE, Settings(tmp_path, tmp_path / "cache"), Progress(quiet=True), have=HAVE)
    request = BisectRequest(scenario=SCENARIO)
    for status in (Status.NO_CHANGE, Status.AMBIGUOUS, Status.NON_MONOTONIC, Status.END_FAILS):
        report = BisectReport(request=request.to_record(), command="", versions=[], status=status)
        assert applicable(report) is not None
        with pytest.raises(NarrowError, match="cannot be narrowed"):
            narrower(report, request, runner, tmp_path / "x.json")
    failing = BisectReport(
        request=request.to_record(), command="", versions=[], status=Status.FOUND, last_old="a", first_new="b"
    )
    failing.regress = "error"
    assert "failure began" in (applicable(failing) or "")


LOCK_OLD = """# tfbisect lock
tensorflow-cpu==2.3.4 \\
    --hash=sha256:{h}
numpy==1.18.5 \\
    --hash=sha256:{h}
protobuf==3.20.0
gast==0.3.3
six==1.15.0
""".format(h="a" * 64)
LOCK_NEW = """# tfbisect lock
tensorflow-cpu==2.4.0
numpy==1.19.5
protobuf==3.20.0
gast==0.3.3
flatbuffers==1.12
Six==1.15.0
"""


def test_dependency_changes_come_from_the_two_locks_with_the_imported_ones_first() -> None:
    changes = dependency_changes(LOCK_OLD, LOCK_NEW, imported=["numpy", "protobuf", "Flatbuffers"])
    assert [(c.name, c.old, c.new, c.imported) for c in changes] == [
        ("flatbuffers", None, "1.12", True),
        ("numpy", "1.18.5", "1.19.5", True),
    ]
    changes = dependency_changes(LOCK_OLD, LOCK_NEW)
    assert [c.name for c in changes] == ["flatbuffers", "numpy"] and not any(c.imported for c in changes)
    assert all(c.name not in ("tensorflow-cpu", "six", "protobuf") for c in changes)


def test_the_traced_probes_are_the_changed_one_and_its_nearest_passing_sibling() -> None:
    spec = EnvSpec("2.4.0", "3.8")
    old, new = record(spec, bad=False), record(spec, bad=True)
    assert choose_probes(None, old, new) == ("gradient_eager_plain", "gradient_eager_decorated")
    assert choose_probes("gradient_eager_plain", old, new) == (
        "gradient_eager_plain",
        "gradient_eager_decorated",
    )
    same = record(spec, bad=False)
    assert choose_probes(None, old, same) == (None, None)


def test_the_log_keeps_the_narrowing_and_reads_it_back(tmp_path: Path) -> None:
    report, _ = narrow(tmp_path, MADE, "2.12.1", "2.13.0", bad_from="2.13.0rc1")
    again = BisectReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.narrowing == report.narrowing
    assert again.to_dict() == report.to_dict()


def test_a_request_read_back_from_the_log_is_the_same_request() -> None:
    request = BisectRequest(scenario=SCENARIO, good="2.3.0", bad="2.4.1", probe="p", jobs=2, pre=True)
    assert BisectRequest.from_record(request.to_record(), SCENARIO) == request
    with pytest.raises(ValueError, match="unknown request fields"):
        BisectRequest.from_record({**request.to_record(), "bogus": 1}, SCENARIO)


def test_narrow_refuses_logs_it_cannot_narrow_with_a_two_part_message(tmp_path: Path) -> None:
    (tmp_path / "bisect").mkdir()
    bad = tmp_path / "bisect" / "broken.json"
    bad.write_text("{not json")
    done = cli(tmp_path, "narrow", str(bad))
    assert (
        done.returncode == 14
        and "Cannot read the bisection log" in done.stderr
        and "What to do" in done.stderr
    )
    log = tmp_path / "bisect" / "nochange.json"
    request = BisectRequest(scenario=SCENARIO)
    log.write_text(
        json.dumps(
            BisectReport(
                request=request.to_record(), command="", versions=[], status=Status.NO_CHANGE
            ).to_dict()
        )
    )
    done = cli(tmp_path, "narrow", str(log))
    assert done.returncode == 14 and "not with one change point" in done.stderr


def test_a_damaged_narrowing_never_costs_the_bisection(tmp_path: Path) -> None:
    report, _ = narrow(tmp_path, MADE, "2.12.1", "2.13.0", bad_from="2.13.0rc1")
    data = report.to_dict()
    data["narrowing"] = {"release_range": ["only one"]}
    again = BisectReport.from_dict(data)
    assert again.narrowing is None and again.last_old == "2.12.1" and again.first_new == "2.13.0"


@pytest.mark.parametrize(
    ("field", "value"),
    [("jobs", "2"), ("prefetch", -1), ("pre", "yes"), ("good", 5), ("regress", "maybe"), ("timeout", "soon")],
)
def test_a_hand_edited_request_is_refused_not_run(field: str, value: object) -> None:
    request = BisectRequest(scenario=SCENARIO, good="2.3.0")
    with pytest.raises(ValueError, match=f"request's {field}"):
        BisectRequest.from_record({**request.to_record(), field: value}, SCENARIO)
    old_text = BisectRequest.from_record({**request.to_record(), "timeout": "1800.0"}, SCENARIO)
    assert old_text.timeout == 1800.0 and old_text.command().endswith("--timeout 1800")


def test_a_non_monotonic_range_of_builds_is_not_pinned_to_one_pair(tmp_path: Path) -> None:
    runner = Runner(
        MADE, Settings(tmp_path, tmp_path / "cache", lock_missing=False), Progress(quiet=True), have=HAVE
    )
    request = BisectRequest(scenario=SCENARIO, probe="gradient_eager_plain", pre=True, confirm=True)
    report = found_report(request, "2.12.1", "2.13.0")
    bad = {"2.13.0.dev20230602", "2.13.0rc0", "2.13.0rc2", "2.13.0"}

    def execute(spec: EnvSpec) -> RunResult:
        return RunResult(record(spec, spec.tf_version in bad), reused=False, seconds=1.0)

    found = narrower(report, request, runner, tmp_path / "log.json", NarrowOptions(), execute).run()
    assert found.status is NarrowStatus.NON_MONOTONIC
    assert found.last_old is not None and (
        found.last_old.version,
        found.first_new.version if found.first_new else None,
    ) == ("2.12.1", "2.13.0")
    assert found.trace is None and [note.code for note in found.notes] == [NoteCode.BUILDS_FLIP]
    assert "flip back and forth" in note_text(found.notes[0])


def test_a_traced_run_that_traced_nothing_is_an_error_not_a_clean_bill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scenario that never opens the tracing window (or a probe that did not run) leaves an empty
    trace: that must not read as "no Python that ran changed"."""
    real = catalogue.load_snapshot()
    runner = Runner(real, Settings(tmp_path, tmp_path / "cache"), Progress(quiet=True), have=HAVE)
    request = BisectRequest(scenario=SCENARIO, probe="gradient_eager_plain")
    report = found_report(request, "2.3.4", "2.4.0")

    def empty(spec: EnvSpec, *args: object, **kwargs: object) -> TraceRun:
        document = {
            "schema": 1,
            "python": "3.8.20",
            "exit_code": 0,
            "packages": {},
            "files": {},
            "window": {"opened": 0},
        }
        result = {"probes": [{"name": "gradient_eager_plain"}]}
        return TraceRun(spec, ("gradient_eager_plain",), document, result, 1.0, 0, tmp_path / "trace.log")

    monkeypatch.setattr(runner, "trace", empty)

    def execute(spec: EnvSpec) -> RunResult:
        return RunResult(record(spec, spec.tf_version == "2.4.0"), reused=False, seconds=1.0)

    found = narrower(report, request, runner, tmp_path / "log.json", NarrowOptions(), execute).run()
    assert found.trace is not None and found.trace.error is not None
    assert found.trace.error.code is NoteCode.TRACE_FAILED
    error = note_text(found.trace.error)
    assert "traced nothing" in error and "opened 0 times" in error and " (what to do: " in error
    assert found.suspects is None and found.dependencies  # what finished before stays


def test_versions_lists_the_nightlies_on_request(tmp_path: Path) -> None:
    window = catalogue.load_snapshot().nightly_window()
    assert window is not None
    plain = cli(tmp_path, "versions")
    with_nightlies = cli(tmp_path, "versions", "--nightly")
    assert plain.returncode == with_nightlies.returncode == 0
    newest = catalogue.load_snapshot().nightlies()[-1].version
    assert newest not in plain.stdout and newest in with_nightlies.stdout
    assert f"nightlies on the index: {window[0]} .. {window[1]}" in with_nightlies.stdout


def test_an_interrupted_renarrowing_keeps_the_finished_answer(tmp_path: Path) -> None:
    report, _ = narrow(tmp_path, MADE, "2.12.1", "2.13.0", bad_from="2.13.0rc1")
    finished = report.narrowing
    assert finished is not None and finished.finished_at
    runner = Runner(
        MADE, Settings(tmp_path, tmp_path / "cache", lock_missing=False), Progress(quiet=True), have=HAVE
    )
    request = BisectRequest(scenario=SCENARIO, probe="gradient_eager_plain", pre=True)

    def stopped(spec: EnvSpec) -> RunResult:
        raise KeyboardInterrupt

    log = tmp_path / "log.json"
    with pytest.raises(KeyboardInterrupt):
        narrower(report, request, runner, log, NarrowOptions(trace=False), stopped).run()
    assert load_report(log).narrowing == finished


def _trace_document(files: object) -> dict[str, object]:
    return {
        "schema": 1,
        "python": "3.8.20",
        "exit_code": 0,
        "packages": {},
        "files": files,
        "window": {"opened": 1},
    }


def _traced_narrowing(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    document: dict[str, object],
    *,
    force: bool = False,
    reused: bool = False,
) -> tuple[Narrowing, list[str]]:
    """A narrowing of 2.3.4 .. 2.4.0 whose traced runs all write `document`; the probes traced."""
    real = catalogue.load_snapshot()
    runner = Runner(real, Settings(tmp_path, tmp_path / "cache"), Progress(quiet=True), have=HAVE)
    request = BisectRequest(scenario=SCENARIO, probe="gradient_eager_plain")
    report = found_report(request, "2.3.4", "2.4.0")
    traced: list[str] = []

    def trace(
        spec: EnvSpec, scenario: object, probes: list[str], *args: object, **kwargs: object
    ) -> TraceRun:
        traced.append(f"{probes[0]}@{spec.tf_version}")
        result = {"probes": [{"name": p} for p in probes]}
        log = tmp_path / "logs" / "trace.log"
        return TraceRun(spec, tuple(probes), document, result, 1.0, 0, log, reused=reused)

    monkeypatch.setattr(runner, "trace", trace)
    monkeypatch.setattr(runner, "source_places", lambda spec, scenario: [])

    def execute(spec: EnvSpec) -> RunResult:
        return RunResult(record(spec, spec.tf_version == "2.4.0"), reused=False, seconds=1.0)

    found = narrower(report, request, runner, tmp_path / "log.json", None, execute, force=force).run()
    return found, traced


def test_a_hostile_trace_is_refused_before_it_is_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A trace naming a file outside the installation is refused, and nothing of it is kept for a
    later narrowing to reuse."""
    hostile = _trace_document({"../../etc/passwd.py": {"lines": [1]}})
    found, _ = _traced_narrowing(tmp_path, monkeypatch, hostile)
    assert found.trace is not None and found.trace.error is not None
    assert "unusable trace" in note_text(found.trace.error)
    kept = tmp_path / "log.traces"
    assert not kept.exists() or not any(kept.iterdir())


def test_force_traces_again_instead_of_reusing_a_kept_trace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _trace_document({"tensorflow/x.py": {"lines": [1]}})
    _, first = _traced_narrowing(tmp_path, monkeypatch, good)
    assert "gradient_eager_plain@2.3.4" in first
    kept = tmp_path / "log.traces"
    assert kept.is_dir() and any(kept.iterdir())
    _, again = _traced_narrowing(tmp_path, monkeypatch, good)
    assert "gradient_eager_plain@2.3.4" not in again  # reused: only the untraced yardstick ran
    _, forced = _traced_narrowing(tmp_path, monkeypatch, good, force=True)
    assert "gradient_eager_plain@2.3.4" in forced and "gradient_eager_plain@2.4.0" in forced


def test_the_log_counts_the_traced_runs_made_and_those_reused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = _trace_document({"tensorflow/x.py": {"lines": [1]}})
    found, traced = _traced_narrowing(tmp_path / "made", monkeypatch, good)
    # Both probes traced in both builds (the sources are not there to read: that ends it).
    assert found.trace is not None and len(traced) == 4
    assert (found.trace.runs, found.trace.reused) == (4, 0)
    # Stored traced runs (a repeated bisection: a new log, nothing kept beside it) run nothing.
    again, traced = _traced_narrowing(tmp_path / "stored", monkeypatch, good, reused=True)
    assert again.trace is not None and (again.trace.runs, again.trace.reused) == (0, len(traced))
    logged = load_report(tmp_path / "stored" / "log.json").narrowing
    assert logged is not None and logged.trace is not None
    assert (logged.trace.runs, logged.trace.reused) == (0, len(traced))
