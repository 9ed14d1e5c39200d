"""The Swarm backend: the Docker backend's images, run as one-shot services on a Docker Swarm.

Images are built where the driver runs, as the Docker backend builds them (the local engine,
`TFBISECT_BUILD_HOST` or the default socket), and pushed to a registry (`--registry`, the
address the driver pushes to; `--registry-pull`, the one the nodes pull from, when it differs).
Each cell runs as a one-shot service (one replica, restart condition none) on the swarm whose manager `--docker-host` (or
DOCKER_HOST) names, through `swarm_task.py`, a process the runner supervises exactly like
`docker run`: the same timeout, the same kill, the same bounded log.  The service runs with the
limits of a local run (read-only root, user 10001, tmpfs /tmp and home, memory and process
limits, no port published); the scenario goes in as a swarm config, the result comes back in
the task's output.  Services and configs are removed on every path.

Placement: a CUDA cell runs only on a node labelled `tfbisect.gpu=true`; a CPU cell anywhere.
The record names the node that ran the cell (its `tfbisect.node` label, else its hostname).
"""

from __future__ import annotations

import http.client
import json
import os
import shlex
import signal
import ssl
import sys
import threading
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tfbisect.core import jsonread
from tfbisect.core.catalogue import Release
from tfbisect.core.errors import BackendUnavailableError, DockerError, TraceError
from tfbisect.core.limits import TOKEN_VARIABLES
from tfbisect.core.progress import Progress
from tfbisect.core.scenario import Scenario, harness_path
from tfbisect.core.spec import EnvSpec, Flavour
from tfbisect.envs.backend_docker import DOCKERFILE, HARNESS_PATH, MEMORY, USER, DockerBackend, Image
from tfbisect.envs.docker_engine import DEFAULT_HOST, ENGINE_FAILURES, Engine, connect
from tfbisect.envs.environments import Context, Ended, Launch, Options, Registration, Traced, option
from tfbisect.envs.locks import Lock, LockSpec
from tfbisect.envs.swarm_task import GPU_LABEL, count_eligible
from tfbisect.platform.process import Finished

PIDS = 2048
UNITS = {"k": 1024, "m": 1024**2, "g": 1024**3}


@dataclass(frozen=True)
class SwarmImage:
    image: Image  # as built on the local engine
    pull: str  # the reference the nodes pull


@dataclass(frozen=True)
class SwarmAddress:
    manager: str  # the swarm manager's engine address
    registry_push: str  # HOST:PORT the driver pushes to
    registry_pull: str  # HOST:PORT the nodes pull from


def address_from(manager: str | None, registry: str | None, registry_pull: str | None) -> SwarmAddress:
    """Where the swarm and its registry are: options first, then the environment that
    `.ci/swarm-up` prints (DOCKER_HOST, TFBISECT_REGISTRY_PUSH, TFBISECT_REGISTRY_PULL)."""
    manager = manager or os.environ.get("TFBISECT_SWARM_MANAGER") or os.environ.get("DOCKER_HOST")
    push = registry or os.environ.get("TFBISECT_REGISTRY_PUSH")
    if not manager or not push:
        missing = " and ".join(
            what for what, value in (("a swarm manager", manager), ("a registry", push)) if not value
        )
        raise BackendUnavailableError(
            f"--backend swarm needs {missing}: the nodes pull the images the driver builds from a registry.",
            "name them with --docker-host unix:///…/manager.sock (or DOCKER_HOST) and --registry HOST:PORT; "
            "`.ci/swarm-up 2` makes a local swarm with a registry and prints both.",
        )
    pull = registry_pull or os.environ.get("TFBISECT_REGISTRY_PULL") or push
    return SwarmAddress(manager, push, pull)


def manager_engine(address: SwarmAddress, progress: Progress) -> Engine:
    """The engine at the manager's address, refused unless it manages an active swarm."""
    engine = connect(progress, host=address.manager)
    swarm = engine.info().get("Swarm")
    state = swarm.get("LocalNodeState") if isinstance(swarm, dict) else None
    manager = isinstance(swarm, dict) and bool(swarm.get("ControlAvailable"))
    if state != "active" or not manager:
        raise BackendUnavailableError(
            f"The engine at {address.manager} is not a swarm manager (swarm state: {state}).",
            "point --docker-host at a manager node (`docker node ls` works there), "
            "or make a local swarm with `.ci/swarm-up 2`.",
        )
    return engine


