"""A CPU release for the Docker backend as a site volume on a runtime image, not an image of its own.

The runtime image is the Dockerfile's `base` stage on the release's base (Python, the empty
venv at /opt/venv, the unprivileged user, the installer): one per base, shared by every
release on it.  The release's packages go into a named volume, `tfbisect-site-tf<version>-
py<python>-cpu-<hash>`, that a short-lived container from the runtime image fills: the same
installer, wheels and hashes as an image build (the host's wheel cache on loopback, offline,
`--require-hashes`), then the same import check, which also writes the bytecode every run reads.
Each run mounts the volume read-only at /opt/venv with every hardening flag of an image's run.

Why: an image layer is copied when it is committed (about 9 s for TF 2.9.3's 980 MB, on top
of the 10 s its install takes); a volume is written in place.  What still uses images: CUDA
(TF's loader check is part of the image), the swarm (a volume lives on one node) and a
proof's thin layer (it patches and removes files of the install), each through
`DockerBackend.ensure_image`, as before.

The volume's hash covers the runtime image's, the lock and the filling script; a volume is
used only when its marker file (written last) holds that hash, so one a killed filling left
is removed and filled again, never run.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tfbisect import __version__
from tfbisect.core import interrupt
from tfbisect.core.errors import EnvironmentBuildError
from tfbisect.core.fsio import file_lock, write_text_atomic
from tfbisect.core.spec import EnvSpec
from tfbisect.core.timing import SPENT, Phase
from tfbisect.envs import cache
from tfbisect.envs.backend_docker import (
    BUILD_TIMEOUT,
    DockerBackend,
    Image,
    ImagePlan,
    _digest,
    build_failure,
    dockerfile_bytes,
    fetch_wheels,
    import_check,
    stage_context,
    uv_path,
)
from tfbisect.envs.bases import Base
from tfbisect.envs.docker_proof import engine_fault, fault_of
from tfbisect.envs.docker_volumes import MARKER, MOUNT, SITE_LABEL, WHEELS, FillRequest
from tfbisect.envs.locks import Lock
from tfbisect.envs.wheelhouse import Pin, pins, requirement_text

# The filling script's own version: a change to what it does makes new volumes.
SITE_FORMAT = b"site-1"
SIZE_LINE = re.compile(r"^tfbisect: site kB (\d+)", re.M)  # the script's last words: the volume's size


@dataclass(frozen=True)
class SitePlan:
    """Everything about one release's site volume that follows from its inputs alone."""

    spec: EnvSpec
    name: str  # tfbisect-site-tf<version>-py<python>-cpu-<hash[:12]>
    content_hash: str  # of the runtime image's hash, the lock and SITE_FORMAT
    runtime: ImagePlan  # the image it is filled from and mounted on
    labels: dict[str, str]
    pins: tuple[Pin, ...]
    lock_sha256: str
    check_import: str  # the module whose import proves the install ("" for a lock of nothing)

    def requirement_files(self) -> dict[str, str]:
        return {f"{self.lock_sha256}-cpu.txt": requirement_text(self.pins, hashes=True)}

    def script(self, wheels_url: str, uv_sha: str) -> str:
        """What the filling container runs (sh, as root, the volume at /opt/venv): install, check,
        measure, and the marker last."""
        install = ["python", "/opt/tfbisect/install_wheels.py", wheels_url, self.spec.python]
        install += [f"{self.lock_sha256}-cpu.txt", uv_sha]
        lines = ["set -e", shlex.join(install)]
        if self.check_import:
            code = f"import {self.check_import} as m; print(m.__name__, m.__version__)"
            lines.append(f"PYTHONDONTWRITEBYTECODE= python -c {shlex.quote(code)}")
        lines.append(f'echo "tfbisect: site kB $(du -sk {MOUNT} | cut -f1)"')
        lines.append(f"echo {self.content_hash} > {MARKER}")
        return "\n".join(lines)


def plan_runtime(spec: EnvSpec, dockerfile: bytes, base: Base) -> ImagePlan:
    """The runtime image of `base`: the Dockerfile's `base` stage, shared by every release on it."""
    content = _digest(dockerfile, base.image_id.encode(), b"runtime")
    return ImagePlan(
        spec=spec,
        tag=f"tfbisect:runtime-py{spec.python}-{content[:12]}",
        content_hash=content,
        target="base",
        build_args={"BASE": base.ref},
        labels={"tfbisect.hash": content, "tfbisect.base": base.ref, "tfbisect.version": __version__},
        pins=(),
        files={},
        below=None,
    )


