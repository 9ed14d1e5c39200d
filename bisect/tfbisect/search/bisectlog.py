"""The bisection log: what a bisection asked, every step it took and what it found, as typed
data with a version, written after every round and read back by `bisect log`, the reports and a
resumed run.  No prose is made here (findings.py has the words) and nothing runs here
(bisection.py drives the search)."""

from __future__ import annotations

import enum
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tfbisect.core import jsonread
from tfbisect.core.errors import StoreError
from tfbisect.core.limits import TEXT_MAX_CHARS
from tfbisect.core.textsafe import bounded, clip, no_surrogates, one_line
from tfbisect.core.timing import Phase
from tfbisect.core.timing import from_dict as spent_from_dict
from tfbisect.core.timing import to_dict as spent_to_dict
from tfbisect.search.narrowlog import Narrowing
from tfbisect.search.state import Class
from tfbisect.search.steps import Step as Step
from tfbisect.search.steps import StepOutcome as StepOutcome

# 1: the first landing (request values flattened with str(), steps' fields as plain strings);
# 2: typed request values, steps' outcome and class as enums, this field;
# 3: the narrowing below the releases;
# 4: `time_spent`, the seconds per phase (core/timing.py) of the work done for this log.
LOG_VERSION = 4


class Status(enum.StrEnum):
    FOUND = "found"  # one change point, both sides run
    AMBIGUOUS = "ambiguous"  # skips next to the change: the first new is one of several
    NON_MONOTONIC = "non_monotonic"  # old, new, old: more than one change point
    NO_CHANGE = "no_change"  # both ends in the same state
    UNDECIDABLE = "undecidable"  # an end could not be tested at all
    END_FAILS = "end_fails"  # an end fails (crash, error, timeout): the question cannot be judged there
    INTERRUPTED = "interrupted"


@dataclass
class BisectReport:
    request: dict[str, Any]
    command: str
    versions: list[str]
    steps: list[Step] = field(default_factory=list)
    status: Status = Status.INTERRUPTED
    message: str = ""  # read from logs of version 1 only: the words are findings.explain's now
    old_state: str | None = None
    new_state: str | None = None
    term_old: str = "good"
    term_new: str = "bad"
    last_old: str | None = None
    first_new: str | None = None
    candidates: list[str] = field(default_factory=list)
    changes: list[tuple[str, str]] = field(default_factory=list)
    git_versions: dict[str, str | None] = field(default_factory=dict)
    compare_url: str | None = None
    started_at: str = ""
    finished_at: str = ""
    # What was asked, in words: "probe gradient_eager_plain", "the scenario's verdict", or for
    # `--regress error` "where the scenario starts to fail".
    question: str = ""
    regress: str = "state"  # "state": good/bad as the question's two states; "error": failing or not
    # Ends of the range that fail (version -> "Type: real message"): never good or bad.
    end_failures: dict[str, str] = field(default_factory=dict)
    # Where a failure itself began, a finding of its own: {"failure": "Type: message",
    # "last_without": V or None, "first_with": X, "candidates": [...]} (candidates: X alone when resolved).
    failure_finding: dict[str, Any] | None = None
    # The two versions the answer rests on (the range's ends, or the nearest testable ones).
    ends: list[str] = field(default_factory=list)
    # Below the releases: RCs, nightlies, dependency changes and suspect code (narrowlog.py).
    narrowing: Narrowing | None = None
    # Seconds downloading, building, running and tracing for this log (its bisection and its
    # narrowing, summed over parallel work); None in logs older than version 4.
    time_spent: dict[Phase, float] | None = None

    @property
    def first_new_text(self) -> str:
        """The first new version as it may be shown anywhere: "one of A, B, C" when unresolved."""
        if len(self.candidates) > 1:
            return "one of " + ", ".join(self.candidates)
        return self.first_new or "?"

    @property
    def runs(self) -> int:
        return sum(1 for s in self.steps if not s.reused and s.outcome is not StepOutcome.UNAVAILABLE)

    @property
    def reused(self) -> int:
        return sum(1 for s in self.steps if s.reused)

    @property
    def rounds(self) -> int:
        return max((s.round for s in self.steps), default=0)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["log_version"] = LOG_VERSION
        data["status"] = self.status.value
        data["steps"] = [s.to_dict() for s in self.steps]
        data["narrowing"] = self.narrowing.to_dict() if self.narrowing else None
        data["time_spent"] = spent_to_dict(self.time_spent) if self.time_spent is not None else None
        data["summary"] = {"runs": self.runs, "reused": self.reused, "rounds": self.rounds}
        return data

    @classmethod
    def from_dict(cls, data: object) -> BisectReport:
        """The typed report of a log's JSON, read defensively (see `read`)."""
        return read(data)