def check_registry(address: SwarmAddress) -> None:
    """The registry answers (its /v2/ endpoint), or what to do: the nodes pull the images from it."""
    # Straight to the registry (never through a proxy), TLS first as Docker does, then plain.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    why = ""
    for scheme in ("https", "http"):
        url = f"{scheme}://{address.registry_push}/v2/"
        try:
            with opener.open(url, timeout=10) as answer:
                answer.read(1024)
            return
        except urllib.error.HTTPError as exc:
            if exc.code == 401:  # a registry that wants a login still answers
                return
            why += f"{url}: HTTP {exc.code}; "
        except urllib.error.URLError as exc:
            if isinstance(exc.reason, ssl.SSLCertVerificationError):
                return  # it answers TLS with a certificate only Docker's trust store knows
            why += f"{url}: {exc.reason}; "
        except (OSError, ValueError, http.client.HTTPException) as exc:
            why += f"{url}: {type(exc).__name__}: {exc}; "
    raise BackendUnavailableError(
        f"The registry {address.registry_push} does not answer ({why.rstrip('; ')}): "
        "the nodes could not get the images.",
        "start it (`.ci/swarm-up` starts one), or name the one the swarm uses with --registry HOST:PORT.",
    )


class SwarmBackend:
    """`Environments` on a Docker Swarm (see environments.py)."""

    name = "swarm"

    def __init__(
        self,
        cache_dir: Path,
        progress: Progress,
        address: SwarmAddress,
        *,
        user_base: str | None = None,
        builder: Engine | None = None,
        manager: Engine | None = None,
    ) -> None:
        self.progress = progress
        self.address = address
        self._manager = manager
        self._lock = threading.Lock()
        self._pushed: set[str] = set()
        # The images are built where the driver runs, never on the manager (DOCKER_HOST may name it).
        build_host = os.environ.get("TFBISECT_BUILD_HOST", DEFAULT_HOST)
        self.local = DockerBackend(
            cache_dir, progress, user_base=user_base, engine=builder, host=build_host, sites=False
        )

    @property
    def manager(self) -> Engine:
        """The swarm's manager, checked on first use: an engine that is a manager of an active swarm."""
        with self._lock:
            if self._manager is None:
                self._manager = manager_engine(self.address, self.progress)
            return self._manager

    def check(self) -> None:
        """Before any work: the manager is one, and the registry answers (its /v2/ endpoint)."""
        self.manager  # noqa: B018 -- raises with what to do when it is not
        check_registry(self.address)

    def capacity(self, flavour: Flavour = Flavour.CPU) -> int:
        """How many cells can run at once: the ready nodes that may take this flavour."""
        try:
            nodes = self.manager.api.nodes()
        except ENGINE_FAILURES as exc:
            raise BackendUnavailableError(
                f"The swarm manager at {self.address.manager} did not list its nodes: {exc}",
                "check the manager (`docker node ls` there); the run is a skip, retried next time.",
            ) from exc
        return count_eligible(nodes, gpu_only=flavour is Flavour.CUDA)

    # -- the same places, locks and images as the Docker backend -----------------------
    def python_for(self, release: Release, pinned: str | None) -> str:
        return self.local.python_for(release, pinned)

    def lock_spec(self, spec: EnvSpec) -> LockSpec:
        return self.local.lock_spec(spec)

    def prepare(self, spec: EnvSpec, lock: Lock, log_dir: Path) -> SwarmImage:
        self.manager  # noqa: B018 -- no build before the swarm is known to answer
        if spec.flavour is Flavour.CUDA and self.capacity(Flavour.CUDA) == 0:
            raise BackendUnavailableError(
                f"No node of the swarm at {self.address.manager} is labelled {GPU_LABEL}=true: a CUDA cell has nowhere to run.",
                f"label the GPU nodes (`docker node update --label-add {GPU_LABEL}=true NODE`), or use --base cpu.",
            )
        image = self.local.ensure_image(spec, lock, log_dir)
        name = image.tag.split("/")[-1]
        push = f"{self.address.registry_push}/{name}"
        with self._lock:
            fresh = image.image_id not in self._pushed
        if fresh:
            with self.progress.step(spec.label, f"pushing {push}"):
                try:
                    self.local.engine.push(image.tag, push, log_dir / f"{spec.key}.push.log")
                except DockerError as exc:
                    raise BackendUnavailableError(
                        f"Pushing {image.tag} to the registry {self.address.registry_push} failed: {exc.what}",
                        "check that the registry answers (`curl http://HOST:PORT/v2/`) and that this engine "
                        "trusts it (an insecure registry must be listed in its daemon.json).",
                    ) from exc
            with self._lock:
                self._pushed.add(image.image_id)
        return SwarmImage(image, f"{self.address.registry_pull}/{name}")

    # -- runs --------------------------------------------------------------------------
    @contextmanager
    def launch(
        self,
        spec: EnvSpec,
        scenario: Scenario,
        prepared: SwarmImage,
        outdir: Path,
        traced: Traced | None = None,
    ) -> Iterator[Launch]:
        if traced is not None:
            raise TraceError(
                f"{spec.label}: runs of single probes (traced or not) do not go to a swarm.",
                "run them on the local engine (the Docker backend, with the same images): the "
                "narrowing does so for a swarm's bisection.",
            )
        service = f"tfbisect-{spec.key.replace('.', '_')}-{uuid.uuid4().hex[:8]}"
        task = {
            "manager": self.address.manager,
            "service": service,
            "config": f"{service}-scenario",
            "image": prepared.pull,
            "scenario": str(scenario.path),
            # What follows `python` in the container; a plain script runs under the harness,
            # which goes in as a second config.
            "arguments": scenario.arguments(f"/scenario/{scenario.path.name}", HARNESS_PATH),
            **({"harness": str(harness_path()), "harness_path": HARNESS_PATH} if scenario.script else {}),
            "user": USER,
            "env": [f"{k}={v}" for k, v in spec.env_vars().items() if k not in TOKEN_VARIABLES],
            "memory_bytes": memory_bytes(MEMORY),
            "pids": PIDS,
            "constraints": [f"node.labels.{GPU_LABEL}==true"] if spec.flavour is Flavour.CUDA else [],
            "outdir": str(outdir),
        }
        task_file = outdir / "task.json"
        task_file.write_text(json.dumps(task))
        argv = [sys.executable, "-m", "tfbisect.envs.swarm_task", str(task_file)]
        extra: dict[str, object] = {
            "image": prepared.image.tag,
            "image_id": prepared.image.image_id,
            "image_pulled_as": prepared.pull,
            "base_image": prepared.image.base.ref,
            "base_image_id": prepared.image.base.image_id,
            "flavour": spec.flavour.value,
            "swarm_manager": self.address.manager,
            "service": service,
            "gpu_visible": False,
        }
        check = self.local.cuda_check(prepared.image)
        if check is not None:
            extra["cuda_check"] = check
        try:
            yield Launch(
                argv=argv,
                env={k: v for k, v in os.environ.items() if k not in TOKEN_VARIABLES},
                extra=extra,
                shown=shown_command(task),
                results=outdir / "out",
            )
        finally:
            self.remove(service)

    def remove(self, service: str) -> None:
        """The run's services (a retry has its own) and its config, whatever state they are in.
        Never raises: the run's result is stored whatever the manager answers now."""
        with suppress(DockerError, BackendUnavailableError, *ENGINE_FAILURES):
            api = self.manager.api
            for found in api.services(filters={"name": service}):  # type: ignore[no-untyped-call]
                with suppress(*ENGINE_FAILURES, KeyError, TypeError):
                    api.remove_service(found["ID"])  # type: ignore[no-untyped-call]
            for found in api.configs(filters={"name": f"{service}-scenario"}):  # type: ignore[no-untyped-call]
                with suppress(*ENGINE_FAILURES, KeyError, TypeError):
                    api.remove_config(found["ID"])  # type: ignore[no-untyped-call]

    def source_places(self, spec: EnvSpec, prepared: SwarmImage, lock: Lock) -> list[Path]:
        """The wheels the image was built from here (the local engine builds every swarm image)."""
        return self.local.source_places(spec, prepared.image, lock)

    def ended(self, launch: Launch, finished: Finished, has_result: bool) -> Ended:
        """The task's end, from what swarm_task.py wrote: the node, a task the swarm lost."""
        task = jsonread.read(Path(launch.argv[-1]), max_bytes=None)
        folder = Path(task["outdir"])
        if finished.timed_out:
            states = read_json(folder / "progress.json").get("states") or []
            if "running" not in states:  # never started: no node took it, or it was still pulling
                seen = ", ".join(str(s) for s in states[-3:]) or "not even created"
                return Ended(
                    exit_code=None, unstarted=f"the swarm task never started within the timeout ({seen})"
                )
            return Ended(exit_code=None)
        ended = read_json(folder / "ended.json")
        if "state" not in ended and not ended.get("unstarted"):
            return Ended(
                exit_code=finished.exit_code,
                unstarted=f"the swarm run ended without saying how (exit {finished.exit_code}); see its log",
            )
        if ended.get("node"):
            launch.extra["node"] = str(ended["node"])[:200]
        attempts = ended.get("attempts") or []
        if len(attempts) > 1:
            tried = [
                {"node": a.get("node"), "state": a.get("state")} for a in attempts if isinstance(a, dict)
            ]
            launch.extra["attempts"] = tried
            lost = tried[0]
            self.progress.say(
                f"[{task['service']}] node {lost['node']} lost the run ({lost['state']}); "
                f"it ran again on {ended.get('node') or 'another node'}"
            )
        if ended.get("unstarted"):
            return Ended(exit_code=finished.exit_code, unstarted=str(ended["unstarted"])[:1000])
        code = finished.exit_code
        if code is not None and 128 < code < 128 + signal.NSIG:
            code = -(code - 128)  # the task's init reports a child killed by signal N as 128+N
        return Ended(exit_code=code)


