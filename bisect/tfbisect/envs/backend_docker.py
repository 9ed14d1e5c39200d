"""The Docker backend: images from the top-level Dockerfile, the scenario run in a locked-down container.

Images are named `tfbisect:tf<version>-py<python>-<flavour>-<hash>` and labelled with the hash
of everything that went into them (Dockerfile, base image id, lock, flavour), so a current
image is reused and a stale one never is.

A CUDA image is built on an NVIDIA image, `tfbisect-nvidia:<set>-py<python>-<hash>`: the CUDA
set's wheels in one layer of several GB.  Every TF version whose NVIDIA pins are the same set
(TF 2.5-2.13 all use one, see core/cudasets.py; TF 2.14+ patch releases mostly pin the same)
sits on the same NVIDIA image, so the set is stored once.  Each CUDA image build ends with
TensorFlow's own loader check (data/cuda_check.py); the image keeps what it found, and every
run's record carries it.

What an image is (tag, hash, stage, build arguments, labels, layers, the NVIDIA image under a
CUDA one) is `plan_image`, a pure function of its inputs; `DockerBackend.ensure_image` reuses or
builds what it plans.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tfbisect import __version__
from tfbisect.core import interrupt, jsonread, priority
from tfbisect.core.catalogue import Release
from tfbisect.core.cudasets import CudaSource, cuda_plan
from tfbisect.core.errors import DockerError, EnvironmentBuildError, LockError, NoInterpreterError
from tfbisect.core.fsio import write_text_atomic
from tfbisect.core.packagedata import data_file
from tfbisect.core.progress import Progress
from tfbisect.core.scenario import HARNESS, Scenario, harness_path
from tfbisect.core.spec import EnvSpec, Flavour, has_and_cuda
from tfbisect.core.timing import SPENT, Phase
from tfbisect.core.versions import minor_line, python_sort_key
from tfbisect.envs import cache, locks
from tfbisect.envs.bases import SUITES, Base, BaseImages
from tfbisect.envs.docker_builds import raise_shares, shares_ahead
from tfbisect.envs.docker_containers import DEADLINE_LABEL, KEEP_LABEL, SITE_MOUNT
from tfbisect.envs.docker_engine import BuildRequest, Engine, cancel_all, connect, environment_names
from tfbisect.envs.environments import (
    TRACE_NAME,
    Context,
    Ended,
    Launch,
    Options,
    Registration,
    Traced,
    option,
)
from tfbisect.envs.locks import Lock, LockSpec
from tfbisect.envs.wheelhouse import Pin, Wheelhouse, pins, requirement_text, serve
from tfbisect.platform.process import Finished

DOCKERFILE = Path(__file__).resolve().parents[3] / "Dockerfile"
CUDA_CHECK = "cuda_check.py"  # package data, copied into the build context of CUDA images
INSTALLER = "install_wheels.py"  # package data, copied into every image (installs from the wheel cache)
CUDA_CHECK_PATH = "/opt/tfbisect/cuda-check.json"  # what the check found, kept in the image
CUDA_CHECK_LIMIT = 256 * 1024
# The CUDA each line's wheels were built for (tf.sysconfig.get_build_info()); the CUDA image
# build fails when TF says otherwise.
CUDA_EXPECTED = {
    **{f"2.{minor}": "11.2" for minor in range(5, 12)},
    "2.12": "11.8",
    "2.13": "11.8",
    "2.14": "11.8",
    "2.15": "12.2",
    "2.16": "12.3",
    "2.17": "12.3",
    "2.18": "12.5",
    "2.19": "12.5",
    "2.20": "12.5",
    "2.21": "12.5",  # seen: the 2.21.0 wheel reports 12.5.1 / cuDNN 9
}
USER = "10001:10001"
MEMORY = os.environ.get("TFBISECT_MEMORY", "8g")
BUILD_TIMEOUT = 3600.0
LIMITS = ["--memory", MEMORY, "--pids-limit", "2048"]
DOCKER_FAILED = 125  # what `docker run` exits with when the container cannot start
# ... and when its command cannot be run (126) or found (127): a site volume gone empty.
UNSTARTED = (DOCKER_FAILED, 126, 127)
SITE_PYTHON = f"{SITE_MOUNT}/bin/python"  # a site volume's run names it: no other python may stand in
# Every container runs locked down: no network, an unprivileged user, a read-only root, limits.
# `--init`: signals and orphans inside behave as on the host; deaths by signal are 128+N.
RUN_OPTIONS = [
    *("--init", "--network", "none", "--user", USER, "--read-only"),
    *("--tmpfs", "/tmp", "--tmpfs", "/home/tfbisect", *LIMITS),
]
TRACER_PATH = "/opt/tfbisect-trace/probe_tracer.py"  # where a traced run mounts the tracer (read-only)
# Where a plain script's harness is mounted (read-only), apart from /scenario: a script may be
# named like it.
HARNESS_PATH = f"/opt/tfbisect-script/{HARNESS}"


@dataclass(frozen=True)
class Image:
    tag: str
    image_id: str
    base: Base
    flavour: Flavour
    built: bool  # False when a current image was reused
    nvidia: str | None = None  # the NVIDIA image a CUDA image sits on
    # A CPU release on the local engine: the runtime image (the Dockerfile's `base` stage) with
    # this site volume, which holds the release's packages, mounted read-only (envs/docker_sites.py).
    volume: str | None = None


class DockerBackend:
    """`Environments` as images from ./Dockerfile and locked-down containers (see environments.py).

    The engine is connected on first use, under a lock (rounds run in threads): placing
    releases (`python_for`) needs no engine, so a bisection contacts none before its first run."""

    name = "docker"

    def __init__(
        self,
        cache_dir: Path,
        progress: Progress,
        *,
        keep: bool = False,
        user_base: str | None = None,
        engine: Engine | None = None,
        host: str | None = None,  # the engine's address (default: DOCKER_HOST's)
        timeout: float | None = None,
        sites: bool = True,
    ) -> None:
        self.progress = progress
        self.host = host
        self.cache_dir = cache_dir
        # The machine's wheel cache, shared with the venvs (one download path, one file per wheel).
        self.wheels = Wheelhouse(cache.wheel_cache_dir(), progress)
        self.keep = keep
        self.user_base = user_base
        self._user_python: str | None = None
        self._engine = engine
        self._bases: BaseImages | None = None
        self._connect_lock = threading.Lock()
        self._checks: dict[str, dict[str, object]] = {}
        # The runner's --timeout: each container ends by it plus a grace, with or without the driver.
        self.timeout = timeout
        self.in_use: set[str] = set()  # cache entries this process uses: the budget keeps them
        # CPU releases as site volumes on a runtime image (envs/docker_sites.py), not images; the
        # swarm's builder (images it pushes) turns this off.
        self.sites = sites
        self.sites_ready: set[str] = set()  # site volumes seen complete by this process

    @property
    def engine(self) -> Engine:
        with self._connect_lock:
            if self._engine is None:
                self._engine = connect(self.progress, host=self.host)
                # What an earlier, killed tfbisect left: containers past their deadline, and the
                # ended step containers of its builds.
                swept = self._engine.sweep_leftovers()
                if swept:
                    self.progress.say(f"removed {swept} container(s) an earlier tfbisect left behind")
            return self._engine

    @property
    def bases(self) -> BaseImages:
        engine = self.engine
        with self._connect_lock:
            if self._bases is None:
                self._bases = BaseImages(engine, self.cache_dir / "bases")
            return self._bases

    # -- which Python, which lock ------------------------------------------------------
    def python_for(self, release: Release, pinned: str | None) -> str:
        wanted = [p for p in release.pythons if p.startswith("3.")]
        offered = [self._base_python()] if self.user_base else list(SUITES)
        usable = sorted((p for p in wanted if p in offered), key=python_sort_key)
        if pinned:
            if pinned in usable:
                return pinned
            usable = []
        if not usable:
            raise NoInterpreterError(
                f"No base image fits TF {release.version}: it has wheels for Python {', '.join(wanted)}, "
                f"and the bases here offer {', '.join(offered)}"
                + (f" (Python {pinned} was asked for)" if pinned else "")
                + ".",
                "pin --python to one the release supports, name a base with --base-image (e.g. python:3.8-slim "
                "loaded from a registry mirror), or use --backend venv.",
            )
        return usable[-1]

    def _base_python(self) -> str:
        if self._user_python is None:
            assert self.user_base is not None
            self._user_python = self.bases.get("", self.user_base).python
        return self._user_python

    def lock_spec(self, spec: EnvSpec) -> LockSpec:
        """TF 2.14+ installs from its `tensorflow[and-cuda]` lock for both flavours (so CPU and
        CUDA images hold the same packages, the NVIDIA ones aside); older lines from the lock of
        their flavour (a CUDA image needs TF's GPU-capable wheel, not `tensorflow-cpu`)."""
        refuse_cuda(spec, user_base=bool(self.user_base))
        flavour = Flavour.CUDA if has_and_cuda(spec.tf_version) else spec.flavour
        return spec.lock_spec(flavour)

    # -- images ------------------------------------------------------------------------
    def prepare(self, spec: EnvSpec, lock: Lock, log_dir: Path) -> Image:
        """A CPU release as a site volume (envs/docker_sites.py), else its image."""
        if spec.flavour is Flavour.CPU and self.uses_sites:
            from tfbisect.envs.docker_sites import ensure_site  # it builds on this module

            return ensure_site(self, spec, lock, log_dir)
        return self.ensure_image(spec, lock, log_dir)

    @property
    def uses_sites(self) -> bool:
        """Whether CPU releases go into site volumes: only on an engine of this machine (its
        filling mounts the wheel cache from here), and not for the swarm's builder."""
        return self.sites and self.engine.host.startswith("unix://")

    def ensure_image(self, spec: EnvSpec, lock: Lock, log_dir: Path) -> Image:
        base = self.bases.get(spec.python, self.user_base)
        plan = plan_image(
            spec,
            lock,
            lock.path.read_bytes(),
            dockerfile_bytes(),
            base,
            nvidia_lock=nvidia_lock_bytes(spec),
            check=cuda_check_bytes(),
        )
        return self.ensure_plan(plan, base, log_dir)

    def ensure_plan(self, plan: ImagePlan, base: Base, log_dir: Path) -> Image:
        """Reuse the current image (the engine tags one only when its last step, for CUDA TF's loader
        check, succeeded), else build it; after a failed build a bad wheel is evicted and the build retried once."""
        spec = plan.spec
        nvidia = plan.below.tag if plan.below else None
        self.in_use.add(f"image:{plan.tag}")
        if image_current(self.engine, plan):
            cache.touch(cache.image_mark(self.cache_dir, plan.tag, "prepared"))
            return Image(plan.tag, self.engine.image_id(plan.tag) or "", base, spec.flavour, False, nvidia)
        if plan.below is not None:
            # The NVIDIA image first: the CUDA one is built on top of its layers.
            self.ensure_plan(plan.below, base, log_dir)
        tail = plan.tag.split(":")[1]
        stem = {"nvidia": f"nvidia-{tail}", "base": tail}.get(plan.target, spec.key)
        log_path = log_dir / f"{stem}.build.log"
        what = {"nvidia": "the NVIDIA image", "base": "the runtime image"}.get(plan.target, "the image")
        finished = build_image(self, plan, log_path, what)
        damaged = finished.exit_code != 0 and not finished.timed_out and not interrupt.stopping()
        if damaged and self.wheels.recheck(list(plan.fetch), spec.python):
            self.progress.say(f"[{spec.label}] a cached wheel was damaged: fetching it again and rebuilding")
            finished = build_image(self, plan, log_path, what)
        if finished.exit_code != 0:
            raise build_failure(spec, what, finished, log_path)
        cache.touch(cache.image_mark(self.cache_dir, plan.tag, "prepared"))
        return Image(plan.tag, self.engine.image_id(plan.tag) or "", base, spec.flavour, True, nvidia)

    def cuda_check(self, image: Image) -> dict[str, object] | None:
        """What TF's loader check found when `image` was built (None for a CPU image)."""
        if image.flavour is not Flavour.CUDA:
            return None
        with self._connect_lock:
            known = self._checks.get(image.image_id)
        if known is None:
            found = self.engine.read_file(image.tag, CUDA_CHECK_PATH, CUDA_CHECK_LIMIT)
            problem = (
                f"the image has no readable {CUDA_CHECK_PATH} of at most {CUDA_CHECK_LIMIT} bytes: "
                f"remove it (docker rmi {image.tag}) to rebuild it"
            )
            known = read_cuda_check(found.decode("utf-8", "replace")) if found else {"problems": [problem]}
            with self._connect_lock:
                self._checks[image.image_id] = known
        return known

    # -- runs --------------------------------------------------------------------------
    @contextmanager
    def launch(
        self, spec: EnvSpec, scenario: Scenario, prepared: Image, outdir: Path, traced: Traced | None = None
    ) -> Iterator[Launch]:
        """The `docker run` argv for one run, inside a uniquely named container that is always removed.

        A traced run mounts the tracer read-only and runs the scenario under it; the trace is
        written next to the result, in /out."""
        image = prepared
        scenario_path = f"/scenario/{scenario.path.name}"
        probes = traced.scenario_arguments() if traced is not None else []
        run = [*scenario.arguments(scenario_path, HARNESS_PATH), "--output", "/out/result.json", *probes]
        mounts = ["--volume", f"{scenario.path}:{scenario_path}:ro"]
        if image.volume is not None:
            # Read-only, and never copied into: a volume gone since `prepare` is made empty by
            # the engine, so the venv's python is missing and the container cannot start (125-127:
            # no verdict), instead of a run without TensorFlow.
            mounts += ["--mount", f"type=volume,src={image.volume},dst={SITE_MOUNT},readonly,volume-nocopy"]
        if scenario.script:  # the harness that runs a plain script, read-only like the script
            mounts += ["--volume", f"{harness_path()}:{HARNESS_PATH}:ro"]
        if traced is not None and traced.tracer is not None:
            mounts += ["--volume", f"{traced.tracer}:{TRACER_PATH}:ro"]
            run = [TRACER_PATH, *traced.tracer_arguments(f"/out/{TRACE_NAME}"), *run]
        # The unprivileged user in the container writes the result into a folder open to it; that
        # folder sits in the run's own 0700 folder, so no other local user can reach or forge it.
        results = outdir / "out"
        results.mkdir()
        results.chmod(0o777)
        gpu = spec.flavour is Flavour.CUDA and self.engine.has_nvidia_runtime()
        cache.touch(cache.image_mark(self.cache_dir, image.volume or image.tag, "used"))
        with self.engine.container_name(spec.key.replace(".", "_"), keep=self.keep) as name:
            shares, forget = ahead_shares(self.engine, name)
            argv = self.engine.command(
                "run",
                "--name",
                name,
                *RUN_OPTIONS,
                *shares,
                *deadline_options(self.timeout, keep=self.keep),
                *(["--gpus", "all"] if gpu else []),
                *environment_names(spec.env_vars()),
                *mounts,
                "--volume",
                f"{results}:/out",
                image.tag,
                *watched(self.timeout, SITE_PYTHON if image.volume else "python"),
                *run,
            )
            if spec.flavour is Flavour.CUDA and not gpu:
                self.progress.say(
                    f"[{spec.label}] no NVIDIA runtime on this engine: the CUDA image runs on CPU"
                )
            try:
                yield Launch(
                    argv=argv,
                    env=self.engine.run_env(os.environ),
                    extra=run_extra(self.engine, image, spec, gpu, name, self.cuda_check(image)),
                    shown=reproducible(argv, name, results),
                    results=results,
                    trace=results / TRACE_NAME if traced is not None and traced.tracer is not None else None,
                )
            finally:
                forget()

    def source_places(self, spec: EnvSpec, prepared: Image, lock: Lock) -> list[Path]:
        """The wheels the image installed, from the wheel cache (nothing is fetched: its build did)."""
        wanted = [pin for pin in pins(lock.path.read_text(encoding="utf-8")) if not pin.is_nvidia]
        return self.wheels.cached(wanted, spec.python)

    def ended(self, launch: Launch, finished: Finished, has_result: bool) -> Ended:
        return container_ended(self, launch, finished, has_result)


def container_ended(backend: DockerBackend, launch: Launch, finished: Finished, has_result: bool) -> Ended:
    """The container's end in the venv backend's terms: OOM kills named, 128+N as -N."""
    if finished.timed_out:
        return Ended(exit_code=None)
    code = finished.exit_code
    state = backend.engine.container_state(str(launch.extra["container"]))
    started = str(state.get("StartedAt") or "")
    last = (finished.log_tail.splitlines() or ["?"])[-1]
    if code in UNSTARTED and not has_result and (not started or started.startswith("0001-")):
        # `docker run` itself failed (image gone, engine error): the container never started,
        # so this 125 is not the scenario's own "cannot test here".
        return Ended(exit_code=code, unstarted=f"The container could not start: {last}")
    volume = str(launch.extra.get("site_volume") or "")
    if (
        volume
        and code == 127
        and not has_result
        and SITE_PYTHON in last
        and site_gone(backend, volume, launch)
    ):
        return Ended(
            exit_code=code, unstarted=f"The site volume {volume} was gone when the run began: {last}"
        )
    if code is not None and 128 < code < 128 + signal.NSIG:
        code = -(code - 128)  # its init reports a child killed by signal N as 128+N
    return Ended(exit_code=code, memory_limit=MEMORY if state.get("OOMKilled") else None)


def site_gone(backend: DockerBackend, volume: str, launch: Launch) -> bool:
    """Whether a run whose init could not find the volume's python had its site volume gone
    (pruned, removed by hand): the engine then made an empty, unlabelled one in its place, which
    is removed here with the run's container (which holds it), and the next preparation fills
    the release again.  An engine that cannot tell leaves the run's own end as it is."""
    try:
        if backend.engine.volume_labels(volume):
            return False
        backend.sites_ready.discard(volume)
        backend.engine.remove_container(str(launch.extra["container"]))
        backend.engine.remove_volume(volume)
    except DockerError:
        return False
    return True


def ahead_shares(engine: Engine, name: str) -> tuple[list[str], Callable[[], None]]:
    """A run ahead of its round (from a prefetch's niced thread, core/priority.py) gets the
    fewest CPU shares, and the default again once the round comes to wait for it; a run of the
    round's own, the default.  The options, and what forgets the hurry."""
    urgency, shares = priority.current(), shares_ahead()
    if urgency is None or shares is None:
        return [], lambda: None
    return ["--cpu-shares", str(shares)], urgency.on_hurry(lambda: raise_shares(engine.api, name))


def deadline_options(timeout: float | None, *, keep: bool) -> list[str]:
    """The run container's deadline as a label (see docker_containers.DEADLINE_LABEL); with
    --keep-containers also a mark that leaves it, once ended, for debugging."""
    if timeout is None:
        return []
    deadline = int(time.time() + timeout + CONTAINER_GRACE_SECONDS)
    return ["--label", f"{DEADLINE_LABEL}={deadline}", *(["--label", f"{KEEP_LABEL}=1"] if keep else [])]


def image_current(engine: Engine, plan: ImagePlan) -> bool:
    """The image is there with this plan's hash; a CUDA image also sits on its NVIDIA
    image's layers when that image is there (it may have been rebuilt since)."""
    if engine.image_labels(plan.tag).get("tfbisect.hash") != plan.content_hash:
        return False
    if plan.below is None:
        return True
    below = engine.image_layers(plan.below.tag)
    return not below or engine.image_layers(plan.tag)[: len(below)] == below


def run_extra(
    engine: Engine, image: Image, spec: EnvSpec, gpu: bool, name: str, check: dict[str, object] | None
) -> dict[str, object]:
    """What a run's record keeps about its image and container (`extra`)."""
    extra: dict[str, object] = {
        "image": image.tag,
        "image_id": image.image_id,  # the image's own ID (`docker image inspect` .Id)
        # None for an image built here and never pushed (the usual case)
        "image_repo_digest": engine.image_repo_digest(image.tag),
        "base_image": image.base.ref,
        "base_image_id": image.base.image_id,  # the base's ID, apart (older records: base_digest)
        "base_source": image.base.source,
        "flavour": spec.flavour.value,
        "gpu_visible": gpu,
        "container": name,
    }
    if image.volume is not None:
        extra["site_volume"] = image.volume  # the release's packages, mounted read-only on the image
    if check is not None:
        extra["cuda_check"] = check
    if image.nvidia:
        extra["nvidia_image"] = image.nvidia  # the CUDA set's layer, shared by its TF versions
    return extra


def refuse_cuda(spec: EnvSpec, *, user_base: bool) -> None:
    """A CUDA image for a release whose libraries no wheel carries needs --base-image."""
    if spec.flavour is not Flavour.CUDA:
        return
    plan = cuda_plan(spec.tf_version)
    if plan.source is None or (plan.source is CudaSource.BASE_IMAGE and not user_base):
        raise LockError(
            f"No CUDA image for TF {spec.tf_version} can be built here: {plan.needs}"
            + (" (and no registry serves it here)" if plan.base_image else "")
            + ".",
            f"name an image that has those libraries and Python {spec.python} with --base-image, "
            "or use --base cpu for this version.",
        )


def fetch_wheels(backend: DockerBackend, spec: EnvSpec, wanted: tuple[Pin, ...], log_path: Path) -> None:
    """The wheels of `wanted` into the machine's wheel cache (budget and free space checked
    first when any is missing), each kept from the budget while this process uses it."""
    have = backend.wheels.cached(list(wanted), spec.python)
    backend.in_use.update(f"wheel:{path}" for path in have)
    if len(have) < len(wanted):
        cache.enforce_budget(backend.cache_dir, backend.in_use, backend.progress.say, engine=backend.engine)
        needed = cache.WHEELS_ESTIMATE[spec.flavour.value]
        cache.require_free(backend.wheels.root, needed, f"the wheels of TF {spec.tf_version}")
    kept = backend.wheels.ensure(list(wanted), spec.python, log_path)
    backend.in_use.update(f"wheel:{path}" for path in kept)


def build_image(backend: DockerBackend, plan: ImagePlan, log_path: Path, what: str) -> Finished:
    """One build of the plan's image by the backend: its wheels fetched (budget and free space checked
    first), served on loopback, the engine's build."""
    spec = plan.spec
    # Only what this image's own layer installs: a CPU image never fetches NVIDIA wheels.
    fetch_wheels(backend, spec, plan.fetch, log_path)
    context = stage_context(plan, backend.cache_dir, backend.wheels)
    uv_sha = backend.wheels.stage_tool("uv", uv_path())
    with (
        serve(backend.wheels.root) as url,
        backend.progress.step(spec.label, f"building {what} {plan.tag} (log: {log_path})"),
        SPENT.measure(Phase.BUILD),
    ):
        request = plan.build_request(url, DOCKERFILE, context, uv_sha=uv_sha)
        return backend.engine.build(request, log_path, BUILD_TIMEOUT)


def uv_path() -> Path | None:
    """The host's uv binary, which image builds install with (None: they use pip)."""
    found = shutil.which(locks.uv_binary())
    return Path(found) if found else None


def build_failure(spec: EnvSpec, what: str, finished: Finished, log_path: Path) -> EnvironmentBuildError:
    how = f"did not finish in {BUILD_TIMEOUT:g}s" if finished.timed_out else "failed"
    tail = finished.log_tail.splitlines()
    failed_check = [line for line in tail if "TF loader check FAILED" in line]
    return EnvironmentBuildError(
        f"Building {what} for TF {spec.tf_version} ({spec.flavour.value}, Python {spec.python}) {how}:\n"
        + "\n".join((failed_check or tail)[-15:]),
        f"see the full build log at {log_path}; the version is recorded as skip, never good or bad.",
    )


class Staged(Protocol):
    """What `stage_context` writes for: an image's plan, or a site volume's (envs/docker_sites.py)."""

    @property
    def spec(self) -> EnvSpec: ...

    def requirement_files(self) -> dict[str, str]: ...


def stage_context(plan: Staged, cache_dir: Path, wheels: Wheelhouse) -> Path:
    """Write what a build reads: its requirement files beside the wheels (`wheels/req/`, named
    by the lock's or their pins' sha256, so builds of other cache folders write the same file),
    with the lock's hashes and those of the wheels built here, which the build requires; the CUDA
    check in the build context's folder (returned)."""
    requirements = wheels.root / "req"
    requirements.mkdir(parents=True, exist_ok=True)
    for name, text in plan.requirement_files().items():
        write_text_atomic(requirements / name, wheels.with_built_hashes(text, plan.spec.python))
    context = cache_dir / "context"
    context.mkdir(parents=True, exist_ok=True)
    write_text_atomic(context / CUDA_CHECK, cuda_check_bytes().decode())
    write_text_atomic(context / INSTALLER, installer_bytes().decode())
    return context


def installer_bytes() -> bytes:
    return Path(str(data_file(INSTALLER))).read_bytes()


def dockerfile_bytes() -> bytes:
    """What an image's build runs: the Dockerfile and the installer its steps copy in (a change
    to either changes every image's hash)."""
    return DOCKERFILE.read_bytes() + b"\0" + installer_bytes()


def nvidia_lock_bytes(spec: EnvSpec) -> bytes | None:
    """The lock of the CUDA set a CUDA image of TF 2.5-2.13 sits on (None otherwise: TF 2.14+
    locks name their own NVIDIA wheels, older lines take the libraries from --base-image)."""
    plan = cuda_plan(spec.tf_version)
    if spec.flavour is not Flavour.CUDA or plan.cuda_set is None:
        return None
    return locks.set_lock(plan.cuda_set).read_bytes()


def cuda_check_bytes() -> bytes:
    return Path(str(data_file(CUDA_CHECK))).read_bytes()


def read_cuda_check(text: str) -> dict[str, object]:
    """The image's loader-check document, made safe to store: it comes from inside an image,
    so it is bounded, parsed strictly and reduced to the fields the record shows."""
    if len(text) > CUDA_CHECK_LIMIT:
        return {"problems": [f"the image's loader check is {len(text)} bytes, over {CUDA_CHECK_LIMIT}"]}
    try:
        raw = jsonread.loads(text, constants_as_null=True)
    except (ValueError, RecursionError) as exc:
        return {"problems": [f"the image's loader check is not JSON: {str(exc)[:200]}"]}
    if not isinstance(raw, dict):
        return {"problems": ["the image's loader check is not a JSON object"]}

    def short(value: object, depth: int = 0) -> object:
        if isinstance(value, str):
            return value[:300]
        if isinstance(value, bool | int | float) or value is None:
            return value
        if depth >= 4:  # the document is three levels deep; deeper is not the check's
            return None
        if isinstance(value, list):
            return [short(v, depth + 1) for v in value[:64]]
        if isinstance(value, dict):
            return {str(k)[:64]: short(v, depth + 1) for k, v in list(value.items())[:32]}
        return None

    keep = (
        "tensorflow",
        "build_info",
        "loader",
        "status_ok",
        "libraries",
        "failed",
        "gpus",
        "driver",
        "problems",
    )
    return {key: short(raw.get(key)) for key in keep if key in raw}


@dataclass(frozen=True)
class ImagePlan:
    """Everything about one image that follows from its inputs alone (see `plan_image`)."""

    spec: EnvSpec
    tag: str  # tfbisect:tf<version>-py<python>-<flavour>-<hash[:12]>, tfbisect-nvidia:<set>-py<python>-<hash[:12]>
    content_hash: str  # of the Dockerfile, what it is built on, the lock(s), the flavour (and expected CUDA)
    target: str  # the Dockerfile stage: cpu, cuda or nvidia
    build_args: Mapping[str, str]  # all but WHEELS_URL, the address the build installs from
    labels: Mapping[str, str]
    pins: tuple[Pin, ...]  # what its own layers install
    files: Mapping[str, str]  # the requirement files those layers install from, by name (under req/)
    below: ImagePlan | None  # a CUDA image's NVIDIA image, which must exist before it is built

    @property
    def fetch(self) -> tuple[Pin, ...]:
        """The wheels this image's own layers install."""
        return self.pins

    def requirement_files(self) -> dict[str, str]:
        """The files its layers install from (`<sha>-cpu.txt`, `<sha>-nvidia.txt`), by name."""
        return dict(self.files)

    def build_request(
        self, wheels_url: str, dockerfile: Path, context: Path, *, uv_sha: str = ""
    ) -> BuildRequest:
        """The build's request; `uv_sha` names the uv binary served beside the wheels (empty: pip)."""
        args = dict(self.build_args)
        if uv_sha:
            args["UV_SHA"] = uv_sha
        return BuildRequest(
            dockerfile=dockerfile,
            context=context,
            tag=self.tag,
            target=self.target,
            build_args={"BASE": args.pop("BASE"), "WHEELS_URL": wheels_url, **args},
            labels=self.labels,
        )


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part)
        digest.update(b"\0")
    return digest.hexdigest()


