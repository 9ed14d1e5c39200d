"""What the tracer saw: a probe trace, validated (it is written next to untrusted scenario code)."""

from __future__ import annotations

import os
import re
import zipfile
import zlib
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tfbisect.core import jsonread
from tfbisect.core.errors import NarrowError
from tfbisect.core.fsio import write_json_atomic
from tfbisect.core.limits import RESULT_MAX_BYTES
from tfbisect.core.record import RunRecord
from tfbisect.core.resultfile import read_result
from tfbisect.core.safe_names import safe_component
from tfbisect.core.spec import EnvSpec
from tfbisect.narrow.sources import member_path, read_places
from tfbisect.search.narrowlog import Suspects

TRACE_MAX_FILES = 20000  # the tracer's own cap
TRACE_MAX_LINES_PER_FILE = 1_000_000
TRACE_MAX_LINE = 10_000_000
TRACE_MAX_ORDER = 2**53  # first-execution numbers count lines: JSON's exact integers bound them
TRACE_MAX_DEPTH = 1_000_000
TRACE_SCHEMAS = (1, 2)  # 1: lines only (traces stored before order and depth were recorded)
KEPT_MAX_BYTES = 512 * 1024 * 1024  # a kept trace larger than this was not written by the tracer
# A kept ranking holds SUSPECTS_KEPT bounded suspects: ~100 KB.  It is read by the bounded reader
# of result documents (regular files only), whose cap is the larger bound.
RANKING_MAX_BYTES = min(16 * 1024 * 1024, RESULT_MAX_BYTES)
RANKING_SUFFIX = ".suspects"  # not ".json": the results' listing reads those as runs' records
RANKING_KEY = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class Trace:
    """One probe's run in one environment, as `probe_tracer.py` wrote it."""

    python: str
    exit_code: int
    versions: Mapping[str, str | None]  # package -> installed distribution version
    lines: Mapping[str, frozenset[int]]  # installed path -> lines that ran
    imported: frozenset[str] = frozenset()  # distributions the process had imported at its end
    # installed path -> line -> its first-execution order in the run (numbers of one run compare
    # across its files); empty for a trace of schema 1, which did not record it
    first: Mapping[str, Mapping[int, int]] = field(default_factory=dict)
    # installed path -> line -> the call depth below the probe's frame of the call that first ran
    # the line's code; lines of another thread, and every line of a schema 1 trace, have none
    depth: Mapping[str, Mapping[int, int]] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: object) -> Trace:
        """Validated: a trace is written next to scenario code, so nothing in it is trusted.
        Raises ValueError saying what is wrong."""
        if not isinstance(data, dict) or data.get("schema") not in TRACE_SCHEMAS:
            raise ValueError(f"not a probe trace: schema {' or '.join(map(str, TRACE_SCHEMAS))} expected")
        python, exit_code = data.get("python"), data.get("exit_code")
        if not isinstance(python, str) or len(python) > 32:
            raise ValueError("a probe trace's `python` is not a version")
        if not isinstance(exit_code, int) or isinstance(exit_code, bool):
            raise ValueError("a probe trace's `exit_code` is not an integer")
        files = data.get("files")
        lines = _trace_lines(files)
        first, depth = _trace_order(files, lines) if data["schema"] >= 2 else ({}, {})
        return cls(
            python=python,
            exit_code=exit_code,
            versions=_trace_versions(data.get("packages")),
            lines=lines,
            imported=_trace_imported(data.get("imported")),
            first=first,
            depth=depth,
        )

    def version_of(self, path: str) -> str | None:
        return self.versions.get(path.split("/", 1)[0])


def _trace_versions(packages: object) -> dict[str, str | None]:
    if not isinstance(packages, dict) or len(packages) > 1000:
        raise ValueError("a probe trace's `packages` is not a mapping of packages")
    versions: dict[str, str | None] = {}
    for name, entry in packages.items():
        version = entry.get("version") if isinstance(entry, dict) else None
        if not isinstance(name, str) or (version is not None and not isinstance(version, str)):
            raise ValueError(f"a probe trace's package {name!r} is malformed")
        versions[name] = version[:100] if version is not None else None
    return versions


def _trace_imported(imported: object) -> frozenset[str]:
    """The imported distributions' names (absent from older traces and on Python 3.7)."""
    if imported is None:
        return frozenset()
    if not isinstance(imported, dict) or len(imported) > 5000:
        raise ValueError("a probe trace's `imported` is not a mapping of distributions")
    return frozenset(name[:100] for name in imported if isinstance(name, str))


