"""The bisect command's workflow: pick versions, run rounds, judge them, and write what was found.

The search state lives in `search.BisectState`, the meaning of old and new in `judge`,
the runs in `workflow.Runner`; this module only drives them and keeps the log.
"""

from __future__ import annotations

import enum
import itertools
import shlex
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from packaging.version import Version

from tfbisect.bisectlog import BisectReport, Status, Step, StepOutcome
from tfbisect.catalogue import Release
from tfbisect.environments import place
from tfbisect.errors import NoInterpreterError, UsageError
from tfbisect.fsio import now_iso, write_json_atomic
from tfbisect.judge import Judgement, State, failure_terms, failure_text, state_of, terms_for
from tfbisect.names import safe_component
from tfbisect.process import kill_all
from tfbisect.progress import Progress
from tfbisect.record import RunRecord
from tfbisect.scenario import Scenario
from tfbisect.search import BisectState, ChangePoint, Class
from tfbisect.spec import Backend, EnvSpec, Flavour, KerasVariant, legacy_keras_applies
from tfbisect.versions import git_tag
from tfbisect.workflow import Runner, RunResult, scenario_argument

COMPARE = "https://github.com/tensorflow/tensorflow/compare/{old}...{new}"


@dataclass(frozen=True)
class BisectRequest:
    scenario: Scenario
    good: str | None = None
    bad: str | None = None
    probe: str | None = None
    flavour: Flavour = Flavour.CPU
    keras: KerasVariant = KerasVariant.DEFAULT
    backend: Backend = Backend.VENV
    # With --backend auto and an engine: versions no base image fits (Python <= 3.8) run in venvs.
    venv_fallback: bool = False
    python: str | None = None
    jobs: int = 1
    pre: bool = False
    confirm: bool = False
    term_old: str | None = None
    term_new: str | None = None
    timeout: float | None = None  # None: the default
    regress: str = "state"  # "error": bisect where the scenario starts (or stops) failing

    def to_record(self) -> dict[str, Any]:
        """The request as the log keeps it: JSON values of their own types, the scenario by name
        and hash (what a report matches logs by)."""
        kept: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key != "scenario":
                kept[key] = value.value if isinstance(value, enum.Enum) else value
        return kept | {"scenario": self.scenario.name, "scenario_sha256": self.scenario.sha256}

    def command(self) -> str:
        """The command line that repeats (or resumes) this bisection, from any directory."""
        return shlex.join(self.to_argv())

    def to_argv(self) -> list[str]:
        """Every option that changes the answer, as `tfbisect bisect` parses it back (a test
        round-trips it through the parser)."""
        parts = ["tfbisect", "bisect", "--scenario", scenario_argument(self.scenario)]
        for flag, value in (("--good", self.good), ("--bad", self.bad), ("--probe", self.probe)):
            if value:
                parts += [flag, value]
        if self.flavour is not Flavour.CPU:
            parts += ["--base", self.flavour.value]
        if self.keras is not KerasVariant.DEFAULT:
            parts += ["--keras", self.keras.value]
        # Always explicit: the default (auto) would pick containers once an engine answers.
        parts += ["--backend", "auto" if self.venv_fallback else self.backend.value]
        if self.python:
            parts += ["--python", self.python]
        if self.jobs != 1:
            parts += ["--jobs", str(self.jobs)]
        for flag, on in (("--pre", self.pre), ("--confirm", self.confirm)):
            if on:
                parts.append(flag)
        for flag, value in (("--term-old", self.term_old), ("--term-new", self.term_new)):
            if value:
                parts += [flag, value]
        if self.timeout is not None:
            parts += ["--timeout", f"{self.timeout:g}"]
        if self.regress != "state":
            parts += ["--regress", self.regress]
        return parts


# One run of the bisection's scenario in an environment: `Runner.run` unless a test scripts it.
Execute = Callable[[EnvSpec], RunResult]


