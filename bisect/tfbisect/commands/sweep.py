"""`tfbisect sweep`: the whole matrix of versions, bases and Keras variants."""

from __future__ import annotations

from dataclasses import dataclass

from tfbisect.commands.common import DONE, allowed_backends, axis, jobs_for, make_runner, runner_args
from tfbisect.core import scenario
from tfbisect.core.argv import SweepOptions
from tfbisect.core.errors import ExitCode
from tfbisect.core.progress import Progress
from tfbisect.core.spec import Flavour, KerasVariant
from tfbisect.core.timing import SPENT, Phase
from tfbisect.envs import registry
from tfbisect.search import sweep as sweeping

__all__ = ["SweepOptions", "SweepResult", "sweep"]


@dataclass(frozen=True)
class SweepResult:
    cells: tuple[sweeping.Cell, ...]
    probe: str | None  # the probe whose outcome each cell shows
    exit_code: ExitCode = DONE
    spent: dict[Phase, float] | None = None  # seconds per phase (summed over parallel work)


def sweep(options: SweepOptions, progress: Progress) -> SweepResult:
    before = SPENT.totals()
    env = options.env
    runner = make_runner(runner_args(options.common, env, force=options.force), progress)
    chosen = scenario.chosen(env.scenario, env.script, env.bad_if_raises)
    releases = sweeping.parse_range(
        options.tf, runner.catalogue, all_patches=options.all_patches, pre=env.pre
    )
    choice = registry.choose(env.backend, progress, runner.settings.options)
    choice = registry.Choice(
        allowed_backends(chosen, choice.order, trusted=env.trust_script, progress=progress)
    )
    cells = sweeping.run_sweep(
        runner,
        chosen,
        releases,
        axis(env.base, Flavour, "--base"),
        axis(env.keras, KerasVariant, "--keras"),
        choice.order,
        jobs_for(options.jobs, runner, choice, Flavour.CPU),
        options.python,
    )
    return SweepResult(tuple(cells), options.probe, spent=SPENT.since(before))
