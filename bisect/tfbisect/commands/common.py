"""What several commands share: the runner made from the options, the default --jobs, a
comma-separated axis of variants, the newest bisection log, and where a stranger's code may run."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from tfbisect.core import catalogue, issuetext
from tfbisect.core.argv import DEFAULT_TIMEOUT, MAX_JOBS, Common, EnvOptions
from tfbisect.core.errors import ExitCode, UsageError
from tfbisect.core.progress import Progress
from tfbisect.core.scenario import Scenario
from tfbisect.core.spec import Flavour, KerasVariant
from tfbisect.envs import registry
from tfbisect.envs.cache import default_cache_dir
from tfbisect.runs.runner import Runner, Settings

# The commands other than `run` exit 0 when all went well and 1 when something is to report, the
# two codes `git bisect run` reads as good and bad.
DONE = ExitCode.NOT_REPRODUCED
FAILED = ExitCode.REPRODUCED
# The backends that run a scenario in a container (no network, non-root, read-only root); the
# others run it on this host, as the user.
CONTAINED = frozenset({"docker", "swarm"})


@dataclass(frozen=True)
class RunnerArgs:
    """What a runner is made from: the options of the command that needs one."""

    reports: Path
    cache: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    force: bool = False
    keep_containers: bool = False
    base_image: str | None = None
    backend: str | None = None
    docker_host: str | None = None
    registry: str | None = None
    registry_pull: str | None = None


def runner_args(common: Common, env: EnvOptions, *, force: bool) -> RunnerArgs:
    """The runner's options of a command that takes the environment options."""
    return RunnerArgs(
        reports=common.reports,
        cache=common.cache,
        timeout=env.timeout,
        force=force,
        keep_containers=env.keep_containers,
        base_image=env.base_image,
        backend=env.backend,
        docker_host=env.docker_host,
        registry=env.registry,
        registry_pull=env.registry_pull,
    )


def make_runner(args: RunnerArgs, progress: Progress) -> Runner:
    """The runner, its backends configured by the registry from the options; a named backend is
    checked here (an engine, a swarm manager and its registry that do not answer stop everything)."""
    backend_options = {f.name: getattr(args, f.name) for f in fields(args)}
    settings = Settings(
        reports_dir=args.reports,
        cache_dir=args.cache or default_cache_dir(),
        timeout=args.timeout,
        force=args.force,
        options=backend_options,
    )
    runner = Runner(catalogue.load_snapshot(), settings, progress)
    if args.backend is not None and args.backend != registry.AUTO:
        registry.check(args.backend, backend_options, progress)
    return runner


def jobs_for(asked: int | None, runner: Runner, choice: registry.Choice, flavour: Flavour) -> int:
    """--jobs, or by default 1; on a backend with a capacity (a swarm: its ready nodes for the
    flavour), that many (n-section with N = the cluster's capacity)."""
    if asked is not None:
        return asked
    capacity = registry.capacity(runner.environment(choice.primary), flavour)
    return 1 if capacity is None else max(1, min(capacity, MAX_JOBS))


def axis(text: str, kind: type[Flavour] | type[KerasVariant], flag: str) -> list[Any]:
    values = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        try:
            values.append(kind(part))
        except ValueError:
            allowed = ", ".join(m.value for m in kind)
            raise UsageError(
                f"{flag} {part!r} is not one of {allowed}.", f"use {flag} with {allowed}."
            ) from None
    return values


def newest(directory: Path) -> Path:
    found = sorted(directory.glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not found:
        raise UsageError(f"There is no bisection log under {directory}.", "run `tfbisect bisect` first.")
    return found[-1]


def allowed_backends(
    chosen: Scenario, order: tuple[str, ...], *, trusted: bool, progress: Progress
) -> tuple[str, ...]:
    """The backends the scenario may run in: a script marked as a stranger's code (taken from an
    issue) runs only in containers unless trusted (--trust-script); with --backend auto, the
    releases no container fits are then skipped rather than run here.  Whatever runs on this
    host, the user is told so once."""
    on_host = [name for name in order if name not in CONTAINED]
    if on_host and not trusted and issuetext.is_marked(chosen.path.read_text("utf-8", "replace")):
        contained = tuple(name for name in order if name in CONTAINED)
        if not contained:
            raise UsageError(
                f"{chosen.path.name} is marked as code taken from an issue (a stranger's code), and "
                f"--backend {order[0]} would run it on this host, as you, with your files and network.",
                "run it in containers (--backend docker or swarm), or read it and remove its "
                f"`{issuetext.MARK_PREFIX.strip()}` line, or pass --trust-script.",
            )
        progress.say(f"{chosen.path.name} is a stranger's code: releases no container fits are skipped")
        return contained
    if on_host and (chosen.script or issuetext.is_marked(chosen.path.read_text("utf-8", "replace"))):
        progress.say(
            f"note: the {on_host[0]} backend runs {chosen.path.name} on this host, as you, with your "
            "files and network (--backend docker runs it in a container)"
        )
    return order
