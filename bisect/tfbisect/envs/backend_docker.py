"""The Docker backend: images from the top-level Dockerfile, the scenario run in a locked-down container.

Images are named `tfbisect:tf<version>-py<python>-<flavour>-<hash>` and labelled with the hash
of everything that went into them (Dockerfile, base image id, lock, flavour), so a current
image is reused and a stale one never is.  The CPU image of a TF 2.14+ release installs the
full `tensorflow` wheel (which runs on CPU) so that its CUDA image is the CPU image plus one
layer of NVIDIA wheels.

What an image is (tag, hash, stage, build arguments, labels, layers, the CPU image under a CUDA
one) is `plan_image`, a pure function of its inputs; `DockerBackend.ensure_image` reuses or
builds what it plans.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tfbisect import __version__
from tfbisect.core.catalogue import Release
from tfbisect.core.errors import EnvironmentBuildError, LockError, NoInterpreterError
from tfbisect.core.process import Finished
from tfbisect.core.progress import Progress
from tfbisect.core.scenario import Scenario
from tfbisect.core.spec import Backend, EnvSpec, Flavour, has_and_cuda
from tfbisect.core.versions import minor_line, python_sort_key
from tfbisect.envs.bases import SUITES, Base, BaseImages
from tfbisect.envs.docker_engine import BuildRequest, Engine, connect, environment_names
from tfbisect.envs.environments import Ended, Launch
from tfbisect.envs.locks import Lock, LockSpec
from tfbisect.envs.wheelhouse import Pin, Wheelhouse, pins, serve

DOCKERFILE = Path(__file__).resolve().parents[3] / "Dockerfile"
# The CUDA each line's wheels were built for (tf.sysconfig.get_build_info()); the CUDA image
# build fails when TF says otherwise.
CUDA_EXPECTED = {
    "2.14": "11.8",
    "2.15": "12.2",
    "2.16": "12.3",
    "2.17": "12.3",
    "2.18": "12.5",
    "2.19": "12.5",
    "2.21": "12.5",  # seen: the 2.21.0 wheel reports 12.5.1 / cuDNN 9
}
USER = "10001:10001"
MEMORY = os.environ.get("TFBISECT_MEMORY", "8g")
BUILD_TIMEOUT = 3600.0
LIMITS = ["--memory", MEMORY, "--pids-limit", "2048"]
DOCKER_FAILED = 125  # what `docker run` exits with when the container cannot start


@dataclass(frozen=True)
class Image:
    tag: str
    image_id: str
    base: Base
    flavour: Flavour
    built: bool  # False when a current image was reused


class DockerBackend:
    """`Environments` as images from ./Dockerfile and locked-down containers (see environments.py).

    The engine is connected on first use, under a lock (rounds run in threads): placing
    releases (`python_for`) needs no engine, so a bisection contacts none before its first run."""

    kind = Backend.DOCKER

    def __init__(
        self,
        cache_dir: Path,
        progress: Progress,
        *,
        keep: bool = False,
        user_base: str | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.progress = progress
        self.cache_dir = cache_dir
        self.wheels = Wheelhouse(cache_dir / "wheels", progress)
        self.keep = keep
        self.user_base = user_base
        self._user_python: str | None = None
        self._engine = engine
        self._bases: BaseImages | None = None
        self._connect_lock = threading.Lock()

    @property
    def engine(self) -> Engine:
        with self._connect_lock:
            if self._engine is None:
                self._engine = connect(self.progress)
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
        CUDA images share every layer below the NVIDIA one); older lines from their CPU lock."""
        refuse_old_cuda(spec)
        flavour = Flavour.CUDA if has_and_cuda(spec.tf_version) else Flavour.CPU
        return LockSpec(spec.tf_version, spec.python, flavour, spec.keras)

    # -- images ------------------------------------------------------------------------
    def prepare(self, spec: EnvSpec, lock: Lock, log_dir: Path) -> Image:
        return self.ensure_image(spec, lock, log_dir)

    def ensure_image(self, spec: EnvSpec, lock: Lock, log_dir: Path) -> Image:
        base = self.bases.get(spec.python, self.user_base)
        plan = plan_image(spec, lock, lock.path.read_bytes(), DOCKERFILE.read_bytes(), base)
        return self._ensure(plan, base, log_dir)

    def _current(self, plan: ImagePlan) -> bool:
        """The image is there with this plan's hash; a CUDA image also sits on its CPU image's
        layers when that image is there (it may have been rebuilt since)."""
        if self.engine.image_labels(plan.tag).get("tfbisect.hash") != plan.content_hash:
            return False
        if plan.cpu_first is None:
            return True
        below = self.engine.image_layers(plan.cpu_first.tag)
        return not below or self.engine.image_layers(plan.tag)[: len(below)] == below

    def _ensure(self, plan: ImagePlan, base: Base, log_dir: Path) -> Image:
        spec = plan.spec
        if self._current(plan):
            return Image(plan.tag, self.engine.image_id(plan.tag) or "", base, spec.flavour, built=False)
        if plan.cpu_first is not None:
            # The CPU image first: the CUDA one is built on top of its layers.
            self._ensure(plan.cpu_first, base, log_dir)
        log_path = log_dir / f"{spec.key}.build.log"
        # Only what this image's top layer needs: a CPU image never fetches NVIDIA wheels.
        self.wheels.ensure(list(plan.fetch), spec.python, log_path)
        requirements = self.cache_dir / "wheels" / "req"
        requirements.mkdir(parents=True, exist_ok=True)
        for name, text in plan.requirement_files().items():
            (requirements / name).write_text(text)
        context = self.cache_dir / "context"
        context.mkdir(parents=True, exist_ok=True)
        with (
            serve(self.cache_dir / "wheels") as url,
            self.progress.step(spec.label, f"building {plan.tag} (log: {log_path})"),
        ):
            finished = self.engine.build(
                plan.build_request(url, DOCKERFILE, context), log_path, BUILD_TIMEOUT
            )
        if finished.exit_code != 0:
            how = f"did not finish in {BUILD_TIMEOUT:g}s" if finished.timed_out else "failed"
            raise EnvironmentBuildError(
                f"Building the image for TF {spec.tf_version} ({spec.flavour.value}, Python {spec.python}) {how}:\n"
                + "\n".join(finished.log_tail.splitlines()[-15:]),
                f"see the full build log at {log_path}; the version is recorded as skip, never good or bad.",
            )
        return Image(plan.tag, self.engine.image_id(plan.tag) or "", base, spec.flavour, built=True)

    # -- runs --------------------------------------------------------------------------
    @contextmanager
    def launch(self, spec: EnvSpec, scenario: Scenario, prepared: object, outdir: Path) -> Iterator[Launch]:
        """The `docker run` argv for one run, inside a uniquely named container that is always removed."""
        image = prepared
        assert isinstance(image, Image)
        # The unprivileged user in the container writes the result into a folder open to it; that
        # folder sits in the run's own 0700 folder, so no other local user can reach or forge it.
        results = outdir / "out"
        results.mkdir()
        results.chmod(0o777)
        gpu = spec.flavour is Flavour.CUDA and self.engine.has_nvidia_runtime()
        with self.engine.container_name(spec.key.replace(".", "_"), keep=self.keep) as name:
            argv = self.engine.command(
                "run",
                "--name",
                name,
                "--init",  # signals and orphans inside behave as on the host; deaths by signal are 128+N
                "--network",
                "none",
                "--user",
                USER,
                "--read-only",
                "--tmpfs",
                "/tmp",
                "--tmpfs",
                "/home/tfbisect",
                *LIMITS,
                *(["--gpus", "all"] if gpu else []),
                *environment_names(spec.env_vars()),
                "--volume",
                f"{scenario.path}:/scenario/{scenario.path.name}:ro",
                "--volume",
                f"{results}:/out",
                image.tag,
                "python",
                f"/scenario/{scenario.path.name}",
                "--output",
                "/out/result.json",
            )
            if spec.flavour is Flavour.CUDA and not gpu:
                self.progress.say(
                    f"[{spec.label}] no NVIDIA runtime on this engine: the CUDA image runs on CPU"
                )
            extra: dict[str, object] = {
                "image": image.tag,
                "image_id": image.image_id,  # the image's own ID (`docker image inspect` .Id)
                # None for an image built here and never pushed (the usual case)
                "image_repo_digest": self.engine.image_repo_digest(image.tag),
                "base_image": image.base.ref,
                "base_image_id": image.base.image_id,  # the base's ID, apart (older records: base_digest)
                "base_source": image.base.source,
                "flavour": spec.flavour.value,
                "gpu_visible": gpu,
                "container": name,
            }
            yield Launch(
                argv=argv,
                env=self.engine.run_env(os.environ),
                extra=extra,
                shown=reproducible(argv, name, results),
                results=results,
            )

    def ended(self, launch: Launch, finished: Finished, has_result: bool) -> Ended:
        """The container's end in the venv backend's terms: OOM kills named, 128+N as -N."""
        if finished.timed_out:
            return Ended(exit_code=None)
        code = finished.exit_code
        state = self.engine.container_state(str(launch.extra["container"]))
        started = str(state.get("StartedAt") or "")
        if code == DOCKER_FAILED and not has_result and (not started or started.startswith("0001-")):
            # `docker run` itself failed (image gone, engine error): the container never started,
            # so this 125 is not the scenario's own "cannot test here".
            last = (finished.log_tail.splitlines() or ["?"])[-1]
            return Ended(exit_code=code, unstarted=f"The container could not start: {last}")
        if code is not None and 128 < code < 128 + signal.NSIG:
            code = -(code - 128)  # its init reports a child killed by signal N as 128+N
        return Ended(exit_code=code, memory_limit=MEMORY if state.get("OOMKilled") else None)


