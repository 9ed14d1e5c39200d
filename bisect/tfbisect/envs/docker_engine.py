"""The Docker engine through the Docker SDK for Python; every call that changes something is
echoed as the `docker …` command line that does the same, so that users can paste it.

- The client negotiates the API version with the engine (`version="auto"`: Debian's 20.10
  engine speaks 1.41) and honours DOCKER_HOST, DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.
- Builds use the classic builder (the engine's `/build` endpoint, as `DOCKER_BUILDKIT=0 docker
  build` does) and stream their output into the build log as it arrives, bounded like a run's
  log (`process.run_logged`), with a deadline: a build that outlives it, or a stop signal, is
  cancelled by closing its connection (the engine then stops the step and removes its container).
- Runs are not here: `backend_docker` launches `docker run` under `process.run_logged` (the hard
  timeout, the bounded output and the interrupt handling are the venv backend's), with
  DOCKER_HOST set to the engine the SDK talks to; the SDK then reads the container's state and
  removes it (`container_name`).

`Engine` is the facade the backends and the bench call; the work is split by job: `docker_images`
(what the engine knows about its images), `docker_builds` (builds, pulls, pushes, imports, and
the streams a stop signal cancels), `docker_containers` (the `docker` command lines, containers
and their removal), on `docker_calls` (the echo and the errors every call shares).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.utils

from tfbisect.core.errors import BackendUnavailableError
from tfbisect.core.progress import Progress
from tfbisect.envs.docker_builds import BuildRequest as BuildRequest
from tfbisect.envs.docker_builds import Builds
from tfbisect.envs.docker_builds import cancel_all as cancel_all
from tfbisect.envs.docker_calls import FAILURES as _FAILURES
from tfbisect.envs.docker_calls import reason as _reason
from tfbisect.envs.docker_containers import Containers
from tfbisect.envs.docker_images import Images
from tfbisect.envs.docker_volumes import FillRequest as FillRequest
from tfbisect.envs.docker_volumes import Volumes
from tfbisect.platform.process import Finished

DEFAULT_HOST = "unix:///var/run/docker.sock"  # the SDK's and the CLI's default on Linux
REQUEST_TIMEOUT = 300  # seconds one request may wait for the engine (removing a big image is slow)
ENGINE_FAILURES = _FAILURES  # what an engine call can raise (for the backends that call it directly)


@dataclass(frozen=True)
class Engine:
    """One Docker engine as the backends and the bench call it: a thin facade over its jobs,
    which share its client, its progress and its echo."""

    progress: Progress
    client: docker.DockerClient
    host: str  # the engine's address, as DOCKER_HOST names it
    params: dict[str, Any] = field(default_factory=dict)  # the client's connection (address, TLS)
    binary: str = "docker"  # the CLI that runs the containers (`docker run`)
    echo: bool = True
    images: Images = field(init=False, repr=False, compare=False)
    builds: Builds = field(init=False, repr=False, compare=False)
    containers: Containers = field(init=False, repr=False, compare=False)
    volumes: Volumes = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        shared = (self.progress, self.client, self.echo)
        # Frozen: the jobs are made once, here, from the fields they share.
        object.__setattr__(self, "images", Images(*shared))
        object.__setattr__(self, "builds", Builds(*shared, params=self.params))
        object.__setattr__(self, "containers", Containers(*shared, host=self.host, binary=self.binary))
        object.__setattr__(self, "volumes", Volumes(*shared, params=self.params))

    @property
    def api(self) -> docker.APIClient:
        return self.client.api

    # -- images and the engine itself: `docker_images` -----------------------------------
    def info(self) -> dict[str, object]:
        return self.images.info()

    def has_nvidia_runtime(self) -> bool:
        return self.images.has_nvidia_runtime()

    def image_inspect(self, ref: str) -> dict[str, object] | None:
        return self.images.image_inspect(ref)

    def image_labels(self, ref: str) -> dict[str, str]:
        return self.images.image_labels(ref)

    def image_id(self, ref: str) -> str | None:
        return self.images.image_id(ref)

    def image_layers(self, ref: str) -> list[str]:
        return self.images.image_layers(ref)

    def image_step_sizes(self, ref: str) -> list[int]:
        return self.images.image_step_sizes(ref)

    def image_repo_digest(self, ref: str) -> str | None:
        return self.images.image_repo_digest(ref)

    def image_list(self, reference: str) -> list[tuple[str, int]]:
        return self.images.image_list(reference)

    def remove_image(self, ref: str) -> None:
        self.images.remove_image(ref)

    # -- what makes images: `docker_builds` ------------------------------------------------
    def build(self, request: BuildRequest, log_path: Path, timeout: float) -> Finished:
        return self.builds.build(request, log_path, timeout)

    def pull(self, ref: str, timeout: float = 600) -> None:
        self.builds.pull(ref, timeout)

    def push(self, image: str, ref: str, log_path: Path) -> None:
        self.builds.push(image, ref, log_path)

    def import_rootfs(self, tar: Path, ref: str, changes: Sequence[str]) -> None:
        self.builds.import_rootfs(tar, ref, changes)

    # -- site volumes: `docker_volumes` ------------------------------------------------------
    def volume_labels(self, name: str) -> dict[str, str] | None:
        return self.volumes.volume_labels(name)

    def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        self.volumes.create_volume(name, labels)

    def remove_volume(self, name: str) -> bool:
        return self.volumes.remove_volume(name)

    def site_volumes(self) -> dict[str, dict[str, str]]:
        return self.volumes.site_volumes()

    def fill_volume(self, request: FillRequest, log_path: Path, timeout: float) -> Finished:
        return self.volumes.fill_volume(request, log_path, timeout)

    # -- containers: `docker_containers` ---------------------------------------------------
    def command(self, *args: str) -> list[str]:
        return self.containers.command(*args)

    def run_env(self, env: Mapping[str, str]) -> dict[str, str]:
        return self.containers.run_env(env)

    def capture(self, *args: str, check: bool = True, quiet: bool = False, timeout: float = 300) -> str:
        return self.containers.capture(*args, check=check, quiet=quiet, timeout=timeout)

    def container_state(self, name: str) -> dict[str, object]:
        return self.containers.container_state(name)

    def sweep_leftovers(self) -> int:
        return self.containers.sweep_leftovers()

    def read_file(self, image: str, path: str, limit: int, *, volume: str | None = None) -> bytes | None:
        return self.containers.read_file(image, path, limit, volume=volume)

    def run_output(self, image: str, command: Sequence[str], timeout: float = 300) -> str:
        return self.containers.run_output(image, command, timeout)

    def container_name(self, stem: str, *, keep: bool = False) -> contextlib.AbstractContextManager[str]:
        return self.containers.container_name(stem, keep=keep)

    def remove_container(self, name: str) -> None:
        self.containers.remove_container(name)


def _reachable(host: str) -> None:
    """Connect to a unix socket and close it again: the SDK leaves the socket of a failed connect
    open (a ResourceWarning later); an OSError says why nothing answers."""
    if host.startswith("unix://"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(30)
            probe.connect(host.removeprefix("unix://"))


def connect(progress: Progress, *, echo: bool = True, host: str | None = None) -> Engine:
    """An engine that answers, or a message that says what to do without one: the one DOCKER_HOST
    names (with its TLS settings), or `host` when given (a swarm manager, the local builder)."""
    if host is None:
        params = docker.utils.kwargs_from_env()
    elif host.startswith("tcp://"):
        # With the TLS settings of the environment (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH).
        params = docker.utils.kwargs_from_env(environment={**os.environ, "DOCKER_HOST": host})
    else:
        params = {"base_url": host}
    host = params.get("base_url") or DEFAULT_HOST
    try:
        _reachable(host)
        # The API version both speak (`auto`: the engine's, e.g. 1.41 for Debian's 20.10).
        probe = docker.APIClient(version="auto", timeout=30, **params)
    except _FAILURES as exc:
        raise BackendUnavailableError(
            f"The Docker engine is not running (or this user may not use it): no answer at {host} "
            f"({_reason(exc)})",
            "start it (`dockerd &`, or `systemctl start docker`), or use --backend venv, which needs no Docker.",
        ) from None
    version = probe.api_version
    probe.close()
    binary = shutil.which("docker")
    if binary is None:
        raise BackendUnavailableError(
            f"The Docker client is not installed: the engine at {host} answers, but tfbisect runs each "
            "scenario with `docker run`.",
            "install the Docker CLI (e.g. `apt-get install docker.io`), or use --backend venv, which needs no Docker.",
        )
    client = docker.DockerClient(version=version, timeout=REQUEST_TIMEOUT, **params)
    # One connection per call, closed after it: an engine nobody closes holds no socket.
    client.api.headers["Connection"] = "close"
    return Engine(progress=progress, client=client, host=host, params=dict(params), binary=binary, echo=echo)


def environment_names(mapping: Mapping[str, str]) -> list[str]:
    out = []
    for key, value in mapping.items():
        out += ["--env", f"{key}={value}"]
    return out