# The NVIDIA image's three layers, most stable first: the build cache keys each layer on the
# ones below it, so two sets that differ in cuDNN or NCCL alone (TF 2.18 and 2.19 differ in
# NCCL only) still share the CUDA toolkit's layer.
NVIDIA_LAYERS = ("NVIDIA_TOOLKIT", "NVIDIA_CUDNN", "NVIDIA_REST")


def nvidia_layer(pin: Pin) -> str:
    name = pin.name.lower()
    if "cudnn" in name:
        return "NVIDIA_CUDNN"
    if "nccl" in name:
        return "NVIDIA_REST"
    return "NVIDIA_TOOLKIT"


def plan_nvidia(spec: EnvSpec, pins: tuple[Pin, ...], dockerfile: bytes, base: Base) -> ImagePlan:
    """The NVIDIA image for these pins on this base: the same pins give the same image, whichever
    TF version asks, so TF versions on one CUDA set share it."""
    hashed = "".join(f"{p.name}=={p.version} {' '.join(sorted(p.hashes))}\n" for p in pins)
    content = _digest(dockerfile, base.image_id.encode(), hashed.encode(), b"nvidia")
    majors = sorted({p.name.rsplit("-", 1)[-1] for p in pins if p.name.rsplit("-", 1)[-1].startswith("cu")})
    name = "-".join(majors) or "cuda"
    build_args = {"BASE": base.ref, "PYTHON": spec.python}
    files = {}
    for layer in NVIDIA_LAYERS:
        text = requirement_text((p for p in pins if nvidia_layer(p) == layer), hashes=True)
        sha = hashlib.sha256(text.encode()).hexdigest() if text else ""
        build_args[layer] = sha
        if text:
            files[f"{sha}-nvidia.txt"] = text
    return ImagePlan(
        spec=spec,
        tag=f"tfbisect-nvidia:{name}-py{spec.python}-{content[:12]}",
        content_hash=content,
        target="nvidia",
        build_args=build_args,
        labels={"tfbisect.hash": content, "tfbisect.base": base.ref, "tfbisect.version": __version__},
        pins=pins,
        files=files,
        below=None,
    )