def refuse_old_cuda(spec: EnvSpec) -> None:
    if spec.flavour is Flavour.CUDA and not has_and_cuda(spec.tf_version):
        raise LockError(
            f"CUDA images are built for TF 2.14 and newer (tensorflow[and-cuda]); TF {spec.tf_version} "
            "would need its matching nvidia-*-cu11 set, which tfbisect does not know yet.",
            "use --base cpu for this version.",
        )


@dataclass(frozen=True)
class ImagePlan:
    """Everything about one image that follows from its inputs alone (see `plan_image`)."""

    spec: EnvSpec
    tag: str  # tfbisect:tf<version>-py<python>-<flavour>-<hash[:12]>
    content_hash: str  # of the Dockerfile, the base image's ID, the lock, the flavour (and expected CUDA)
    target: str  # the Dockerfile stage
    build_args: Mapping[str, str]  # all but WHEELS_URL, the address the build installs from
    labels: Mapping[str, str]
    layers: Mapping[str, tuple[Pin, ...]]  # the lock's pins by the layer that installs them: cpu, nvidia
    lock_sha256: str
    cpu_first: ImagePlan | None  # a CUDA image's CPU image, which must exist before it is built

    @property
    def fetch(self) -> tuple[Pin, ...]:
        """The wheels this image's own top layer installs."""
        return self.layers["nvidia" if self.spec.flavour is Flavour.CUDA else "cpu"]

    def requirement_files(self) -> dict[str, str]:
        """The files the Dockerfile's layers install from (`<lock sha>-<layer>.txt`), by name."""
        return {
            f"{self.lock_sha256}-{name}.txt": "".join(f"{p.name}=={p.version}\n" for p in chosen)
            for name, chosen in self.layers.items()
        }

    def build_request(self, wheels_url: str, dockerfile: Path, context: Path) -> BuildRequest:
        args = dict(self.build_args)
        return BuildRequest(
            dockerfile=dockerfile,
            context=context,
            tag=self.tag,
            target=self.target,
            build_args={"BASE": args.pop("BASE"), "WHEELS_URL": wheels_url, **args},
            labels=self.labels,
        )


