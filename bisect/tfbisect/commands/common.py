"""What several commands share: the runner made from the options, the default --jobs, the
swarm's address, a comma-separated axis of variants and the newest bisection log."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfbisect.core import catalogue
from tfbisect.core.argv import DEFAULT_TIMEOUT, MAX_JOBS, Common, EnvOptions
from tfbisect.core.errors import ExitCode, UsageError
from tfbisect.core.progress import Progress
from tfbisect.core.spec import Backend, Flavour, KerasVariant
from tfbisect.envs import environments
from tfbisect.envs.backend_swarm import SwarmAddress, SwarmBackend, address_from
from tfbisect.runs.workflow import Runner, Settings, default_cache_dir

# The commands other than `run` exit 0 when all went well and 1 when something is to report, the
# two codes `git bisect run` reads as good and bad.
DONE = ExitCode.NOT_REPRODUCED
FAILED = ExitCode.REPRODUCED


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
    settings = Settings(
        reports_dir=args.reports,
        cache_dir=args.cache or default_cache_dir(),
        timeout=args.timeout,
        force=args.force,
        keep_containers=args.keep_containers,
        base_image=args.base_image,
        swarm=swarm_address(args),
    )
    runner = Runner(catalogue.load_snapshot(), settings, progress)
    if settings.swarm is not None:
        swarm = runner.environment(Backend.SWARM)
        assert isinstance(swarm, SwarmBackend)
        swarm.check()  # a manager or registry that does not answer stops everything here
    return runner


def jobs_for(asked: int | None, runner: Runner, choice: environments.Choice, flavour: Flavour) -> int:
    """--jobs, or by default 1; on a swarm, as many as it has ready nodes for the flavour (n-section
    with N = the cluster's capacity)."""
    if asked is not None:
        return asked
    backend = runner.environment(choice.primary)
    if isinstance(backend, SwarmBackend):
        capacity = backend.capacity(flavour)
        runner.progress.say(
            f"the swarm has {capacity} ready node(s) for {flavour.value} cells: --jobs {capacity or 1}"
        )
        return max(1, min(capacity, MAX_JOBS))
    return 1


def swarm_address(args: RunnerArgs) -> SwarmAddress | None:
    """Where the swarm is, for --backend swarm (checked before any work starts)."""
    if args.backend != Backend.SWARM.value:
        return None
    return address_from(args.docker_host, args.registry, args.registry_pull)


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