def plan_image(
    spec: EnvSpec,
    lock: Lock,
    lock_bytes: bytes,
    dockerfile: bytes,
    base: Base,
    *,
    nvidia_lock: bytes | None = None,
    check: bytes = b"",
) -> ImagePlan:
    """The image of `spec` from these inputs, without an engine: its tag and content hash, the
    Dockerfile stage, build arguments and labels, its layer's packages, and for a CUDA image the
    NVIDIA image it is built on (from `nvidia_lock`, the CUDA set's lock, or else the NVIDIA pins
    of `lock` itself).  The same inputs give the same plan; any change gives another hash."""
    refuse_cuda(spec, user_base=base.source == "user")
    line_cuda = CUDA_EXPECTED.get(minor_line(spec.tf_version), "")
    cuda = spec.flavour is Flavour.CUDA
    expected = line_cuda if cuda else ""
    found = pins(lock_bytes.decode("utf-8", "replace"))
    below = None
    if cuda:
        # TF 2.14+ locks name their NVIDIA wheels; TF 2.5-2.13 take their CUDA set's lock;
        # a base image of the user's brings the libraries itself.
        source = cuda_plan(spec.tf_version).source
        nvidia = found if source is CudaSource.AND_CUDA else []
        if source is CudaSource.WHEEL_SET:
            assert nvidia_lock is not None, "a CUDA set's image needs the set's lock"
            nvidia = pins(nvidia_lock.decode("utf-8", "replace"))
        chosen = tuple(p for p in nvidia if p.is_nvidia)
        below = plan_nvidia(spec, chosen, dockerfile, base) if chosen else None
    under = below.content_hash.encode() if below else base.image_id.encode()
    # A CPU image's formula is the one every cached image was made with; a CUDA image adds the check.
    parts = [dockerfile, under, lock_bytes, spec.flavour.value.encode(), expected.encode()]
    content = _digest(*parts, *([check] if cuda else []))
    lock_sha256 = hashlib.sha256(lock_bytes).hexdigest()
    build_args = {
        "BASE": below.tag if below else base.ref,
        "PYTHON": spec.python,
        "LOCK_SHA": lock_sha256,
        "CHECK_IMPORT": import_check(lock),
    }
    if cuda:
        build_args["EXPECT_CUDA"] = line_cuda
    return ImagePlan(
        spec=spec,
        tag=f"tfbisect:tf{spec.tf_version}-py{spec.python}-{spec.flavour.value}-{content[:12]}",
        content_hash=content,
        target=spec.flavour.value,
        build_args=build_args,
        labels={
            "tfbisect.hash": content,
            "tfbisect.lock": lock.path.name,
            "tfbisect.base": base.ref,
            "tfbisect.version": __version__,
            **({"tfbisect.nvidia": below.tag} if below else {}),
        },
        pins=tuple(p for p in found if not p.is_nvidia),
        files={
            f"{lock_sha256}-cpu.txt": requirement_text((p for p in found if not p.is_nvidia), hashes=True)
        },
        below=below,
    )


