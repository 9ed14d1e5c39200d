"""The backends there are, by name: the one place outside a backend's own module that knows it.

A backend is a module (backend_*.py) with a class implementing `environments.Environments` and a
`REGISTRATION` (environments.Registration), plus one line in `BUILT_IN` below.  Everything above
envs/ asks this module: which names `--backend` offers (`names`), what `--backend auto` resolves
to (`choose`), whether a backend can work here (`check`), making one from the parsed options
(`make`), how many runs it takes at once (`capacity`), where its traced runs go (`traced_spec`)
and stopping its builds (`cancel_all`).  A test (or a plug-in) adds one with `register`.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from typing import Any

from tfbisect.core.errors import TfbisectError, UsageError
from tfbisect.core.progress import Progress
from tfbisect.core.spec import EnvSpec, Flavour
from tfbisect.envs import backend_docker, backend_given, backend_swarm, backend_venv
from tfbisect.envs.environments import NO_OPTIONS, Context, Environments, Options, Registration

AUTO = "auto"  # `--backend auto`: the auto-ranked backends whose check passes, in rank order
# A one-version command's backend unless --backend says otherwise (`run --interpreter` stands in
# for it: the given environment replaces the venv tfbisect would have made).
SINGLE = backend_venv.REGISTRATION.name

# The built-in backends, in the order `--backend` lists them: one line each.
BUILT_IN: tuple[Registration[Any, Any], ...] = (
    backend_venv.REGISTRATION,
    backend_docker.REGISTRATION,
    backend_swarm.REGISTRATION,
    backend_given.REGISTRATION,
)

_registered: dict[str, Registration[Any, Any]] = {r.name: r for r in BUILT_IN}
_lock = threading.Lock()


def register(registration: Registration[Any, Any]) -> None:
    """Add a backend; its name must be new (a stored record's key names it)."""
    with _lock:
        if registration.name in _registered or registration.name == AUTO:
            raise ValueError(f"a backend named {registration.name!r} is already registered")
        _registered[registration.name] = registration


def unregister(name: str) -> None:
    """Remove a backend `register` added (a built-in one stays)."""
    with _lock:
        if any(r.name == name for r in BUILT_IN):
            raise ValueError(f"the built-in backend {name!r} cannot be unregistered")
        _registered.pop(name, None)


def names(*, selectable: bool = True) -> tuple[str, ...]:
    """The registered names, in registration order; by default those `--backend` offers."""
    with _lock:
        return tuple(n for n, r in _registered.items() if r.selectable or not selectable)


def registration(name: str) -> Registration[Any, Any]:
    with _lock:
        found = _registered.get(str(name))
    if found is None:
        raise UsageError(
            f"There is no backend named {str(name)[:60]!r}.",
            f"use --backend with one of {', '.join(names())} or {AUTO}.",
        )
    return found


def configure(name: str, options: Options = NO_OPTIONS) -> object:
    """The backend's own frozen config, from the parsed options."""
    return registration(name).configure(options)


def make(name: str, options: Options, context: Context) -> Environments[Any]:
    """A new backend of that name, configured from the parsed options."""
    found = registration(name)
    made: Environments[Any] = found.make(found.configure(options), context)
    return made


def check(name: str, options: Options, progress: Progress) -> None:
    """Whether that backend can work here, before any work starts (raises what to do if not)."""
    found = registration(name)
    found.check(found.configure(options), progress)


@dataclass(frozen=True)
class Choice:
    """What `--backend` resolved to: the backends to try, in order, and how to say so."""

    order: tuple[str, ...]

    @property
    def primary(self) -> str:
        return self.order[0]

    @property
    def fallback(self) -> bool:
        return len(self.order) > 1

    def describe(self) -> str:
        return registration(self.primary).describe(self.fallback)


def choose(asked: str, progress: Progress, options: Options = NO_OPTIONS) -> Choice:
    """`auto`: the auto-ranked backends whose check passes (containers when an engine answers,
    with venvs for what no base fits; else venvs).  A named backend is taken as it is: `check`
    it (make_runner does) before any work starts."""
    if asked != AUTO:
        return Choice((registration(asked).name,))
    with _lock:
        ranked = sorted(
            (r for r in _registered.values() if r.auto_rank is not None), key=lambda r: r.auto_rank or 0
        )
    order: list[str] = []
    for index, candidate in enumerate(ranked):
        try:
            candidate.check(candidate.configure(options), progress)
        except TfbisectError as exc:
            instead = next((r.short for r in ranked[index + 1 :]), "nothing")
            progress.say(f"{candidate.unavailable} ({exc.what.splitlines()[0]}): running in {instead}")
            continue
        order.append(candidate.name)
    return Choice(tuple(order))


def ranked_after(name: str) -> tuple[str, ...]:
    """The backends `--backend auto` tries after this one (a fallback for releases it cannot place)."""
    rank = registration(name).auto_rank
    with _lock:
        later = [
            r
            for r in _registered.values()
            if r.auto_rank is not None and rank is not None and r.auto_rank > rank
        ]
    return tuple(r.name for r in sorted(later, key=lambda r: r.auto_rank or 0))


def capacity(backend: Environments[Any], flavour: Flavour) -> int | None:
    """How many runs the backend takes at once for that flavour (a swarm's ready nodes), or None
    when it has no capacity of its own (one at a time)."""
    measure = registration(backend.name).capacity
    return None if measure is None else measure(backend, flavour)


def traced_spec(spec: EnvSpec) -> EnvSpec:
    """The spec a traced (or proof) run of this cell runs as: a swarm's cells on the local engine,
    which built their images."""
    other = registration(spec.backend).traced_by
    return spec if other is None else replace(spec, backend=other)


def cancel_all() -> None:
    """Stop every backend's builds in progress (a search is over, or a stop signal came)."""
    with _lock:
        cancels = [r.cancel for r in _registered.values() if r.cancel is not None]
    for cancel in cancels:
        cancel()
