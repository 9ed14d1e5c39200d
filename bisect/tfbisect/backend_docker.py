"""The Docker backend: images from the top-level Dockerfile, the scenario run in a locked-down container.

Images are named `tfbisect:tf<version>-py<python>-<flavour>-<hash>` and labelled with the hash
of everything that went into them (Dockerfile, base image id, lock, flavour), so a current
image is reused and a stale one never is.  The CPU image of a TF 2.14+ release installs the
full `tensorflow` wheel (which runs on CPU) so that its CUDA image is the CPU image plus one
layer of NVIDIA wheels.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tfbisect import __version__
from tfbisect.bases import SUITES, Base, BaseImages
from tfbisect.catalogue import Release
from tfbisect.docker_engine import Engine, connect, environment_names
from tfbisect.environments import Ended, Launch
from tfbisect.errors import EnvironmentBuildError, LockError, NoInterpreterError
from tfbisect.locks import Lock, LockSpec
from tfbisect.process import Finished
from tfbisect.progress import Progress
from tfbisect.scenario import Scenario
from tfbisect.spec import Backend, EnvSpec, Flavour, has_and_cuda
from tfbisect.versions import minor_line, python_sort_key
from tfbisect.wheelhouse import Pin, Wheelhouse, pins, serve

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"
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
        if has_and_cuda(spec.tf_version):
            return LockSpec(spec.tf_version, spec.python, Flavour.CUDA, spec.keras)
        if spec.flavour is Flavour.CUDA:
            raise LockError(
                f"CUDA images are built for TF 2.14 and newer (tensorflow[and-cuda]); TF {spec.tf_version} "
                "would need its matching nvidia-*-cu11 set, which tfbisect does not know yet.",
                "use --base cpu for this version.",
            )
        return LockSpec(spec.tf_version, spec.python, Flavour.CPU, spec.keras)

    # -- images ------------------------------------------------------------------------
    def prepare(self, spec: EnvSpec, lock: Lock, log_dir: Path) -> Image:
        return self.ensure_image(spec, lock, log_dir)

    def ensure_image(self, spec: EnvSpec, lock: Lock, log_dir: Path) -> Image:
        base = self.bases.get(spec.python, self.user_base)
        dockerfile = DOCKERFILE.read_bytes()
        lock_text = lock.path.read_text()
        digest = hashlib.sha256()
        expected = CUDA_EXPECTED.get(minor_line(spec.tf_version), "") if spec.flavour is Flavour.CUDA else ""
        for part in (
            dockerfile,
            base.image_id.encode(),
            lock_text.encode(),
            spec.flavour.value.encode(),
            expected.encode(),
        ):
            digest.update(part)
            digest.update(b"\0")
        content = digest.hexdigest()
        tag = f"tfbisect:tf{spec.tf_version}-py{spec.python}-{spec.flavour.value}-{content[:12]}"
        if self.engine.image_labels(tag).get("tfbisect.hash") == content:
            return Image(tag, self.engine.image_id(tag) or "", base, spec.flavour, built=False)
        if spec.flavour is Flavour.CUDA:
            # The CPU image first: the CUDA one is built on top of its layers.
            cpu = EnvSpec(spec.tf_version, spec.python, Flavour.CPU, spec.keras, spec.backend, spec.base)
            self.ensure_image(cpu, lock, log_dir)
        layers: dict[str, list[Pin]] = {"cpu": [], "nvidia": []}
        for pin in pins(lock_text):
            layers["nvidia" if pin.is_nvidia else "cpu"].append(pin)
        log_path = log_dir / f"{spec.key}.build.log"
        # Only what this image's top layer needs: a CPU image never fetches NVIDIA wheels.
        self.wheels.ensure(layers["nvidia" if spec.flavour is Flavour.CUDA else "cpu"], spec.python, log_path)
        requirements = self.cache_dir / "wheels" / "req"
        requirements.mkdir(parents=True, exist_ok=True)
        for name, chosen in layers.items():
            text = "".join(f"{p.name}=={p.version}\n" for p in chosen)
            (requirements / f"{lock.sha256}-{name}.txt").write_text(text)
        context = self.cache_dir / "context"
        context.mkdir(parents=True, exist_ok=True)
        expected = CUDA_EXPECTED.get(minor_line(spec.tf_version), "")
        with (
            serve(self.cache_dir / "wheels") as url,
            self.progress.step(spec.label, f"building {tag} (log: {log_path})"),
        ):
            args = [
                "build",
                "--network",
                "host",
                "--file",
                str(DOCKERFILE),
                "--target",
                spec.flavour.value,
                "--tag",
                tag,
                "--build-arg",
                f"BASE={base.ref}",
                "--build-arg",
                f"WHEELS_URL={url}",
                "--build-arg",
                f"PYTHON={spec.python}",
                "--build-arg",
                f"LOCK_SHA={lock.sha256}",
                "--build-arg",
                f"EXPECT_CUDA={expected}",
                "--build-arg",
                f"CHECK_IMPORT={import_check(lock)}",
                "--label",
                f"tfbisect.hash={content}",
                "--label",
                f"tfbisect.lock={lock.path.name}",
                "--label",
                f"tfbisect.base={base.ref}",
                "--label",
                f"tfbisect.version={__version__}",
                str(context),
            ]
            finished = self.engine.logged(
                args, log_path, timeout=3600, env=dict(os.environ, DOCKER_BUILDKIT="0")
            )
        if finished.exit_code != 0:
            raise EnvironmentBuildError(
                f"Building the image for TF {spec.tf_version} ({spec.flavour.value}, Python {spec.python}) failed:\n"
                + "\n".join(finished.log_tail.splitlines()[-15:]),
                f"see the full build log at {log_path}; the version is recorded as skip, never good or bad.",
            )
        return Image(tag, self.engine.image_id(tag) or "", base, spec.flavour, built=True)

    # -- runs --------------------------------------------------------------------------
    @contextmanager
    def launch(self, spec: EnvSpec, scenario: Scenario, prepared: object, outdir: Path) -> Iterator[Launch]:
        """The `docker run` argv for one run, inside a uniquely named container that is always removed."""
        image = prepared
        assert isinstance(image, Image)
        outdir.chmod(0o777)  # the unprivileged user in the container writes the result here
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
                f"{outdir}:/out",
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
            yield Launch(argv=argv, env=dict(os.environ), extra=extra, shown=reproducible(argv, name, outdir))

    def ended(self, launch: Launch, finished: Finished, has_result: bool) -> Ended:
        """The container's end in the venv backend's terms: OOM kills named, 128+N as -N."""
        if finished.timed_out:
            return Ended(exit_code=None)
        code = finished.exit_code
        if code == DOCKER_FAILED and not has_result:
            # `docker run` itself failed (image gone, engine error): not the scenario's 125.
            last = (finished.log_tail.splitlines() or ["?"])[-1]
            return Ended(exit_code=code, unstarted=f"The container could not start: {last}")
        state = self.engine.container_state(str(launch.extra["container"]))
        if code is not None and 128 < code < 128 + signal.NSIG:
            code = -(code - 128)  # its init reports a child killed by signal N as 128+N
        return Ended(exit_code=code, memory_limit=MEMORY if state.get("OOMKilled") else None)


def import_check(lock: Lock) -> str:
    """The module the image build imports to prove the install works: TensorFlow when the lock
    installs it (a lock of nothing, like the fault table's, builds a bare Python image)."""
    names = [r.split("[")[0].split("=")[0].strip().lower() for r in lock.requirements]
    return (
        "tensorflow" if any(n.startswith(("tensorflow", "tf-nightly", "tf_nightly")) for n in names) else ""
    )


def reproducible(argv: list[str], name: str, outdir: Path) -> str:
    """The run as a user can paste it: a throwaway container, the result in ./out."""
    at = argv.index("--name")
    pasted = [*argv[:at], "--rm", *argv[at + 2 :]]
    return shlex.join(pasted).replace(str(outdir), "$PWD/out").replace(name, "tfbisect-repro")
