"""The plan of a bisection: the request, and the releases it covers with the environment each
runs in here (or none: a skip that costs no run).  Pure apart from asking the backends where a
release fits, which needs no engine: nothing runs and nothing is contacted before round one."""

from __future__ import annotations

import contextlib
import enum
import shlex
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

from packaging.version import Version

from tfbisect.core import argv
from tfbisect.core.catalogue import Catalogue, Release
from tfbisect.core.errors import NoInterpreterError, UsageError
from tfbisect.core.scenario import Scenario
from tfbisect.core.spec import DEFAULT_BACKEND, EnvSpec, Flavour, KerasVariant, legacy_keras_applies
from tfbisect.envs import registry
from tfbisect.envs.environments import Environments, place
from tfbisect.runs.runner import scenario_argument

# The request's keys that say which scenario (`from_record` is given the scenario itself).
SCENARIO_KEYS = ("scenario", "scenario_sha256", "scenario_argument", "script", "bad_if_raises")


@dataclass(frozen=True)
class BisectRequest:
    scenario: Scenario
    good: str | None = None
    bad: str | None = None
    probe: str | None = None
    flavour: Flavour = Flavour.CPU
    keras: KerasVariant = KerasVariant.DEFAULT
    backend: str = DEFAULT_BACKEND  # a registered backend's name (envs/registry.py)
    # With --backend auto and an engine: versions no base image fits (Python <= 3.8) run in venvs
    # (the backends `--backend auto` ranks after this one).
    venv_fallback: bool = False
    python: str | None = None
    jobs: int = 1
    pre: bool = False
    confirm: bool = False
    term_old: str | None = None
    term_new: str | None = None
    timeout: float | None = None  # None: the default
    regress: str = "state"  # "error": bisect where the scenario starts (or stops) failing
    prefetch: int = 2  # environments prepared ahead of the next round (0: none)
    # Each one prepared ahead also run ahead, with a core to spare (runs/runner.py `run_ahead`).
    run_ahead: bool = True
    # After the bisection: narrow below the releases (--no-narrow), with traced runs (--no-trace).
    narrow: bool = True
    trace: bool = True

    def to_record(self) -> dict[str, Any]:
        """The request as the log keeps it: JSON values of their own types, the scenario by name
        and hash (what a report matches logs by)."""
        kept: dict[str, Any] = {}
        for key, value in asdict(self).items():
            if key != "scenario":
                kept[key] = value.value if isinstance(value, enum.Enum) else value
        return (
            kept
            | {
                "scenario": self.scenario.name,
                "scenario_sha256": self.scenario.sha256,
                # How to find it again (`tfbisect narrow LOG`): its name, or its path when given by one.
                "scenario_argument": scenario_argument(self.scenario),
            }
            | self._script_record()
        )

    def _script_record(self) -> dict[str, Any]:
        """A plain script (`--script`) says so, with the harness options that change its verdict."""
        if not self.scenario.script:
            return {}
        return {"script": True, "bad_if_raises": list(self.scenario.bad_if_raises)}

    @classmethod
    def from_record(cls, data: dict[str, Any], scenario: Scenario) -> BisectRequest:
        """The request a log kept (`to_record`), for the scenario it names.  Raises ValueError
        when the log's request has a field or value this version does not know."""
        kept = {k: v for k, v in data.items() if k not in SCENARIO_KEYS}
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(kept) - known)
        if unknown:
            raise ValueError(f"unknown request fields {', '.join(unknown)}")
        for name, kind in (("flavour", Flavour), ("keras", KerasVariant)):
            if name in kept:
                kept[name] = kind(kept[name])
        if "backend" in kept and kept["backend"] not in registry.names():
            raise ValueError(f"the request's backend {str(kept['backend'])[:60]!r} is not one here")
        for name in ("good", "bad", "probe", "python", "term_old", "term_new"):
            _check(kept, name, lambda v: v is None or (isinstance(v, str) and 0 < len(v) <= 200))
        for name in ("jobs", "prefetch"):
            _check(kept, name, lambda v: type(v) is int and 0 <= v <= 256)
        for name in ("pre", "confirm", "venv_fallback", "narrow", "trace", "run_ahead"):
            _check(kept, name, lambda v: type(v) is bool)
        if isinstance(kept.get("timeout"), str):  # version 1 logs kept it as text
            with contextlib.suppress(ValueError):
                kept["timeout"] = float(kept["timeout"])
        _check(kept, "timeout", lambda v: v is None or (type(v) in (int, float) and 0 < v < 10**7))
        _check(kept, "regress", lambda v: v in ("state", "error"))
        return cls(scenario=scenario, **kept)

    def command(self) -> str:
        """The command line that repeats (or resumes) this bisection, from any directory."""
        return shlex.join(self.to_argv())

    def to_argv(self) -> list[str]:
        """Every option that changes the answer, as `tfbisect bisect` parses it back (a test
        round-trips it through the parser)."""
        return self.options().to_argv()

    def options(self) -> argv.BisectOptions:
        """The command-line options that make this request."""
        env = argv.EnvOptions(
            backend=registry.AUTO if self.venv_fallback else self.backend,
            base=self.flavour.value,
            keras=self.keras.value,
            timeout=argv.DEFAULT_TIMEOUT if self.timeout is None else self.timeout,
            pre=self.pre,
            **argv.naming(self.scenario, scenario_argument(self.scenario)),
        )
        return argv.BisectOptions(
            env=env,
            good=self.good or None,
            bad=self.bad or None,
            probe=self.probe or None,
            python=self.python or None,
            # A backend with a capacity of its own (a swarm) defaults to it: the jobs are always said then.
            jobs=self.jobs
            if self.jobs != 1 or registry.registration(self.backend).capacity is not None
            else None,
            confirm=self.confirm,
            term_old=self.term_old or None,
            term_new=self.term_new or None,
            regress=self.regress,
            prefetch=self.prefetch,
            run_ahead=self.run_ahead,
            narrow=self.narrow,
            trace=self.trace,
        )


