"""`tfbisect gpu-check`: one CUDA image per CUDA set, built (TF's loader check is a build step),
then the scenario run in it, on the GPU where the engine has the NVIDIA runtime."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tfbisect.commands.common import DONE, FAILED, RunnerArgs, make_runner
from tfbisect.core import cudasets, scenario
from tfbisect.core.argv import DEFAULT_TIMEOUT, Common
from tfbisect.core.errors import ExitCode
from tfbisect.core.progress import Progress
from tfbisect.core.record import RunRecord
from tfbisect.core.spec import Flavour
from tfbisect.report import findings

# gpu-check builds CUDA images and runs them: on the Docker backend, whatever --backend says.
GPU_CHECK_BACKEND = "docker"


@dataclass(frozen=True)
class GpuCheckOptions:
    tf: tuple[str, ...] = ()  # empty: the newest release of every CUDA set
    python: str | None = None
    require_gpu: bool = False
    base_image: str | None = None
    scenario: str = scenario.DEFAULT
    timeout: float = DEFAULT_TIMEOUT
    common: Common = field(default_factory=Common)


@dataclass(frozen=True)
class GpuChecked:
    record: RunRecord
    passed: bool


@dataclass(frozen=True)
class GpuCheckResult:
    checked: tuple[GpuChecked, ...]
    exit_code: ExitCode

    @property
    def passed(self) -> int:
        return sum(one.passed for one in self.checked)


def gpu_check(
    options: GpuCheckOptions, progress: Progress, done: Callable[[GpuChecked], None]
) -> GpuCheckResult:
    """One check per CUDA image; `done` hears of each as it ends (an image build takes minutes)."""
    # force: a result stored on a machine without a GPU says nothing here
    args = RunnerArgs(
        options.common.reports,
        options.common.cache,
        timeout=options.timeout,
        force=True,
        base_image=options.base_image,
    )
    runner = make_runner(args, progress)
    chosen = scenario.find(options.scenario)
    versions = options.tf or cudasets.one_per_set([r.version for r in runner.catalogue.releases()])
    checked = []
    for version in versions:
        spec = runner.spec_for(
            version, python=options.python, flavour=Flavour.CUDA, backends=(GPU_CHECK_BACKEND,)
        )
        record = runner.run(spec, chosen).record
        passed = findings.loader_check_passed(record) and not (
            options.require_gpu and not str(record.ran_on).startswith("GPU")
        )
        one = GpuChecked(record, passed)
        checked.append(one)
        done(one)
    return GpuCheckResult(tuple(checked), DONE if all(c.passed for c in checked) else FAILED)