def read_json(path: Path) -> dict[str, Any]:
    """A file swarm_task.py wrote (from what it read of hostile output): {} when unreadable."""
    try:
        found = jsonread.read(path, max_bytes=1024 * 1024)
    except (OSError, ValueError, RecursionError):
        return {}
    return found if isinstance(found, dict) else {}


def csv_field(text: str) -> str:
    """A `--config`/`--mount` value as Docker's CSV parser reads it back: quoted once it holds a
    comma or a quote (after the first, which separates source from target)."""
    source, _, target = text.partition(",")
    if "," in target or '"' in target:
        target = '"' + target.replace('"', '""') + '"'
    return f"{source},{target}"


def memory_bytes(text: str) -> int:
    unit = text[-1].lower()
    return int(float(text[:-1]) * UNITS[unit]) if unit in UNITS else int(text)


def shown_command(task: dict[str, object]) -> str:
    """The run as a user can paste it against the manager (the config made from the scenario)."""
    scenario = Path(str(task["scenario"]))
    manager = str(task["manager"])
    host = [] if manager == DEFAULT_HOST else ["-H", manager]
    arguments = [str(word) for word in task.get("arguments", [f"/scenario/{scenario.name}"])]  # type: ignore[attr-defined]
    harness_config: list[str] = []
    harness_create: list[list[str]] = []
    if task.get("harness"):
        harness_config = ["--config", csv_field(f"source=tfbisect-harness,target={task['harness_path']}")]
        harness_create = [["docker", *host, "config", "create", "tfbisect-harness", str(task["harness"])]]
    create = [
        *("docker", *host, "service", "create", "--replicas", "1", "--restart-condition", "none"),
        *("--read-only", "--user", str(task["user"]), "--limit-memory", str(task["memory_bytes"])),
        *("--limit-pids", str(task.get("pids", PIDS))),
        *(f"--env={variable}" for variable in task.get("env", [])),  # type: ignore[attr-defined]
        *("--mount", "type=tmpfs,dst=/tmp", "--mount", "type=tmpfs,dst=/home/tfbisect"),
        *(f"--constraint={c}" for c in task["constraints"]),  # type: ignore[attr-defined]
        *("--config", csv_field(f"source=tfbisect-repro,target=/scenario/{scenario.name}")),
        *harness_config,
        str(task["image"]),
        *("python", *arguments, "--output", "/tmp/result.json"),
    ]
    config = ["docker", *host, "config", "create", "tfbisect-repro", str(scenario)]
    configs = shlex.join(config) + "".join(f" && {shlex.join(made)}" for made in harness_create)
    return configs + " && " + shlex.join(create)


