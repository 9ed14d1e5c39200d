"""The proof's runs in a Docker-prepared environment (the Docker backend's, and a swarm's, whose
traced and proof runs go to the local engine that built its images): a thin image on the cached
one, built, run through the Docker backend's own launch (every hardening flag of a run: no
network, user 10001, read-only root, limits, --init), and removed; the cached image is never
changed (an image's layers are content-addressed and read-only: a build on top adds its own).

One small build `FROM <the cached image's id>` (its id, not its tag: the image run is exactly
the one prepared, even if its tag moves meanwhile), with one `RUN` in exec form (no shell needed
in the image) of a short script (`APPLY`) that, as root:
- a revert: moves each patched file (staged by `COPY`, named by number, never by its path, which is data) over
  its installed path under the image's own site-packages (`sysconfig`'s purelib: the venv the
  image runs), refusing a path that leaves it, and removes its bytecode
  (`__pycache__/<module>.*.pyc`): the images carry the bytecode pip compiled, which may be
  hash-checked or as new as the file it shadows, so old code would be served;
- a transplant: `pip install --no-index --no-deps --require-hashes` of the pins (each with the
  other end's lock hashes) from the host's wheel cache served on loopback, as the image's own
  build installs (`docker build --network host`; nothing reaches the index from inside); the
  wheels are fetched into that cache first when they are not there, hash-checked.
Then the staged files are removed and the image's user restored.

Why a layer, not read-only bind mounts over the image's paths: a mount can add a file but
never remove one, so neither the stale bytecode nor the files of a package's other version
could go (a transplant is an install, which no mount expresses); a build also works on an engine
elsewhere, where the driver's files are not, and it runs the container exactly as every other run.

The proof image is tagged `tfbisect-proof:<pid>-<random>` and labelled with its owner's pid and
host; it goes when its run is done, and one a killed driver left is swept (`sweep_proof_images`,
before every proof build, like the venv copies: older than an hour and its owner gone; `tfbisect
cache` lists them, `left_proof_images`).  Its build context lives in the proof's copies folder,
which the venv copies' sweep covers.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

from tfbisect.core.errors import (
    MACHINE_TODO,
    DockerError,
    MachineFaultError,
    TfbisectError,
    as_machine_fault,
    machine_fault_in,
)
from tfbisect.core.fsio import write_text_atomic
from tfbisect.envs import cache
from tfbisect.envs.backend_docker import DockerBackend, Image
from tfbisect.envs.docker_engine import ENGINE_FAILURES, BuildRequest, Engine
from tfbisect.envs.wheelhouse import Pin, serve
from tfbisect.platform.process import Finished

REPOSITORY = "tfbisect-proof"  # never `tfbisect`: the cache lists and prunes those as its own
OWNER_LABEL = "tfbisect.proof.owner"  # the driver's pid
HOST_LABEL = "tfbisect.proof.host"  # the driver's host name (a pid means nothing elsewhere)
OF_LABEL = "tfbisect.proof.of"  # the cached image it sits on
STAGING = "/opt/tfbisect-proof"  # where the build stages its files (gone from the final image)
BUILD_TIMEOUT_S = 600
# Each patched file is staged under a number: its path is data (patches.txt), never a file name.
APPLY = '''\
"""tfbisect's proof layer: patched files over their installed paths (old bytecode removed), or
pins installed from the wheels on loopback; then the staging folder goes.  Python 3.6+."""
import ast, glob, os, shutil, subprocess, sys, sysconfig

staging = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(staging, "patches.txt"), encoding="utf-8") as handle:
    patches = ast.literal_eval(handle.read())  # a list of strings, written by repr()
site = os.path.realpath(sysconfig.get_paths()["purelib"])
for number, path in enumerate(patches):
    target = os.path.realpath(os.path.join(site, path))
    if not target.startswith(site + os.sep) or not target.endswith(".py") or not os.path.isdir(os.path.dirname(target)):
        sys.exit("tfbisect: a patch names %r, which is no module file under %s" % (path, site))
    if os.path.lexists(target):
        os.remove(target)
    shutil.move(os.path.join(staging, "files", str(number)), target)
    os.chmod(target, 0o644)
    stem = os.path.splitext(os.path.basename(target))[0]
    for cached in glob.glob(os.path.join(os.path.dirname(target), "__pycache__", glob.escape(stem) + ".*.pyc")):
        os.remove(cached)
    print("tfbisect: patched %s" % target)
if os.path.exists(os.path.join(staging, "pins.txt")):
    subprocess.check_call([
        sys.executable, "-m", "pip", "install", "--no-cache-dir", "--disable-pip-version-check",
        "--no-index", "--no-deps", "--require-hashes", "--find-links", os.environ["WHEELS_URL"],
        "-r", os.path.join(staging, "pins.txt"),
    ])
shutil.rmtree(staging)
'''


class LayerError(TfbisectError):
    """The proof's layer did not build (not a machine fault): `tail` is what the build said, and
    `status` (the build's exit code) None when it timed out; `fetching` when the wheels could not be fetched first."""

    def __init__(self, what: str, todo: str, tail: str, exit_code: int | None, *, fetching: bool = False):
        super().__init__(what, todo)
        self.tail = tail
        self.status = exit_code
        self.fetching = fetching


def layer_target(environments: object, prepared: object) -> tuple[DockerBackend, Image] | None:
    """The Docker backend and its cached image when `prepared` is one (a proof layer fits it)."""
    if isinstance(environments, DockerBackend) and isinstance(prepared, Image):
        return environments, prepared
    return None


@dataclass(frozen=True)
class Layer:
    """What the proof's layer changes: patched files (site-packages path -> text), or pins (each
    with its hashes, as a requirements text)."""

    patches: Mapping[str, str]
    pins: tuple[Pin, ...] = ()
    requirements: str = ""  # the pins as pip reads them, hashes and all


def dockerfile(image_id: str, user: str) -> str:
    """The proof layer's Dockerfile on the cached image `image_id`, ending as its `user`."""
    return (
        f"FROM {image_id} AS proof\n"
        "USER root\n"
        f"COPY stage {STAGING}\n"
        'ARG WHEELS_URL=""\n'
        f'RUN ["python", "{STAGING}/apply.py"]\n'
        f"USER {user or 'root'}\n"
    )


def write_context(folder: Path, layer: Layer, image_id: str, user: str) -> Path:
    """The build context of the layer in `folder`: the Dockerfile, the script, the list of paths, the
    staged files and the pins."""
    stage = folder / "stage"
    (stage / "files").mkdir(parents=True)
    for number, path in enumerate(sorted(layer.patches)):
        (stage / "files" / str(number)).write_text(layer.patches[path], encoding="utf-8")
    # repr() of a list of str: read back by ast.literal_eval (any path, newlines and all, is data).
    write_text_atomic(stage / "patches.txt", repr(sorted(layer.patches)))
    write_text_atomic(stage / "apply.py", APPLY)
    if layer.pins:
        write_text_atomic(stage / "pins.txt", layer.requirements)
    write_text_atomic(folder / "Dockerfile", dockerfile(image_id, user))
    return folder


def proof_tag() -> str:
    return f"{REPOSITORY}:{os.getpid()}-{uuid.uuid4().hex[:10]}"


def engine_fault(engine: Engine, what: str) -> MachineFaultError | None:
    """A machine fault when the engine no longer answers (it stopped, its socket went)."""
    try:
        engine.client.ping()
    except ENGINE_FAILURES as exc:
        return MachineFaultError(
            f"the Docker engine stopped answering while {what} ({type(exc).__name__}: {str(exc)[:200]})",
            "start the engine again (`docker info` tells whether it answers), then resume: finished "
            "results are reused.",
        )
    return None


def fault_of(engine: Engine, text: str, what: str) -> MachineFaultError | None:
    return machine_fault_in(text, what) or engine_fault(engine, what)


@contextlib.contextmanager
def proof_image(
    backend: DockerBackend, image: Image, layer: Layer, folder: Path, log_path: Path
) -> Iterator[Image]:
    """The cached `image` with `layer` on top, as a new image (removed afterwards) that the
    backend's `launch` runs like any other; `folder` (empty, the caller's) holds its build context.

    Raises MachineFaultError when the engine or the disk fails, LayerError when the layer does not
    build for another reason (a pin whose wheel cannot be fetched or installed)."""
    engine = backend.engine
    what = f"building a proof's layer on {image.tag}"
    try:
        sweep_proof_images(engine)
        user = image_user(engine, image.image_id or image.tag)
    except DockerError as exc:
        fault = fault_of(engine, exc.what, what)
        if fault is None:
            raise
        raise fault from exc
    wheels: contextlib.AbstractContextManager[str] = contextlib.nullcontext("")
    if layer.pins:
        fetch_wheels(backend, image, layer.pins, log_path)
        wheels = serve(backend.wheels.root)
    tag = proof_tag()
    write_context(folder, layer, image.image_id or image.tag, user)
    try:
        with wheels as url:
            request = BuildRequest(
                dockerfile=folder / "Dockerfile",
                context=folder,
                tag=tag,
                target="proof",
                build_args={"WHEELS_URL": f"{url}/py{image.base.python}/" if url else ""},
                labels={
                    OWNER_LABEL: str(os.getpid()),
                    HOST_LABEL: socket.gethostname(),
                    OF_LABEL: image.tag,
                },
                network="host" if url else "none",
                clean_failed=True,  # a failed layer's step images go with it
            )
            finished = engine.build(request, log_path, BUILD_TIMEOUT_S)
        built = engine.image_id(tag) if finished.exit_code == 0 else None
        if built is None:
            raise build_failure(engine, image, finished, log_path)
        yield replace(image, tag=tag, image_id=built, built=True)
        # A run whose engine went away under it left no result worth keeping: the machine's fault.
        gone = engine_fault(engine, f"running a proof's run in {tag}")
        if gone is not None:
            raise gone
    except DockerError as exc:
        fault = fault_of(engine, exc.what, what)
        if fault is None:
            raise
        raise fault from exc
    finally:
        # Removed on every way out (a failed build leaves no tag, but its steps' images may be).
        engine.remove_image(tag)
        # Launching marks an image as used for the cache's inventory: this one is gone.
        cache.image_mark(backend.cache_dir, tag, "used").unlink(missing_ok=True)


def build_failure(engine: Engine, image: Image, finished: Finished, log_path: Path) -> Exception:
    tail = f"{finished.log_tail}\n{finished.log_error or ''}"
    fault = fault_of(engine, tail, f"building a proof's layer on {image.tag}")
    if fault is not None:
        return fault
    if finished.log_error is not None:
        return MachineFaultError(f"the machine failed writing {log_path}: {finished.log_error}", MACHINE_TODO)
    lines = [line.strip() for line in finished.log_tail.splitlines() if line.strip()]
    last = next((line for line in reversed(lines) if "error" in line.lower() or "tfbisect:" in line), "")
    how = "timed out" if finished.exit_code is None else "failed"
    return LayerError(
        f"The proof's layer on {image.tag} {how}: {(last or (lines[-1] if lines else '(no output)'))[:300]}",
        f"see {log_path}; the other trials of the proof still run.",
        tail,
        finished.exit_code,
    )


def fetch_wheels(backend: DockerBackend, image: Image, pins: Sequence[Pin], log_path: Path) -> None:
    """The pins' wheels in the host's wheel cache (fetched, hash-checked, when missing); a fetch
    that fails for the machine raises MachineFaultError, otherwise LayerError (`fetching`)."""
    try:
        kept = backend.wheels.ensure(list(pins), image.base.python, log_path)
    except MachineFaultError:
        raise
    except TfbisectError as exc:
        raise LayerError(exc.what, exc.todo, f"{exc.what}\n{exc.todo}", 1, fetching=True) from exc
    except OSError as exc:
        raise as_machine_fault(exc) from exc
    backend.in_use.update(f"wheel:{path}" for path in kept)


def image_user(engine: Engine, ref: str) -> str:
    """The user the image's config names (the layer ends as it began)."""
    config = (engine.image_inspect(ref) or {}).get("Config") or {}
    user = config.get("User") if isinstance(config, dict) else None
    return str(user) if user else ""


def sweep_proof_images(
    engine: cache.InspectingEngine, *, now: float | None = None, min_age: float = cache.PROOF_COPY_MAX_AGE_S
) -> int:
    """Remove the proof images a killed driver left (`left_proof_images`).  Returns how many went.
    Before each proof build, and with the venv copies in `cache.evict` (`tfbisect cache prune`,
    the budget)."""
    left = left_proof_images(engine, now=now, min_age=min_age)
    for tag, _ in left:
        engine.remove_image(tag)
    return len(left)


def left_proof_images(
    engine: cache.InspectingEngine, *, now: float | None = None, min_age: float = cache.PROOF_COPY_MAX_AGE_S
) -> list[tuple[str, int]]:
    """The proof images (`tfbisect-proof:*`) a killed driver left, with the bytes of their own
    layer: older than `min_age` and whose owner is gone (a process on this host that no longer
    lives; one of another host's only after a day).  What the sweep removes and `tfbisect cache`
    lists."""
    now = time.time() if now is None else now
    left = []
    for tag, size in engine.image_list(REPOSITORY):
        found = engine.image_inspect(tag) or {}
        config = found.get("Config") or {}
        labels = (config.get("Labels") if isinstance(config, dict) else None) or {}
        age = now - created(found.get("Created"), now)
        owner = str(labels.get(OWNER_LABEL, ""))
        here = labels.get(HOST_LABEL) == socket.gethostname()
        if age < (min_age if here else max(min_age, 24 * 3600)):
            continue
        if here and owner.isdigit() and cache.process_alive(int(owner)):
            continue
        # The engine's size counts the cached image under the layer, which stays.
        base = engine.image_inspect(str(labels[OF_LABEL])) if labels.get(OF_LABEL) else None
        under = (base or {}).get("Size")
        left.append((tag, max(0, size - under) if isinstance(under, int) else size))
    return left


def created(value: object, default: float) -> float:
    """An image's `Created` (RFC 3339, nanoseconds) in epoch seconds; `default` when unreadable."""
    if not isinstance(value, str):
        return default
    text = value.rstrip("Z").split(".")[0]
    try:
        return datetime.fromisoformat(text + "+00:00").timestamp()
    except ValueError:
        return default