def _trace_lines(files: object) -> dict[str, frozenset[int]]:
    if not isinstance(files, dict) or len(files) > TRACE_MAX_FILES:
        raise ValueError(f"a probe trace's `files` is not a mapping of at most {TRACE_MAX_FILES} files")
    lines: dict[str, frozenset[int]] = {}
    for path, entry in files.items():
        if not isinstance(path, str) or member_path(path) is None or len(path) > 1000:
            raise ValueError(f"a probe trace names a file {path!r} that is not an installed .py path")
        found = entry.get("lines") if isinstance(entry, dict) else None
        if not isinstance(found, list) or len(found) > TRACE_MAX_LINES_PER_FILE:
            raise ValueError(f"a probe trace's lines for {path} are not a list")
        if not all(type(line) is int and 0 < line <= TRACE_MAX_LINE for line in found):
            raise ValueError(f"a probe trace's lines for {path} are not all line numbers")
        lines[path] = frozenset(found)
    return lines


def _trace_order(
    files: object, lines: Mapping[str, frozenset[int]]
) -> tuple[dict[str, dict[int, int]], dict[str, dict[int, int]]]:
    """Each file's lines' first-execution order and call depth (schema 2), lists beside its
    sorted `lines`: either may be absent (nothing known of the file), never malformed."""
    assert isinstance(files, dict)  # `_trace_lines` checked it
    first: dict[str, dict[int, int]] = {}
    depth: dict[str, dict[int, int]] = {}
    for path, entry in files.items():
        ordered = sorted(lines[path])
        orders, depths = entry.get("first"), entry.get("depth")
        if orders is not None:
            if not isinstance(orders, list) or len(orders) != len(ordered):
                raise ValueError(f"a probe trace's first-execution order for {path} is not one per line")
            if not all(type(n) is int and 0 <= n <= TRACE_MAX_ORDER for n in orders):
                raise ValueError(f"a probe trace's first-execution order for {path} is not all counts")
            first[path] = dict(zip(ordered, orders, strict=True))
        if depths is not None:
            if not isinstance(depths, list) or len(depths) != len(ordered):
                raise ValueError(f"a probe trace's call depths for {path} are not one per line")
            if not all(d is None or (type(d) is int and 0 < d <= TRACE_MAX_DEPTH) for d in depths):
                raise ValueError(f"a probe trace's call depths for {path} are not all depths")
            depth[path] = {line: d for line, d in zip(ordered, depths, strict=True) if d is not None}
    return first, depth


@dataclass(frozen=True)
class ProbeTraces:
    """One probe traced in both environments: the older one (last good) and the newer (first bad)."""

    old: Trace
    new: Trace


# ---- Which probes are traced ------------------------------------------------------------------


def probe_outcomes(record: RunRecord) -> dict[str, tuple[str, str]]:
    """Probe name -> (kind, outcome) of a run's document."""
    found: dict[str, tuple[str, str]] = {}
    document = record.document or {}
    for probe in document.get("probes", []) if isinstance(document, dict) else []:
        if isinstance(probe, dict) and isinstance(probe.get("name"), str):
            found[probe["name"]] = (str(probe.get("kind", "")), str(probe.get("outcome", "")))
    return found


def choose_probes(asked: str | None, old: RunRecord, new: RunRecord) -> tuple[str | None, str | None]:
    """The failing probe to trace (the one asked, else the first whose outcome changed) and a
    passing one: the same kind, passing in both environments as the failing one did in the old,
    the most alike by name (`gradient_eager_plain` -> `gradient_eager_decorated`)."""
    before, after = probe_outcomes(old), probe_outcomes(new)
    failing = asked
    if failing is None:
        changed = [
            name for name, (_, outcome) in after.items() if before.get(name, ("", outcome))[1] != outcome
        ]
        failing = changed[0] if changed else None
    if failing is None or failing not in after or failing not in before:
        return failing, None
    kind, good = before[failing]
    parts = set(failing.split("_"))
    passing = [
        name
        for name, (other_kind, outcome) in after.items()
        if name != failing
        and other_kind == kind
        and outcome == good
        and before.get(name, ("", ""))[1] == good
    ]
    passing.sort(key=lambda name: (-len(parts & set(name.split("_"))), name))
    return failing, passing[0] if passing else None


# ---- A traced run, checked, and kept beside the log -------------------------------------------


class TracedRun(Protocol):
    """What a traced run hands back (`runs.tracing.TraceRun`)."""

    @property
    def document(self) -> dict[str, Any]: ...  # the tracer's document, unchecked
    @property
    def result(self) -> dict[str, Any] | None: ...  # the scenario's result document, unchecked
    @property
    def seconds(self) -> float: ...
    @property
    def exit_code(self) -> int | None: ...
    @property
    def log(self) -> Path: ...
    @property
    def reused(self) -> bool: ...  # read back from the store: no run now
    def keep(self) -> None: ...  # store it, checked, for a repeat to reuse (nothing when reused)
    def drop(self) -> None: ...  # forget the stored one it was read from (nothing when run now)


