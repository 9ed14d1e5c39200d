"""`tfbisect run`: the scenario on one TF version, in an environment tfbisect builds or one given
(a tox env); it exits as `git bisect run` reads it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tfbisect.commands.common import DONE, allowed_backends, make_runner, runner_args
from tfbisect.core import scenario
from tfbisect.core.argv import RunOptions
from tfbisect.core.errors import ExitCode, UsageError
from tfbisect.core.outcome import Outcome
from tfbisect.core.progress import Progress
from tfbisect.core.record import RunRecord
from tfbisect.core.spec import Flavour, KerasVariant
from tfbisect.envs import registry
from tfbisect.runs import given_interpreter

__all__ = ["RUN_EXIT", "RunOptions", "RunResult", "run"]

# `tfbisect run` speaks git bisect run's language, so it can drive `git bisect run` itself.
RUN_EXIT = {outcome: ExitCode[outcome.name] for outcome in Outcome}


@dataclass(frozen=True)
class RunResult:
    record: RunRecord
    path: Path  # where the result is stored
    exit_code: ExitCode


def run(options: RunOptions, progress: Progress) -> RunResult:
    env = options.env
    if options.via and options.interpreter is None:
        raise UsageError(
            "--via tox marks a run in an environment tox made, and none was given.",
            "add --interpreter {envpython} (as tox.ini's tf envs do), or drop --via.",
        )
    if options.interpreter is not None and env.backend != registry.SINGLE:
        raise UsageError(
            f"--interpreter runs in a given environment; --backend {env.backend} builds its own.",
            "drop one of the two.",
        )
    runner = make_runner(runner_args(options.common, env, force=options.force), progress)
    chosen = scenario.chosen(env.scenario, env.script, env.bad_if_raises)
    asked = ("given",) if options.interpreter is not None else None
    backends = asked or registry.choose(env.backend, progress, runner.settings.options).order
    backends = allowed_backends(chosen, backends, trusted=env.trust_script, progress=progress)
    if options.interpreter is not None:
        # An environment made elsewhere (tox): checked to hold the line's Python and this TF.
        spec = given_interpreter.spec_for(
            runner.catalogue,
            options.tf,
            options.interpreter,
            pinned=options.python,
            flavour=Flavour(env.base),
            keras=KerasVariant(env.keras),
            pre=env.pre,
        )
        record = runner.run_given(
            spec, chosen, options.interpreter, given_interpreter.tags(options.via, options.interpreter)
        )
    else:
        spec = runner.spec_for(
            options.tf,
            python=options.python,
            flavour=Flavour(env.base),
            keras=KerasVariant(env.keras),
            backends=backends,
            pre=env.pre,
        )
        record = runner.run(spec, chosen).record
    path = runner.store.path_for(chosen.name, chosen.sha256, spec)
    if options.via == "tox" and record.outcome.decisive:
        # for tox, either verdict is an answer; a failure, a timeout or a skip is not
        return RunResult(record, path, DONE)
    return RunResult(record, path, RUN_EXIT[record.outcome])