def plan_image(spec: EnvSpec, lock: Lock, lock_bytes: bytes, dockerfile: bytes, base: Base) -> ImagePlan:
    """The image of `spec` from these inputs, without an engine: its tag and content hash, the
    Dockerfile stage, build arguments and labels, its layers' packages, and for a CUDA image the
    CPU image it is built on.  The same inputs give the same plan; any change gives another hash."""
    refuse_old_cuda(spec)
    lock_text = lock_bytes.decode("utf-8", "replace")
    line_cuda = CUDA_EXPECTED.get(minor_line(spec.tf_version), "")
    expected = line_cuda if spec.flavour is Flavour.CUDA else ""
    digest = hashlib.sha256()
    for part in (
        dockerfile,
        base.image_id.encode(),
        lock_bytes,
        spec.flavour.value.encode(),
        expected.encode(),
    ):
        digest.update(part)
        digest.update(b"\0")
    content = digest.hexdigest()
    lock_sha256 = hashlib.sha256(lock_bytes).hexdigest()
    found = pins(lock_text)
    cpu_first = None
    if spec.flavour is Flavour.CUDA:
        cpu_spec = EnvSpec(spec.tf_version, spec.python, Flavour.CPU, spec.keras, spec.backend, spec.base)
        cpu_first = plan_image(cpu_spec, lock, lock_bytes, dockerfile, base)
    return ImagePlan(
        spec=spec,
        tag=f"tfbisect:tf{spec.tf_version}-py{spec.python}-{spec.flavour.value}-{content[:12]}",
        content_hash=content,
        target=spec.flavour.value,
        build_args={
            "BASE": base.ref,
            "PYTHON": spec.python,
            "LOCK_SHA": lock_sha256,
            "EXPECT_CUDA": line_cuda,
            "CHECK_IMPORT": import_check(lock),
        },
        labels={
            "tfbisect.hash": content,
            "tfbisect.lock": lock.path.name,
            "tfbisect.base": base.ref,
            "tfbisect.version": __version__,
        },
        layers={
            "cpu": tuple(p for p in found if not p.is_nvidia),
            "nvidia": tuple(p for p in found if p.is_nvidia),
        },
        lock_sha256=lock_sha256,
        cpu_first=cpu_first,
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
    pasted = ["docker", *argv[1:at], "--rm", *argv[at + 2 :]]
    return shlex.join(pasted).replace(str(outdir), "$PWD/out").replace(name, "tfbisect-repro")