def refused_probe(done: TracedRun) -> bool:
    """Whether a run of one probe alone failed because the scenario takes no `--probe` (one
    written before the narrowing existed: argparse exits 2 on the unknown option, no document)."""
    return done.exit_code == 2 and done.result is None


# One probe run alone in an environment: (spec, probes, packages to trace, traced or the yardstick).
TraceProbes = Callable[[EnvSpec, Sequence[str], Sequence[str], bool], TracedRun]


@dataclass
class ProbeRunner:
    """Runs one probe alone through `trace`; a scenario that cannot run one probe alone (one
    written before `--probe`) is run whole from then on, `whole` set."""

    trace: TraceProbes
    packages: tuple[str, ...]
    say: Callable[[str], None]
    whole: bool = False
    runs: int = 0  # the runs made now (traced or the yardstick), not those reused from the store
    reused: int = 0

    def traced(self, spec: EnvSpec, probe: str) -> TracedRun:
        """The probe traced alone (or the scenario whole); a run now is stored only once
        `checked_trace` accepts it, and a stored one it rejects is forgotten and run again."""
        done = self.traced_once(spec, probe)
        rejected = unusable(done, probe, spec.label, self.whole)
        if done.reused and rejected is not None:
            self.say(
                f"[{spec.label}] the stored traced run of {probe} is no usable trace ({rejected[:300]}): "
                "tracing it again, which replaces it (nothing to do)"
            )
            done.drop()
            done = self.traced_once(spec, probe)
            rejected = unusable(done, probe, spec.label, self.whole)
        if rejected is None:
            done.keep()
        return done

    def traced_once(self, spec: EnvSpec, probe: str) -> TracedRun:
        done = self.counted(self.trace(spec, [] if self.whole else [probe], list(self.packages), True))
        if not self.whole and refused_probe(done):
            self.say(f"[{spec.label}] the scenario takes no --probe: tracing it whole")
            self.whole = True
            done = self.counted(self.trace(spec, [], list(self.packages), True))
        return done

    def untraced(self, spec: EnvSpec, probe: str) -> TracedRun:
        """The yardstick: the same run, untraced; stored when the probe ran (or the scenario whole
        answered)."""
        done = self.counted(self.trace(spec, [] if self.whole else [probe], [], False))
        if done.result is not None and (self.whole or probe in probes_ran(done)):
            done.keep()
        return done

    def counted(self, done: TracedRun) -> TracedRun:
        if done.reused:
            self.reused += 1
        else:
            self.runs += 1
        return done


def probes_ran(done: TracedRun) -> set[object]:
    """The probes a run's result document names."""
    listed = (done.result or {}).get("probes", [])
    return {p.get("name") for p in (listed if isinstance(listed, list) else []) if isinstance(p, dict)}


def unusable(done: TracedRun, probe: str, label: str, whole: bool) -> str | None:
    """Why `checked_trace` rejects a traced run, or None when it accepts it."""
    try:
        checked_trace(done, probe, label, whole=whole)
    except NarrowError as exc:
        return exc.what
    return None


def checked_trace(
    done: TracedRun, probe: str, label: str, *, whole: bool = False
) -> tuple[Trace, dict[str, Any]]:
    """A traced run's trace and the document to keep, validated before anything keeps it.  A run
    that traced nothing, or not the probe, is an error: no trace must read as "no Python changed";
    a document that is not a valid trace is one too.  A `whole` run (the scenario traced whole,
    from its start: it has no window of its own to open) needs no window."""
    ran = probes_ran(done)
    window = done.document.get("window")
    opened = window.get("opened", 0) if isinstance(window, dict) else 0
    if not done.document.get("files") or not (opened or whole) or probe not in ran:
        raise NarrowError(
            f"The traced run of {probe} on {label} traced nothing (exit {done.exit_code}; the "
            f"tracing window was opened {opened} times; the probe {'ran' if probe in ran else 'did not run'}).",
            f"check that the scenario runs `--probe {probe}` alone and opens the tracing window "
            f"(README: Writing a scenario); the run's log: {done.log}",
        )
    try:
        trace = Trace.from_dict(done.document)
    except ValueError as exc:
        raise NarrowError(
            f"The traced run of {probe} on {label} wrote an unusable trace: {exc}.",
            f"see the run's log under {done.log.parent}.",
        ) from exc
    return trace, {**done.document, "seconds": round(done.seconds, 2)}