class DamagedLog(StoreError, ValueError):
    """A bisection log that cannot be used: not JSON, from a newer tfbisect, a field of the wrong
    type, or one that contradicts the others.  A StoreError (exit 6, a two-part message) for the
    command line; a ValueError too, so that every reader that refuses a log it cannot read
    (narrow, report --bisect) refuses this one the same way."""


# A log is tens of kilobytes (a narrowing's suspects with their diffs: a few megabytes).
LOG_MAX_BYTES = 64 * 1024 * 1024
STEPS_MAX = 10_000  # a bisection of the whole index takes tens of steps
VERSIONS_MAX = 10_000
# A version names a build on the index ("2.4.0", "2.5.0rc1", "2.21.0.dev20251017"): never a path.
_VERSION = re.compile(r"[0-9A-Za-z][0-9A-Za-z.+!_-]{0,99}")
_ANSWERED = (Status.FOUND, Status.AMBIGUOUS, Status.NON_MONOTONIC)
_TODO = "bisect again (stored results are reused), or read the log with the tfbisect that wrote it."


def load_report(path: Path) -> BisectReport:
    """The log at `path`, read once and checked; DamagedLog (a two-part refusal) when it cannot be."""
    try:
        if path.stat().st_size > LOG_MAX_BYTES:
            raise DamagedLog(
                f"The bisection log {path} is larger than tfbisect reads ({LOG_MAX_BYTES // 2**20} MiB).",
                _TODO,
            )
        text = path.read_bytes().decode("utf-8")
        if not text:  # the name is taken when a bisection starts; the log follows its first round
            raise DamagedLog(
                f"The bisection log {path} is empty: its bisection stopped before it logged anything.",
                "bisect again (or, if it is still running, wait for its first round).",
            )
    except OSError as exc:
        raise DamagedLog(
            f"The bisection log {path} cannot be read ({exc.strerror or type(exc).__name__}).",
            "give the path of a log under REPORTS/bisect/ (`tfbisect bisect log` reads the newest).",
        ) from exc
    except UnicodeDecodeError as exc:
        raise DamagedLog(f"The bisection log {path} is not UTF-8 text ({exc.reason}).", _TODO) from exc
    try:
        data = jsonread.loads(text)
    except ValueError as exc:  # not JSON, or numbers Python will not read
        raise DamagedLog(f"The bisection log {path} is not JSON ({exc}).", _TODO) from exc
    except RecursionError as exc:
        raise DamagedLog(f"The bisection log {path} is nested too deep to be a log.", _TODO) from exc
    try:
        return read(data)
    except DamagedLog as exc:
        raise DamagedLog(f"The bisection log {path} is damaged: {exc.what}", exc.todo) from exc


def read(data: object) -> BisectReport:
    """The one reader of a log's JSON: every field checked for its type and clipped to a bound, the
    fields checked against each other; DamagedLog (never a traceback) for anything else."""
    if not isinstance(data, dict):
        raise DamagedLog(f"it holds {_kind(data)}, not a log's object.", _TODO)
    version = data.get("log_version", 1)
    if type(version) is not int or version < 1:
        raise DamagedLog(f"its log_version is {_kind(version)}, not a whole number.", _TODO)
    if version > LOG_VERSION:
        raise DamagedLog(
            f"it was written by a newer tfbisect (log version {version}; this one reads up to {LOG_VERSION}).",
            "read it with the tfbisect that wrote it, or update tfbisect.",
        )
    field = _Fields(data)
    request = bounded(field.get("request", dict, {}))
    if version == 1:  # requests were flattened with str(): "True", "1", "None"
        request = {k: _typed(v) for k, v in request.items()}
    report = BisectReport(
        request=request,
        command=field.text("command"),
        versions=field.versions("versions", VERSIONS_MAX),
        steps=[_step(raw, i) for i, raw in enumerate(field.get("steps", list, [])[: STEPS_MAX + 1])],
        status=field.choice("status", Status),
        message=field.text("message"),
        old_state=field.text("old_state", optional=True),
        new_state=field.text("new_state", optional=True),
        term_old=field.text("term_old", "good", limit=100),
        term_new=field.text("term_new", "bad", limit=100),
        last_old=field.version("last_old"),
        first_new=field.version("first_new"),
        candidates=field.versions("candidates", VERSIONS_MAX),
        changes=[_pair(c) for c in field.get("changes", list, [])[:VERSIONS_MAX]],
        git_versions=field.git_versions(),
        compare_url=field.text("compare_url", optional=True, limit=2000),
        started_at=field.text("started_at", limit=100),
        finished_at=field.text("finished_at", limit=100),
        question=field.text("question"),
        regress=field.text("regress", "state", limit=20),
        end_failures={
            _str(k, "end_failures"): _str(v, "end_failures")
            for k, v in field.get("end_failures", dict, {}).items()
        },
        failure_finding=_failure_finding(field.get("failure_finding", dict, None)),
        ends=field.versions("ends", 2),
        narrowing=_narrowing(data.get("narrowing")),
        # Only how long things took: a missing or damaged one is no reason to refuse the log.
        time_spent=spent_from_dict(data.get("time_spent")),
    )
    if len(report.steps) > STEPS_MAX:
        raise DamagedLog(f"it has more than {STEPS_MAX} steps.", _TODO)
    _consistent(report)
    return report