@dataclass(frozen=True)
class SwarmConfig:
    address: SwarmAddress
    base_image: str | None = None  # a user-named base image, as for the Docker backend


def _configure(options: Options) -> SwarmConfig:
    def text(name: str) -> str | None:
        value = option(options, name)
        return str(value) if value else None

    address = address_from(text("docker_host"), text("registry"), text("registry_pull"))
    return SwarmConfig(address, text("base_image"))


def _make(config: SwarmConfig, context: Context) -> SwarmBackend:
    return SwarmBackend(context.cache_dir, context.progress, config.address, user_base=config.base_image)


def _check(config: SwarmConfig, progress: Progress) -> None:
    """The local engine that builds the images, the manager and the registry, before any work."""
    connect(progress, host=os.environ.get("TFBISECT_BUILD_HOST", DEFAULT_HOST))
    manager_engine(config.address, progress)
    check_registry(config.address)


def _capacity(backend: SwarmBackend, flavour: Flavour) -> int:
    capacity = backend.capacity(flavour)
    backend.progress.say(
        f"the swarm has {capacity} ready node(s) for {flavour.value} cells: --jobs {capacity or 1}"
    )
    return capacity


REGISTRATION = Registration(
    name=SwarmBackend.name,
    configure=_configure,
    make=_make,
    describe=lambda fallback: (
        f"services on a Docker Swarm (Swarm backend; images from {DOCKERFILE}, built here, pushed)"
    ),
    check=_check,
    capacity=_capacity,
    traced_by=DockerBackend.name,  # its images were built on the local engine, which runs them
)