def import_check(lock: Lock) -> str:
    """The module the image build imports to prove the install works: TensorFlow when the lock
    installs it (a lock of nothing, like the fault table's, builds a bare Python image)."""
    names = [r.split("[")[0].split("=")[0].strip().lower() for r in lock.requirements]
    return (
        "tensorflow" if any(n.startswith(("tensorflow", "tf-nightly", "tf_nightly")) for n in names) else ""
    )


def reproducible(argv: list[str], name: str, outdir: Path) -> str:
    """The run as a user can paste it: `docker run` in a throwaway container, the result in ./out."""
    at = argv.index("--name")
    pasted = ["docker", *argv[1:at], "--rm", *_unwatched(argv[at + 2 :])]
    return shlex.join(pasted).replace(str(outdir), "$PWD/out").replace(name, "tfbisect-repro")


def _unwatched(words: list[str]) -> list[str]:
    """A pasted run needs no deadline of a driver's: its labels and watchdog left out."""
    out: list[str] = []
    skip = 0
    for i, word in enumerate(words):
        if skip:
            skip -= 1
        elif word == "--label" and words[i + 1].startswith("tfbisect."):
            skip = 1
        elif word in ("python", SITE_PYTHON) and words[i + 1 : i + 3] == ["-c", WATCHDOG]:
            skip = 3  # -c WATCHDOG SECONDS: the `python` that follows runs the scenario
        else:
            out.append(word)
    return out