def place_release(
    request: BisectRequest, release: Release, environment: Callable[[str], Environments[Any]]
) -> EnvSpec | None:
    """The environment a release runs in for this request: the first of the request's backends
    that fits it (venvs after containers with `--backend auto`), or None: nothing here can run it."""
    placed = placement(request, release, environment)
    return placed if isinstance(placed, EnvSpec) else None


@dataclass(frozen=True)
class Unplaced:
    """Why nothing here can run a release (the backends' own words), and what would let it."""

    what: str
    todo: str


def placement(
    request: BisectRequest, release: Release, environment: Callable[[str], Environments[Any]]
) -> EnvSpec | Unplaced:
    """`place_release`, or why nothing here can run the release: a skip that costs no run is
    still told apart from one the user can fix (another --python, another backend)."""
    names = [request.backend, *(registry.ranked_after(request.backend) if request.venv_fallback else ())]
    try:
        python, environments = place(release, request.python, [environment(n) for n in names])
    except NoInterpreterError as exc:
        return Unplaced(exc.what, exc.todo)
    keras = request.keras
    if keras is KerasVariant.LEGACY and not legacy_keras_applies(release.version):
        keras = KerasVariant.DEFAULT  # before 2.16, tf.keras already is Keras 2
    return EnvSpec(release.version, python, request.flavour, keras, environments.name)


def _check(kept: dict[str, Any], name: str, ok: Callable[[Any], bool]) -> None:
    if name in kept and not ok(kept[name]):
        raise ValueError(f"the request's {name} is {str(kept[name])[:60]!r}")


@dataclass(frozen=True)
class Plan:
    releases: tuple[Release, ...]  # oldest first, both ends included
    specs: tuple[EnvSpec | None, ...]  # one per release; None: nothing here can run it
    # Why, for each release with no spec (None where it has one, or where the plan does not say).
    unplaced: tuple[Unplaced | None, ...] = ()
    # (good, bad) as resolved, when --good names a newer release than --bad: the ends are sorted.
    reversed_ends: tuple[str, str] | None = None

    def why_unplaced(self, index: int) -> Unplaced | None:
        return self.unplaced[index] if index < len(self.unplaced) else None


def plan(
    request: BisectRequest, catalogue: Catalogue, environment: Callable[[str], Environments[Any]]
) -> Plan:
    """The releases between the request's ends (default: the oldest and newest that run here),
    each placed on the first backend of the request that fits it."""

    def spec_for(release: Release) -> EnvSpec | Unplaced:
        return placement(request, release, environment)

    releases = catalogue.releases(pre=request.pre)
    if request.keras is KerasVariant.LEGACY and not (request.good or request.bad):
        releases = [r for r in releases if legacy_keras_applies(r.version)] or releases
    specs = {r.version: spec_for(r) for r in releases}
    runnable = [r for r in releases if isinstance(specs[r.version], EnvSpec)]
    if request.good:
        start = catalogue.resolve(request.good, pre=True)
    elif runnable:
        start = runnable[0]
    else:
        raise UsageError(
            "No TF release in the catalogue can run on the Pythons this machine has.",
            "install a Python that TF supports (3.7-3.13), or use --backend docker.",
        )
    end = catalogue.resolve(request.bad, pre=True) if request.bad else runnable[-1]
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
    chosen.sort(key=lambda r: Version(r.version))
    placed = [specs[r.version] if r.version in specs else spec_for(r) for r in chosen]
    # --good and --bad are the range's two ends whatever their order: which side is good is read
    # from the runs at them (search/judge.py `terms_for`), so a newer --good is a range too.
    turned = request.good and request.bad and Version(start.version) > Version(end.version)
    return Plan(
        releases=tuple(chosen),
        specs=tuple(p if isinstance(p, EnvSpec) else None for p in placed),
        unplaced=tuple(p if isinstance(p, Unplaced) else None for p in placed),
        reversed_ends=(start.version, end.version) if turned else None,
    )