def plan_site(spec: EnvSpec, lock: Lock, lock_bytes: bytes, runtime: ImagePlan) -> SitePlan:
    """The site volume of `spec` on `runtime`: the same inputs give the same name and hash."""
    content = _digest(runtime.content_hash.encode(), lock_bytes, spec.flavour.value.encode(), SITE_FORMAT)
    return SitePlan(
        spec=spec,
        name=f"tfbisect-site-tf{spec.tf_version}-py{spec.python}-{spec.flavour.value}-{content[:12]}",
        content_hash=content,
        runtime=runtime,
        labels={
            SITE_LABEL: "1",
            "tfbisect.hash": content,
            "tfbisect.lock": lock.path.name,
            "tfbisect.image": runtime.tag,
            "tfbisect.version": __version__,
        },
        pins=tuple(p for p in pins(lock_bytes.decode("utf-8", "replace")) if not p.is_nvidia),
        lock_sha256=hashlib.sha256(lock_bytes).hexdigest(),
        check_import=import_check(lock),
    )


def ensure_site(backend: DockerBackend, spec: EnvSpec, lock: Lock, log_dir: Path) -> Image:
    """The runtime image (built once per base) and the release's site volume, filled unless a
    complete one is there; an Image that runs with the volume mounted.  One process at a time
    checks and fills a volume (a lock beside the machine's wheels): a second tfbisect preparing
    the same release waits for the first one's filling and then reuses it."""
    base = backend.bases.get(spec.python, backend.user_base)
    runtime_plan = plan_runtime(spec, dockerfile_bytes(), base)
    runtime = backend.ensure_plan(runtime_plan, base, log_dir)
    plan = plan_site(spec, lock, lock.path.read_bytes(), runtime_plan)
    backend.in_use.add(f"volume:{plan.name}")
    # Marked before it is filled: a volume a killed filling left is this cache's to prune.
    cache.touch(cache.image_mark(backend.cache_dir, plan.name, "prepared"))
    locks = backend.wheels.root / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with file_lock(locks / f"{plan.name}.lock"):
        filled = not is_complete(backend, plan)
        if filled:
            fill(backend, plan, log_dir / f"{spec.key}.fill.log")
    return Image(runtime.tag, runtime.image_id, base, spec.flavour, filled, volume=plan.name)


def is_complete(backend: DockerBackend, plan: SitePlan) -> bool:
    """Whether the volume is there, complete, with this plan's hash (asked of the engine once
    per process).  A partial one (a filling was killed) or a stranger under its name is removed;
    an engine that stopped answering is a machine fault, never taken for a partial volume."""
    if plan.name in backend.sites_ready:
        return True
    engine = backend.engine
    labels = engine.volume_labels(plan.name)
    if labels is None:
        return False
    if labels.get("tfbisect.hash") == plan.content_hash:
        marker = engine.read_file(plan.runtime.tag, MARKER, 256, volume=plan.name)
        if marker is not None and marker.strip() == plan.content_hash.encode():
            backend.sites_ready.add(plan.name)
            return True
        fault = engine_fault(engine, f"reading the marker of {plan.name}")
        if fault is not None:
            raise fault
    if not engine.remove_volume(plan.name):
        raise EnvironmentBuildError(
            f"The volume {plan.name} is not complete (a filling was stopped), and a container still uses it.",
            f"remove that container (`docker ps -a --filter volume={plan.name}`, then `docker rm -f` it), "
            "then run again: the release is filled anew.",
        )
    return False


def fill(backend: DockerBackend, plan: SitePlan, log_path: Path) -> None:
    """Fill the plan's volume; after a failure a bad wheel is evicted and the filling retried
    once.  A volume that did not fill is removed on every way out (a stop, a drop, a failure)."""
    spec = plan.spec
    fetch_wheels(backend, spec, plan.pins, log_path)
    stage_context(plan, backend.cache_dir, backend.wheels)
    uv_sha = backend.wheels.stage_tool("uv", uv_path())
    engine = backend.engine
    for attempt in (1, 2):
        try:
            engine.create_volume(plan.name, plan.labels)
            with (
                backend.progress.step(spec.label, f"filling the volume {plan.name} (log: {log_path})"),
                SPENT.measure(Phase.BUILD),
            ):
                script = plan.script(f"file://{WHEELS}", uv_sha)
                request = FillRequest(plan.runtime.tag, plan.name, script, str(backend.wheels.root))
                finished = engine.fill_volume(request, log_path, BUILD_TIMEOUT)
        except BaseException:
            with interrupt.held():
                engine.remove_volume(plan.name)
            raise
        if finished.exit_code == 0:
            backend.sites_ready.add(plan.name)
            found = SIZE_LINE.search(finished.log_tail)
            size_mark = cache.image_mark(backend.cache_dir, plan.name, "size")
            write_text_atomic(size_mark, str(int(found.group(1)) * 1024 if found else 0))
            return
        engine.remove_volume(plan.name)
        what = f"filling {plan.name}"
        fault = fault_of(engine, finished.log_tail, what)
        if fault is not None:  # a full disk, or an engine gone: no finding about the release
            raise fault
        damaged = not finished.timed_out and not interrupt.stopping()
        if attempt == 2 or not (damaged and backend.wheels.recheck(list(plan.pins), spec.python)):
            raise build_failure(spec, "the volume", finished, log_path)
        backend.progress.say(f"[{spec.label}] a cached wheel was damaged: fetching it again and refilling")