# A container outlives the driver's --timeout by at most this: the driver kills it at the timeout
# itself; the watchdog inside (`watched`) is for a driver that is gone.
CONTAINER_GRACE_SECONDS = 60
# The container's first process under its init: runs the command and kills it at the deadline,
# passing its exit status on as the init would (128+N for a signal).  Python, because every image
# has it (a user's --base-image may lack coreutils' `timeout`); code for Python 3.6+.
WATCHDOG = (
    "import subprocess, sys\n"
    "child = subprocess.Popen(sys.argv[2:])\n"
    "try:\n"
    "    code = child.wait(float(sys.argv[1]))\n"
    "except subprocess.TimeoutExpired:\n"
    "    child.kill()\n"
    "    child.wait()\n"
    "    code = -9\n"
    "sys.exit(128 - code if code < 0 else code)\n"
)


def watched(timeout: float | None, python: str = "python") -> list[str]:
    """`python` with the run's in-container deadline in front of the scenario's arguments (no
    --timeout known: `python` alone).

    Why not `docker run --rm`: how a run ended is read from the container after its process ends
    (`ended`: OOMKilled, whether it started), which `--rm` would race; the container is removed
    right after that, and one whose driver died ends by this deadline and is removed by the next
    tfbisect (`Containers.sweep_leftovers`, by its deadline label)."""
    if timeout is None:
        return [python]
    return [python, "-c", WATCHDOG, f"{timeout + CONTAINER_GRACE_SECONDS:g}", python]