@dataclass(frozen=True)
class KeptTraces:
    """The traces kept beside a bisection log (`LOG.traces/`), so that an interrupted narrowing
    traces no build twice.  Only valid traces are kept, a kept one is validated again when read
    (the folder is anyone's to edit), and with `force` none is reused.

    With a `store` (under the reports' results) the rankings are kept there too, by the hash of
    what they follow from (`ranking.kept_suspects`): a repeated bisection, whose log is new,
    ranks nothing again."""

    folder: Path
    force: bool = False
    store: Path | None = None
    say: Callable[[str], None] | None = None  # where a damaged or unstorable ranking is noted

    def ranking(self, key: str) -> Suspects | None:
        """A kept ranking, read back bounded (a regular file only: a link or a FIFO there is
        damage, never followed nor waited on) and defensively; None when there is none, forced,
        or it is damaged (then, with a note, it is ranked again and replaced)."""
        if self.store is None or self.force or not RANKING_KEY.fullmatch(key):
            return None
        path = self.store / f"{key}{RANKING_SUFFIX}"
        if not os.path.lexists(path):
            return None
        try:
            found = _read_ranking(path, key)
        except (OSError, ValueError, RecursionError) as exc:
            self.note(
                f"the stored ranking {path} is damaged ({str(exc)[:200]}): ranking again, which "
                "replaces it (nothing to do)"
            )
            return None
        return found

    def keep_ranking(self, key: str, suspects: Suspects) -> None:
        """Store a ranking for any repeat to reuse; a disk that cannot hold it (full, read-only)
        loses nothing but the reuse: a note, and the narrowing goes on."""
        if self.store is None or not RANKING_KEY.fullmatch(key):
            return
        path = self.store / f"{key}{RANKING_SUFFIX}"
        try:
            write_json_atomic(path, {"key": key, "suspects": suspects.to_dict()})
        except OSError as exc:
            self.note(
                f"the ranking of the suspects was not stored ({str(exc)[:200]}), so a repeat ranks "
                f"them again; free space (or make {self.store} writable) for a repeat to reuse it"
            )

    def note(self, text: str) -> None:
        if self.say is not None:
            self.say(text)

    def path(self, role: str, side: str, version: str) -> Path:
        return self.folder / f"{safe_component(f'{role}-{side}-{version}')}.json"

    def reused(self, role: str, side: str, version: str) -> tuple[Trace, float] | None:
        path = self.path(role, side, version)
        if self.force or not path.is_file():
            return None
        try:
            document = jsonread.read(path, max_bytes=KEPT_MAX_BYTES)
            seconds = document.get("seconds") if isinstance(document, dict) else None
            if not isinstance(seconds, int | float) or isinstance(seconds, bool):
                return None
            return Trace.from_dict(document), float(seconds)
        except (OSError, ValueError, RecursionError):
            return None

    def keep(self, role: str, side: str, version: str, document: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(self.path(role, side, version), document)


def _read_ranking(path: Path, key: str) -> Suspects:
    """A stored ranking, read bounded and checked: ValueError (or OSError) saying what is wrong."""
    raw, unsafe = read_result(path.parent, path.name)
    if unsafe is not None:  # its words are of a result document: "the result document is a FIFO"
        raise ValueError(unsafe.message.replace("the result document", "it"))
    if raw is None:
        raise ValueError("it went missing while it was read")
    if len(raw) > RANKING_MAX_BYTES:
        raise ValueError(f"it is larger than the {RANKING_MAX_BYTES} bytes' cap")
    data = jsonread.loads(raw)
    if not isinstance(data, dict) or data.get("key") != key:
        raise ValueError("it is not a ranking stored under its key")
    found = Suspects.read(data.get("suspects"))
    if found is None:
        raise ValueError("its suspects are not a ranking")
    return found


def traced_sources(
    places: Callable[[EnvSpec], list[Path]],
    specs: tuple[EnvSpec, EnvSpec],
    failing: ProbeTraces,
    packages: Collection[str],
) -> tuple[dict[str, str], dict[str, str]]:
    """Both versions' sources of the traced packages' files the failing probe ran; NarrowError
    when they cannot be read, or a file that ran is missing where it ran."""
    wanted = set(packages)
    traced = {p for p in set(failing.old.lines) | set(failing.new.lines) if p.split("/", 1)[0] in wanted}
    try:
        old_sources = read_places(places(specs[0]), traced)
        new_sources = read_places(places(specs[1]), traced)
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, NotImplementedError, RuntimeError) as exc:
        raise NarrowError(
            f"The installed sources could not be read: {exc}.",
            "remove the environment from the cache (a venv under CACHE/venvs, or the wheel cache) and narrow again.",
        ) from exc
    # A file that ran must be readable where it ran: else every line of it would read as added.
    lost = [p for p in failing.old.lines if p in traced and p not in old_sources]
    lost += [p for p in failing.new.lines if p in traced and p not in new_sources]
    if lost:
        raise NarrowError(
            f"The installed sources of {len(lost)} traced files could not be read (e.g. {lost[0]}): "
            "the environment's wheels left the cache, or its files are links out of it.",
            "remove the environment (CACHE/venvs, or the wheel cache) and narrow again.",
        )
    return old_sources, new_sources