def _typed(value: Any) -> Any:
    if value in ("True", "False"):
        return value == "True"
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _kind(value: object) -> str:
    """What a wrong value is, in a few words (never the value: it may be 20 MB, or hostile)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, str):
        return "text"
    if isinstance(value, int | float):
        return "a number"
    return (
        "a list" if isinstance(value, list) else "an object" if isinstance(value, dict) else "something else"
    )


def _str(value: object, where: str, limit: int = TEXT_MAX_CHARS) -> str:
    if not isinstance(value, str):
        raise DamagedLog(f"{where} holds {_kind(value)} where text belongs.", _TODO)
    return clip(no_surrogates(value), limit)


def _version(value: object, where: str) -> str:
    text = _str(value, where, 200)
    if not _VERSION.fullmatch(text) or ".." in text:
        raise DamagedLog(f"{where} names {one_line(text, 60)!r}, which is not a TF version.", _TODO)
    return text


@dataclass(frozen=True)
class _Fields:
    """The top-level fields of a log, each read with its type and bound."""

    data: dict[str, Any]

    def get(self, key: str, kind: type, default: Any) -> Any:
        value = self.data.get(key, default)
        if value is None and default is None:
            return None
        if not isinstance(value, kind):
            raise DamagedLog(f"its field {key!r} holds {_kind(value)}, not {_kind(kind())}.", _TODO)
        return value

    def text(
        self, key: str, default: str = "", *, optional: bool = False, limit: int = TEXT_MAX_CHARS
    ) -> Any:
        value = self.data.get(key, None if optional else default)
        if value is None and optional:
            return None
        return _str(value, f"its field {key!r}", limit)

    def choice(self, key: str, kind: type[enum.StrEnum]) -> Any:
        value = self.data.get(key)
        try:
            return kind(str(value))
        except ValueError:
            raise DamagedLog(f"its field {key!r} is not one of {', '.join(kind)}.", _TODO) from None

    def version(self, key: str) -> str | None:
        value = self.data.get(key)
        return None if value is None else _version(value, f"its field {key!r}")

    def versions(self, key: str, most: int) -> list[str]:
        listed = self.get(key, list, [])
        if len(listed) > most:
            raise DamagedLog(f"its field {key!r} lists more than {most} versions.", _TODO)
        return [_version(v, f"its field {key!r}") for v in listed]

    def git_versions(self) -> dict[str, str | None]:
        found = self.get("git_versions", dict, {})
        return {
            _version(k, "its field 'git_versions'"): None
            if v is None
            else _str(v, "its field 'git_versions'", 200)
            for k, v in list(found.items())[:VERSIONS_MAX]
        }


def _step(raw: object, index: int) -> Step:
    """One step, each field of its type (a log of version 1 holds the same fields)."""
    where = f"its step {index + 1}"
    if not isinstance(raw, dict):
        raise DamagedLog(f"{where} holds {_kind(raw)}, not a step.", _TODO)
    try:
        outcome, cls = StepOutcome(str(raw.get("outcome"))), Class(str(raw.get("cls") or ""))
    except ValueError:
        raise DamagedLog(f"{where} has an outcome or class tfbisect does not know.", _TODO) from None
    number, seconds, reused = raw.get("round"), raw.get("seconds"), raw.get("reused", False)
    if isinstance(number, bool) or not isinstance(number, int) or number < 0:
        raise DamagedLog(f"{where} has a round of {_kind(number)}, not a whole number.", _TODO)
    if (
        isinstance(seconds, bool) or not isinstance(seconds, int | float) or not 0 <= seconds < 1e9
    ):  # NaN fails the comparison
        raise DamagedLog(f"{where} has seconds of {_kind(seconds)}, not a duration.", _TODO)
    if not isinstance(reused, bool):
        raise DamagedLog(f"{where} has a 'reused' of {_kind(reused)}, not true or false.", _TODO)
    state = raw.get("state")
    return Step(
        round=number,
        version=_version(raw.get("version"), where),
        outcome=outcome,
        state=None if state is None else _str(state, where),
        cls=cls,
        reused=reused,
        seconds=float(seconds),
        summary=_str(raw.get("summary", ""), where),
        key=_str(raw.get("key", ""), where, 1000),
    )


def _pair(raw: object) -> tuple[str, str]:
    if not isinstance(raw, list | tuple) or len(raw) != 2:
        raise DamagedLog(f"its field 'changes' holds {_kind(raw)}, not a pair of versions.", _TODO)
    return _version(raw[0], "its field 'changes'"), _version(raw[1], "its field 'changes'")


def _failure_finding(raw: dict[str, Any] | None) -> dict[str, Any] | None:
    """Where a failure began: its words and versions checked, as the views read them."""
    if raw is None:
        return None
    where = "its field 'failure_finding'"
    found: dict[str, Any] = {"failure": _str(raw.get("failure", ""), where)}
    direction = raw.get("direction", "starts")
    if direction not in ("starts", "stops"):
        raise DamagedLog(f"{where} says the failure {_kind(direction)} instead of starts or stops.", _TODO)
    found["direction"] = direction
    # A failure that starts is found between its last run without and first with it; one that
    # stops (a failing older end), between its last run with and first without it.
    for key in ("last_without", "first_with", "last_with", "first_without"):
        found[key] = None if raw.get(key) is None else _version(raw[key], where)
    candidates = raw.get("candidates", [])
    if not isinstance(candidates, list):
        raise DamagedLog(f"{where} lists its candidates as {_kind(candidates)}.", _TODO)
    found["candidates"] = [_version(c, where) for c in candidates[:VERSIONS_MAX]]
    return found


def _narrowing(raw: object) -> Narrowing | None:
    """The narrowing below the releases; a damaged one never costs the bisection (`narrow` redoes it)."""
    if not raw:
        return None
    try:
        if not isinstance(raw, dict):
            raise TypeError
        for i, step in enumerate(raw.get("steps") or []):
            _step(step, i)  # typed like the bisection's own steps, or the narrowing is dropped
        return Narrowing.from_dict(raw)
    except (DamagedLog, KeyError, TypeError, ValueError, AttributeError):
        return None


def _consistent(report: BisectReport) -> None:
    """A log whose fields contradict each other was damaged (or forged): its answer is not shown
    as an answer, nor as an interrupted search that a refreshed catalogue could resume."""
    versions = set(report.versions)
    run = {step.version for step in report.steps}
    strays = sorted(run - versions) + sorted(set(report.candidates) - versions)
    if strays:
        raise DamagedLog(f"it names {one_line(strays[0], 60)!r}, which is not in its range.", _TODO)
    if report.status in _ANSWERED:
        for label, version in (("last_old", report.last_old), ("first_new", report.first_new)):
            if version is None or version not in versions or (report.steps and version not in run):
                raise DamagedLog(
                    f"its answer's {label} ({version or 'none'}) is not a version it ran.", _TODO
                )
        assert report.last_old is not None and report.first_new is not None
        if report.versions.index(report.last_old) >= report.versions.index(report.first_new):
            raise DamagedLog("its last old version does not come before its first new one.", _TODO)
    n = report.narrowing
    if n is not None and n.release_range != (report.last_old, report.first_new):
        raise DamagedLog(
            "its narrowing is between other releases than its answer "
            f"({one_line(n.release_range[0], 60)} and {one_line(n.release_range[1], 60)}).",
            _TODO,
        )