@dataclass(frozen=True)
class DockerConfig:
    keep_containers: bool = False  # leave containers behind for debugging
    base_image: str | None = None  # a user-named base image
    timeout: float | None = None  # the runner's --timeout: the containers' own deadline


def _configure(options: Options) -> DockerConfig:
    base = option(options, "base_image")
    timeout = option(options, "timeout")
    return DockerConfig(
        bool(option(options, "keep_containers")),
        str(base) if base else None,
        float(timeout) if isinstance(timeout, int | float) else None,
    )


def _make(config: DockerConfig, context: Context) -> DockerBackend:
    return DockerBackend(
        context.cache_dir,
        context.progress,
        keep=config.keep_containers,
        user_base=config.base_image,
        timeout=config.timeout,
    )


def _check(config: DockerConfig, progress: Progress) -> None:
    connect(progress)  # an explicit --backend docker with no engine is a clear error, before any work


def describe(fallback: bool) -> str:
    return f"containers (Docker backend; images from {DOCKERFILE})" + (
        ", and local venvs for versions no base image fits" if fallback else ""
    )


REGISTRATION = Registration(
    name=DockerBackend.name,
    configure=_configure,
    make=_make,
    describe=describe,
    check=_check,
    auto_rank=0,
    unavailable="no Docker engine",
    short="containers",
    cancel=cancel_all,
)