class Bisection:
    def __init__(
        self,
        request: BisectRequest,
        runner: Runner,
        progress: Progress,
        log_path: Path,
        execute: Execute | None = None,
    ) -> None:
        self.request = request
        self.runner = runner
        self.progress = progress
        self.log_path = log_path
        self.execute = execute or (lambda spec: runner.run(spec, request.scenario))
        self.releases = self.select_releases()
        self.specs = [self.spec_for(r) for r in self.releases]
        self.records: dict[int, RunRecord] = {}
        self.round = 0
        self.report = BisectReport(
            request=request.to_record(),
            command=request.command(),
            versions=[r.version for r in self.releases],
            started_at=now_iso(),
        )

    # -- which versions --------------------------------------------------------------
    def select_releases(self) -> list[Release]:
        catalogue = self.runner.catalogue
        releases = catalogue.releases(pre=self.request.pre)
        if self.request.keras is KerasVariant.LEGACY and not (self.request.good or self.request.bad):
            releases = [r for r in releases if legacy_keras_applies(r.version)] or releases
        runnable = [r for r in releases if self.python_for(r) is not None]
        if self.request.good:
            start = catalogue.resolve(self.request.good, pre=True)
        elif runnable:
            start = runnable[0]
        else:
            raise UsageError(
                "No TF release in the catalogue can run on the Pythons this machine has.",
                "install a Python that TF supports (3.7-3.13), or use --backend docker.",
            )
        end = catalogue.resolve(self.request.bad, pre=True) if self.request.bad else runnable[-1]
        low, high = sorted((start, end), key=lambda r: Version(r.version))
        if low.version == high.version:
            raise UsageError(
                f"Both ends are TF {low.version}: there is nothing to bisect.",
                "give two different versions with --good and --bad (or omit them to search all here).",
            )
        chosen = [r for r in releases if Version(low.version) <= Version(r.version) <= Version(high.version)]
        for end_release in (low, high):  # an end named explicitly may be a pre-release
            if end_release not in chosen:
                chosen.append(end_release)
        return sorted(chosen, key=lambda r: Version(r.version))

    def python_for(self, release: Release) -> str | None:
        placed = self.place(release)
        return placed[0] if placed else None

    def place(self, release: Release) -> tuple[str, Backend] | None:
        """The Python and backend a release runs with here, or None (a skip, with no run)."""
        kinds = [self.request.backend] + ([Backend.VENV] if self.request.venv_fallback else [])
        try:
            python, environments = place(
                release, self.request.python, [self.runner.environment(k) for k in kinds]
            )
        except NoInterpreterError:
            return None
        return python, environments.kind

    def spec_for(self, release: Release) -> EnvSpec | None:
        placed = self.place(release)
        if placed is None:
            return None
        python, backend = placed
        keras = self.request.keras
        if keras is KerasVariant.LEGACY and not legacy_keras_applies(release.version):
            # releases before 2.16 run as they are: their tf.keras already is Keras 2
            keras = KerasVariant.DEFAULT
        return EnvSpec(release.version, python, self.request.flavour, keras, backend)

    # -- running ---------------------------------------------------------------------
    def run_round(self, indices: Sequence[int]) -> None:
        todo = [i for i in indices if i not in self.records and self.specs[i] is not None]
        for i in indices:
            if self.specs[i] is None and i not in self.records:
                self.note_unavailable(i)
        if not todo:
            return
        self.round += 1
        names = ", ".join(self.releases[i].version for i in todo)
        self.progress.say(f"== round {self.round}: {names}")
        with ThreadPoolExecutor(max_workers=max(1, self.request.jobs)) as pool:
            futures = {i: pool.submit(self.execute, self.specs[i]) for i in todo}  # type: ignore[arg-type]
            try:
                for i, future in futures.items():
                    done = future.result()
                    self.records[i] = done.record
                    self.add_step(i, done.record, done.seconds, done.reused)
            except KeyboardInterrupt:
                # Stopping: the other runs of the round are being killed; keep the ones that
                # finished before the signal in the log (their results are stored anyway).
                kill_all()
                pool.shutdown(wait=True, cancel_futures=True)
                for i, future in futures.items():
                    finished = future.done() and not future.cancelled() and future.exception() is None
                    if i not in self.records and finished:
                        done = future.result()
                        self.records[i] = done.record
                        self.add_step(i, done.record, done.seconds, done.reused)
                raise
        self.save()

    def _stored(self, spec: EnvSpec) -> RunRecord | None:
        """The stored record that answers this bisection's runs (same question, timeout long enough)."""
        found = self.runner.store.get(self.request.scenario.name, self.request.scenario.sha256, spec)
        return found if found is not None and found.answers(self.runner.settings.timeout) else None

    def note_unavailable(self, index: int) -> None:
        release = self.releases[index]
        self.report.steps.append(
            Step(
                round=self.round,
                version=release.version,
                outcome=StepOutcome.UNAVAILABLE,
                state=None,
                cls=Class.SKIP,
                reused=False,
                seconds=0.0,
                summary=f"no wheel for a Python here (needs one of {', '.join(release.pythons)})",
            )
        )

    def add_step(
        self, index: int, record: RunRecord, seconds: float, reused: bool, round_: int | None = None
    ) -> None:
        state = state_of(record, self.request.probe)
        self.report.steps.append(
            Step(
                round=self.round if round_ is None else round_,
                version=self.releases[index].version,
                outcome=StepOutcome(record.outcome.value),
                state=state.name if state else None,
                cls=Class.UNJUDGED,
                reused=reused,
                seconds=round(seconds, 2),
                summary=record.verdict_summary[:300],
                key=record.spec.key,
            )
        )

    def state(self, index: int) -> State | None:
        record = self.records.get(index)
        return state_of(record, self.request.probe) if record else None

    # -- the search ------------------------------------------------------------------
    def run(self) -> BisectReport:
        try:
            self._search()
        except KeyboardInterrupt:
            kill_all()
            self.report.status = Status.INTERRUPTED
            self.report.message = (
                "every finished run is stored; resume with the same command:\n  " + self.report.command
            )
            self.save()
            raise
        self.report.finished_at = now_iso()
        self.save()
        return self.report

    def _search(self) -> None:
        size = len(self.releases)
        probe_state = BisectState(size, self.request.jobs)
        self.run_round(probe_state.first_round())
        low, high = self.decide_end(0, +1), self.decide_end(size - 1, -1)
        if low is None or high is None or low >= high:
            self.finish_undecidable()
            return
        self.gather_evidence(low, high)
        old, new = self.state(low), self.state(high)
        assert old is not None and new is not None
        self.report.old_state, self.report.new_state = old.name, new.name
        for index, end_state in ((low, old), (high, new)):
            if end_state.is_error:
                self.report.end_failures[self.releases[index].version] = self.failure_at(index)
        if self.request.regress == "error":
            self.search_failure(low, high, old, new, any_failure=True)
            return
        if old.is_error or new.is_error:
            self.report.status = Status.END_FAILS
            self.report.message = self.end_failure_words(low, high)
            if old.is_error != new.is_error:
                self.search_failure(low, high, old, new, any_failure=False)
            return
        terms = terms_for(old, new, self.request.term_old, self.request.term_new)
        self.report.term_old, self.report.term_new = terms.old_name, terms.new_name
        if old == new:
            self.label_steps(terms)
            self.finish_no_change(low, high, old)
            return
        state = self.narrow(low, high, terms)
        self.finish(state, terms, low)

    def gather_evidence(self, low: int, high: int) -> None:
        """Every stored result for the same question inside the range is evidence: taken into
        the search (it costs nothing) and into the answer (a non-monotonic range says so)."""
        if self.runner.settings.force:
            return
        for i in range(low + 1, high):
            spec = self.specs[i]
            if i in self.records or spec is None:
                continue
            stored = self._stored(spec)
            if stored is not None:
                self.records[i] = stored
                self.add_step(i, stored, 0.0, True, round_=0)  # round 0: known before this bisection

    def narrow(self, low: int, high: int, judgement: Judgement) -> BisectState:
        """Rounds between two ends of different classes, until the change point is pinned."""
        state = BisectState(high - low + 1, self.request.jobs)
        for i in self.records:
            if low <= i <= high:
                state.record(i - low, judgement.classify(self.state(i)))
        for i in range(low, high + 1):
            if self.specs[i] is None:
                state.record(i - low, Class.SKIP)
                self.note_unavailable(i)
        while True:
            todo = state.next_round()
            if not todo:
                break
            self.run_round([i + low for i in todo])
            for i in todo:
                state.record(i, judgement.classify(self.state(i + low)))
        return state

    def failure_at(self, index: int) -> str:
        record = self.records[index]
        return failure_text(record, self.request.probe) or record.verdict_summary

    def end_failure_words(self, low: int, high: int) -> str:
        versions = self.releases[low].version, self.releases[high].version
        failing = [(v, self.report.end_failures[v]) for v in versions if v in self.report.end_failures]
        if len(failing) == 2:
            return (
                f"the scenario fails at both ends (TF {versions[0]}: {failing[0][1]}; TF {versions[1]}: "
                f"{failing[1][1]}): the question cannot be judged there. Pick ends where it runs "
                "(--good/--bad), bisect the failure itself with --regress error, or run `tfbisect sweep`."
            )
        version, text = failing[0]
        which = "newer" if version == versions[1] else "older"
        return (
            f"the {which} end, TF {version}, fails: {text}; the question cannot be judged there. "
            "Where the failure itself begins is reported apart; bisect the question where the scenario "
            "runs by choosing that range with --good/--bad."
        )

    def search_failure(self, low: int, high: int, old: State, new: State, *, any_failure: bool) -> None:
        """Where a failure began (or went away): its own finding, never a good or a bad."""
        if old.is_error == new.is_error:  # only with --regress error: both ends fail, or neither
            self.report.status = Status.NO_CHANGE
            both = "fails at both ends" if old.is_error else "fails at neither end"
            self.report.message = (
                f"the scenario {both} (TF {self.releases[low].version} and {self.releases[high].version}): "
                "there is no start of a failure to find between them. Pick other ends, or run `tfbisect sweep`."
            )
            return
        terms = failure_terms(
            old,
            new,
            any_failure=any_failure,
            term_old=self.request.term_old if any_failure else None,
            term_new=self.request.term_new if any_failure else None,
        )
        failing_index = low if terms.failing_old else high
        failure = self.failure_at(failing_index)
        self.report.question = (
            (
                "where the scenario starts to fail"
                if not terms.failing_old
                else "where the scenario stops failing"
            )
            if any_failure
            else self.report.question
        )
        state = self.narrow(low, high, terms)
        result = state.result()
        change = self.confirm(result.change, state, terms, low)
        names = self.report.versions
        last_old, first_new = names[change.last_old + low], names[change.first_new + low]
        candidates = [names[i + low] for i in change.candidates]
        without, with_ = (first_new, last_old) if terms.failing_old else (last_old, first_new)
        self.report.failure_finding = {
            "failure": failure,
            "direction": "stops" if terms.failing_old else "starts",
            "last_without": None if terms.failing_old else without,
            "first_with": with_ if not terms.failing_old else None,
            "last_with": with_ if terms.failing_old else None,
            "first_without": without if terms.failing_old else None,
            "candidates": candidates,
        }
        self.label_steps(terms)
        one_of = f"one of {', '.join(candidates)}" if len(candidates) > 1 else first_new
        if terms.failing_old:
            finding = f"last run with the failure: TF {last_old}, first without it: TF {one_of} ({failure})"
        else:
            finding = f"last run without the failure: TF {last_old}, first with it: TF {one_of} ({failure})"
        if any_failure:
            self.report.term_old, self.report.term_new = terms.old_name, terms.new_name
            self.finish(state, terms, low)
            self.report.message = finding + (
                f". {self.report.message}" if self.report.status is not Status.FOUND else ""
            )

    def finish_no_change(self, low: int, high: int, end_state: State) -> None:
        """Both ends agree; but stored results inside the range may not, and then that is the answer."""
        decisive = [
            (i, self.state(i))
            for i in sorted(self.records)
            if low <= i <= high and self.state(i) is not None and not self.state(i).is_error  # type: ignore[union-attr]
        ]
        names = self.report.versions
        changes = [(names[i], names[j]) for (i, a), (j, b) in itertools.pairwise(decisive) if a != b]
        if changes:
            self.report.status = Status.NON_MONOTONIC
            self.report.changes = changes
            self.report.message = (
                f"both ends are {end_state.name}, but the results inside the range are not: "
                f"{len(changes)} change points ("
                + "; ".join(f"{a} -> {b}" for a, b in changes)
                + "). Run `tfbisect sweep` over the range to see every version."
            )
            return
        self.report.status = Status.NO_CHANGE
        self.report.message = (
            f"both ends are {end_state.name} (TF {self.releases[low].version} and {self.releases[high].version}), "
            "and so is every stored result between them: nothing changed as far as this scenario can tell. "
            "Pick other ends, narrow the question with --probe, or run `tfbisect sweep` to see every version."
        )

    def decide_end(self, index: int, step: int) -> int | None:
        """The end itself if it can be tested, else the nearest testable version inward (up to 3 tries)."""
        for _ in range(4):
            if not 0 <= index < len(self.releases):
                return None
            self.run_round([index])
            if self.state(index) is not None:
                return index
            self.progress.say(
                f"TF {self.releases[index].version} cannot be tested here; moving the end inward"
            )
            index += step
        return None

    def finish_undecidable(self) -> None:
        self.report.status = Status.UNDECIDABLE
        self.report.message = (
            "an end of the range could not be tested (skips at both sides of it too); see the log for why. "
            "Give testable ends with --good/--bad."
        )

    def label_steps(self, terms: Judgement) -> None:
        """Name each step old/new/skip/other now that the ends have fixed what those mean."""
        self.report.steps = [
            replace(step, cls=terms.classify(State(step.state) if step.state else None))
            for step in self.report.steps
        ]

    def finish(self, state: BisectState, terms: Judgement, low: int) -> None:
        result = state.result()
        change = self.confirm(result.change, state, terms, low)
        result = state.result()
        names = self.report.versions
        last_old, first_new = names[change.last_old + low], names[change.first_new + low]
        self.report.last_old, self.report.first_new = last_old, first_new
        self.report.candidates = [names[i + low] for i in change.candidates]
        self.report.changes = [
            (names[c.last_old + low], names[c.first_new + low]) for c in result.all_changes
        ]
        for version, index in ((last_old, change.last_old + low), (first_new, change.first_new + low)):
            record = self.records.get(index)
            self.report.git_versions[version] = record.git_version if record else None
        self.report.compare_url = COMPARE.format(old=git_tag(last_old), new=git_tag(first_new))
        old_name, new_name = terms.old_name, terms.new_name
        self.label_steps(terms)
        if not result.monotonic:
            self.report.status = Status.NON_MONOTONIC
            self.report.message = (
                f"the results are not monotonic: {len(result.all_changes)} change points among the runs ("
                + "; ".join(f"{a} -> {b}" for a, b in self.report.changes)
                + "). The first is reported; run `tfbisect sweep` over the range to see them all."
            )
        elif change.unresolved:
            self.report.status = Status.AMBIGUOUS
            self.report.message = (
                f"first {new_name} is one of {', '.join(self.report.candidates)}: the versions between "
                f"{last_old} and {first_new} could not be tested (see the log)."
            )
        else:
            self.report.status = Status.FOUND
            self.report.message = f"last {old_name}: {last_old}, first {new_name}: {first_new}"

    def confirm(self, change: ChangePoint, state: BisectState, terms: Judgement, low: int) -> ChangePoint:
        """Check the versions next to the change point when that is cheap (stored) or asked for."""
        neighbours = [change.last_old - 1, change.first_new + 1]
        cheap = []
        for i in neighbours:
            if 0 <= i < state.size and i not in state.known and self.specs[i + low] is not None:
                spec = self.specs[i + low]
                assert spec is not None
                if self.request.confirm or self._stored(spec) is not None:
                    cheap.append(i)
        if cheap:
            self.run_round([i + low for i in cheap])
            for i in cheap:
                state.record(i, terms.classify(self.state(i + low)))
        return state.result().change

    def save(self) -> None:
        write_json_atomic(self.log_path, self.report.to_dict())


def log_name(request: BisectRequest) -> str:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    what = safe_component(request.probe or "verdict")
    variant = f"{safe_component(request.flavour.value)}-{safe_component(request.keras.value)}"
    return f"{stamp}-{request.scenario.slug}-{what}-{variant}.json"
