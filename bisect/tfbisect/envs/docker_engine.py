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
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import os
import shlex
import shutil
import socket
import subprocess
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils
import requests

from tfbisect.core import interrupt
from tfbisect.core.errors import BackendUnavailableError, DockerError
from tfbisect.core.limits import PIPE_GRACE_SECONDS
from tfbisect.core.process import Finished
from tfbisect.core.process import _Output as BoundedLog
from tfbisect.core.progress import Progress

DEFAULT_HOST = "unix:///var/run/docker.sock"  # the SDK's and the CLI's default on Linux
REQUEST_TIMEOUT = 300  # seconds one request may wait for the engine (removing a big image is slow)
_FAILURES = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)
ENGINE_FAILURES = _FAILURES  # what an engine call can raise (for the backends that call it directly)


def shown(*args: str) -> list[str]:
    """The `docker …` command line a user can paste for an engine call."""
    return ["docker", *args]


@dataclass(frozen=True)
class BuildRequest:
    """One `docker build`: the SDK call and its command line are made from these same fields."""

    dockerfile: Path
    context: Path
    tag: str
    target: str
    build_args: Mapping[str, str]
    labels: Mapping[str, str]
    network: str = "host"

    def argv(self) -> list[str]:
        args = ["build", "--network", self.network, "--file", str(self.dockerfile)]
        args += ["--target", self.target, "--tag", self.tag]
        for key, value in self.build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        for key, value in self.labels.items():
            args += ["--label", f"{key}={value}"]
        return shown(*args, str(self.context))

    def sdk_arguments(self) -> dict[str, Any]:
        """`APIClient.build`'s arguments; `rm` and `forcerm` as the CLI's defaults (remove the
        intermediate containers of a build that succeeds, keep the failing step's)."""
        return {
            "path": str(self.context),
            "dockerfile": str(self.dockerfile),
            "tag": self.tag,
            "target": self.target,
            "buildargs": dict(self.build_args),
            "labels": dict(self.labels),
            "network_mode": self.network,
            "rm": True,
            "forcerm": False,
            "decode": True,
        }


class _Stream:
    """One streaming request on a connection of its own, which `cancel` shuts from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.cancelled = False
        self.response: requests.Response | None = None

    def hook(self, response: requests.Response, *args: object, **kwargs: object) -> requests.Response:
        with self.lock:
            self.response = response
            cancelled = self.cancelled
        if cancelled:
            _shut(response)
        return response

    def cancel(self) -> None:
        with self.lock:
            self.cancelled = True
            response = self.response
        if response is not None:
            _shut(response)


def _shut(response: requests.Response) -> None:
    """Close the connection a streamed body is read from: a read blocked on it returns at once, and
    the engine, seeing its client gone, cancels the request (a build stops and cleans up)."""
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    if isinstance(sock, socket.socket):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(Exception):
        response.close()


_LIVE: set[_Stream] = set()
_LIVE_LOCK = threading.Lock()


def cancel_all() -> None:
    """Cancel every build and pull in progress (a stop signal arrived)."""
    with _LIVE_LOCK:
        streams = list(_LIVE)
    for stream in streams:
        stream.cancel()


interrupt.on_stop(cancel_all)


@dataclass(frozen=True)
class Streamed:
    ok: bool
    timed_out: bool
    seconds: float
    errors: str = ""  # the errors the stream reported
    failure: str = ""  # why the request itself failed


@dataclass
class Engine:
    progress: Progress
    client: docker.DockerClient
    host: str  # the engine's address, as DOCKER_HOST names it
    params: dict[str, Any] = field(default_factory=dict)  # the client's connection (address, TLS)
    binary: str = "docker"  # the CLI that runs the containers (`docker run`)
    echo: bool = True
    _info: dict[str, object] = field(default_factory=dict)

    @property
    def api(self) -> docker.APIClient:
        return self.client.api

    def command(self, *args: str) -> list[str]:
        """A command line the CLI runs (`docker run`), against the engine the SDK talks to (`run_env`)."""
        return [self.binary, *args]

    def run_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """The environment of a `command`: DOCKER_HOST names the same engine as the SDK's."""
        return {**env, "DOCKER_HOST": self.host}

    def _echo(self, argv: Sequence[str]) -> None:
        if self.echo:
            self.progress.say("+ " + shlex.join(argv))

    @contextlib.contextmanager
    def _calling(self, argv: Sequence[str]) -> Iterator[None]:
        """An engine call's failure as a DockerError that names the equivalent command."""
        try:
            yield
        except _FAILURES as exc:
            raise DockerError(
                f"`{shlex.join(argv)}` failed: {_reason(exc)}",
                "see the message above; `docker info` tells whether the engine is healthy.",
            ) from exc

    def capture(self, *args: str, check: bool = True, quiet: bool = False, timeout: float = 300) -> str:
        """Run a `docker` CLI command and return its output (the benchmark lists images with it)."""
        argv = self.command(*args)
        if not quiet:
            self._echo(argv)
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=timeout, env=self.run_env(os.environ)
        )
        if check and done.returncode != 0:
            raise DockerError(
                f"`{shlex.join(argv)}` failed ({done.returncode}): {done.stderr.strip()[-800:]}",
                "see the message above; `docker info` tells whether the engine is healthy.",
            )
        return done.stdout

    # -- queries -----------------------------------------------------------------------
    def info(self) -> dict[str, object]:
        if not self._info:
            with self._calling(shown("info")):
                self._info.update(self.api.info())
        return self._info

    def has_nvidia_runtime(self) -> bool:
        runtimes = self.info().get("Runtimes") or {}
        return isinstance(runtimes, dict) and "nvidia" in runtimes

    def image_inspect(self, ref: str) -> dict[str, object] | None:
        """`docker image inspect REF`, or None when there is no such image."""
        try:
            with self._calling(shown("image", "inspect", ref)):
                found = self.api.inspect_image(ref)  # type: ignore[no-untyped-call]  # untyped in types-docker
        except DockerError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return None
            raise
        return dict(found) if isinstance(found, dict) else None

    def image_labels(self, ref: str) -> dict[str, str]:
        config = (self.image_inspect(ref) or {}).get("Config") or {}
        labels = config.get("Labels") if isinstance(config, dict) else None
        return {str(k): str(v) for k, v in (labels or {}).items()}

    def image_id(self, ref: str) -> str | None:
        found = self.image_inspect(ref)
        return str(found["Id"]) if found else None

    def image_layers(self, ref: str) -> list[str]:
        """The image's layers (`.RootFS.Layers`), bottom first; [] when there is no such image."""
        root = (self.image_inspect(ref) or {}).get("RootFS") or {}
        layers = root.get("Layers") if isinstance(root, dict) else None
        return [str(layer) for layer in layers] if isinstance(layers, list) else []

    def image_step_sizes(self, ref: str) -> list[int]:
        """The bytes each step of the image's history added (`docker history`), bottom first."""
        argv = shown("history", "--no-trunc", ref)
        self._echo(argv)
        with self._calling(argv):
            steps: Any = self.api.history(ref)  # type: ignore[no-untyped-call]
        return [int(step.get("Size", 0)) for step in reversed(steps) if isinstance(step, dict)]

    def image_repo_digest(self, ref: str) -> str | None:
        """The image's first registry digest (`name@sha256:…`); None for an image only built here."""
        digests = (self.image_inspect(ref) or {}).get("RepoDigests")
        return str(digests[0]) if isinstance(digests, list) and digests else None

    def image_ids(self, reference: str) -> set[str]:
        """The IDs of the images whose name matches (`docker images --quiet --no-trunc --filter reference=…`)."""
        with self._calling(shown("images", "--quiet", "--no-trunc", "--filter", f"reference={reference}")):
            found = self.api.images(filters={"reference": reference}, quiet=True)
        return {str(i) for i in found}

    def container_state(self, name: str) -> dict[str, object]:
        """The container's `.State` (ExitCode, OOMKilled …), or {} when it is gone or the engine fails."""
        try:
            state = self.api.inspect_container(name).get("State")
        except _FAILURES:
            return {}
        return dict(state) if isinstance(state, dict) else {}

    # -- changes -----------------------------------------------------------------------
    def remove_image(self, ref: str) -> None:
        argv = shown("image", "rm", "--force", ref)
        self._echo(argv)
        with contextlib.suppress(DockerError), self._calling(argv):
            self.api.remove_image(ref, force=True)

    def push(self, image: str, ref: str, log_path: Path) -> None:
        """Tag `image` as `ref` (REGISTRY/NAME:TAG) and push it; the registry keeps layers it has."""
        repository, _, tag = ref.rpartition(":")
        for argv, call in (
            (shown("tag", image, ref), lambda: self.api.tag(image, repository, tag)),
            (shown("push", ref), lambda: self._push(repository, tag, log_path)),
        ):
            self._echo(argv)
            with self._calling(argv):
                call()

    def _push(self, repository: str, tag: str, log_path: Path) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with log_path.open("a", encoding="utf-8") as log:
            for item in self.api.push(repository, tag=tag, stream=True, decode=True):
                if isinstance(item, dict) and item.get("error"):
                    raise docker.errors.APIError(str(item["error"])[:500])
                log.write(_build_text(item))

    def pull(self, ref: str, timeout: float = 600) -> None:
        """`docker pull --quiet REF`; a DockerError when it fails or takes longer than `timeout`."""
        argv = shown("pull", "--quiet", ref)
        self._echo(argv)
        # The SDK reads the tag (or digest) from the reference, `latest` when it names none.
        done = self._stream(lambda api: api.pull(ref, stream=True, decode=True), lambda item: None, timeout)
        if not done.ok:
            raise DockerError(
                f"`{shlex.join(argv)}` failed: "
                + (f"no answer in {timeout:g}s" if done.timed_out else done.failure or done.errors),
                "check that the registry is reachable from the engine, then run again.",
            )

    def build(self, request: BuildRequest, log_path: Path, timeout: float) -> Finished:
        """Build with the classic builder, each line of its output written to `log_path` as it
        arrives (the log keeps its head and tail, like a run's); exit code 0 or 1, None on timeout.
        A stop signal cancels the build and raises `interrupt.Interrupted`."""
        argv = request.argv()
        self._echo(argv)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            log.write(("$ " + shlex.join(argv) + "\n").encode("utf-8", "replace"))
            output = BoundedLog(log, None)
            lock = threading.Lock()

            def on_item(item: object) -> None:
                with lock:
                    output.feed(_build_text(item).encode("utf-8", "replace"))

            done = self._stream(lambda api: api.build(**request.sdk_arguments()), on_item, timeout)
            with lock:
                if done.failure:  # the stream's own errors are in the log already
                    output.feed(f"\nthe engine failed: {done.failure}\n".encode("utf-8", "replace"))
                if done.timed_out:
                    output.feed(f"\n[tfbisect: the build was cancelled after {timeout:g}s]\n".encode())
                tail = output.close()
        code = None if done.timed_out else (0 if done.ok else 1)
        return Finished(exit_code=code, timed_out=done.timed_out, log_tail=tail, seconds=done.seconds)

    def _stream(
        self,
        request: Callable[[docker.APIClient], Iterable[Any]],
        on_item: Callable[[object], None],
        timeout: float,
    ) -> Streamed:
        """Read a streaming engine call on a connection of its own, in a thread, while this one
        watches the deadline and stop signals and cancels the call on either."""
        interrupt.check()
        start = time.monotonic()
        deadline = start + timeout
        stream = _Stream()
        # A client of its own: its connection is this call's alone, and no read on it times out
        # before the deadline does.
        api = docker.APIClient(version=self.api.api_version, timeout=int(timeout) + 60, **self.params)
        api.hooks["response"].append(stream.hook)
        errors: list[str] = []
        failures: list[str] = []

        def read() -> None:
            try:
                for item in request(api):
                    if stream.cancelled:
                        return
                    on_item(item)
                    if isinstance(item, dict) and item.get("error"):
                        errors.append(_clean(str(item.get("error"))))
            except Exception as exc:  # a cancelled read fails in any way the HTTP stack has
                if not stream.cancelled:
                    failures.append(_reason(exc))

        reader = threading.Thread(target=read, daemon=True, name="docker-stream")
        with _LIVE_LOCK:
            _LIVE.add(stream)
        timed_out = False
        try:
            reader.start()
            while reader.is_alive():
                reader.join(timeout=0.2)
                if interrupt.stopping():
                    raise interrupt.current()
                if reader.is_alive() and time.monotonic() >= deadline:
                    timed_out = True
                    stream.cancel()
                    break
            reader.join(timeout=PIPE_GRACE_SECONDS)
        except BaseException:
            stream.cancel()
            reader.join(timeout=PIPE_GRACE_SECONDS)
            raise
        finally:
            with _LIVE_LOCK:
                _LIVE.discard(stream)
            api.close()
        return Streamed(
            ok=not timed_out and not errors and not failures,
            timed_out=timed_out,
            seconds=time.monotonic() - start,
            errors="\n".join(errors),
            failure="\n".join(failures),
        )

    def import_rootfs(self, tar: Path, ref: str, changes: Sequence[str]) -> None:
        """`docker import` of a root file system tarball as image REF."""
        argv = shown("import", *(a for c in changes for a in ("--change", c)), str(tar), ref)
        self._echo(argv)
        repository, _, tag = ref.partition(":")
        with self._calling(argv):
            self.api.import_image(src=str(tar), repository=repository, tag=tag or None, changes=list(changes))

    def read_file(self, image: str, path: str, limit: int) -> bytes | None:
        """A regular file's bytes from an image, without running anything in it (`docker cp` from
        a created, never started container); None when it is missing, not a regular file, over
        `limit` bytes, or the engine fails."""
        argv = shown("cp", f"{image}:{path}", "-")
        self._echo(argv)
        container = None
        try:
            container = self.api.create_container(image, command=["true"], network_disabled=True)
            # The archive endpoint by hand, so that the response is closed on every path (the
            # SDK's get_archive leaves it open when its stream is not read to the end).
            api: Any = self.api
            url = api._url("/containers/{0}/archive", container["Id"])
            response = api._get(url, params={"path": path}, stream=True)
            try:
                api._raise_for_status(response)
                header = response.headers.get("X-Docker-Container-Path-Stat", "")
                stat = json.loads(base64.b64decode(header) or b"{}")
                if not isinstance(stat, dict) or int(stat.get("size", 0)) > limit:
                    return None
                data = response.raw.read(limit + 64 * 1024 + 1)  # the tar's own headers and padding
            finally:
                response.close()
            if len(data) > limit + 64 * 1024:
                return None
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                member = tar.next()
                if member is None or not member.isreg() or member.size > limit:
                    return None
                found = tar.extractfile(member)
                return found.read(limit + 1) if found is not None else None
        except (*_FAILURES, tarfile.TarError, ValueError, binascii.Error):
            return None
        finally:
            if container is not None:
                with contextlib.suppress(*_FAILURES):
                    self.api.remove_container(container, force=True)

    def run_output(self, image: str, command: Sequence[str], timeout: float = 300) -> str:
        """`docker run --rm --network none IMAGE COMMAND…`'s standard output; '' when the command
        fails or cannot start (an image without it), or the engine fails."""
        argv = shown("run", "--rm", "--network", "none", image, *command)
        self._echo(argv)
        container = None
        try:
            container = self.api.create_container(
                image, command=list(command), host_config=self.api.create_host_config(network_mode="none")
            )
            self.api.start(container)
            ended = self.api.wait(container, timeout=int(timeout))
            if int(ended.get("StatusCode", 1)) != 0:
                return ""
            out = self.api.logs(container, stdout=True, stderr=False)
            return out.decode("utf-8", "replace") if isinstance(out, bytes) else str(out)
        except _FAILURES:
            return ""
        finally:
            if container is not None:
                with contextlib.suppress(*_FAILURES):
                    self.api.remove_container(container, force=True)

    # -- containers --------------------------------------------------------------------
    @contextlib.contextmanager
    def container_name(self, stem: str, *, keep: bool = False) -> Iterator[str]:
        """A unique container name, and the container removed on every way out."""
        name = f"tfbisect-{stem}-{uuid.uuid4().hex[:8]}"
        try:
            yield name
        finally:
            if keep:
                self.progress.say(
                    f"kept container {name} (--keep-containers); remove it with `docker rm -f {name}`"
                )
            else:
                self.remove_container(name)

    def remove_container(self, name: str) -> None:
        """`docker rm --force NAME`; nothing when there is no such container."""
        # A stop signal must not cut the removal short: it waits until the container is gone.
        with interrupt.held(), contextlib.suppress(*_FAILURES):
            self.api.remove_container(name, force=True)


def _build_text(item: object) -> str:
    """One item of a build's output stream as the CLI would print it."""
    if not isinstance(item, dict):
        return f"{item}\n"
    if "stream" in item:
        return str(item["stream"])
    if item.get("error"):
        return f"{item['error']}\n"
    if "status" in item:
        return " ".join(str(item[k]) for k in ("id", "status") if item.get(k)) + "\n"
    return ""  # aux (the image ID) and progress records


def _clean(text: str) -> str:
    return " ".join(text.split())[-800:]


def _reason(exc: BaseException) -> str:
    """The innermost cause, in words: "No such file or directory", "Permission denied" …"""
    if isinstance(exc, docker.errors.APIError):
        return _clean(str(exc.explanation or exc))
    seen: BaseException | None = exc
    deepest: BaseException = exc
    for _ in range(10):
        if seen is None:
            break
        deepest = seen
        nested = [a for a in getattr(seen, "args", ()) if isinstance(a, BaseException)]
        seen = seen.__cause__ or seen.__context__ or (nested[-1] if nested else None)
    if isinstance(deepest, OSError) and deepest.strerror:
        return deepest.strerror
    return _clean(str(deepest) or type(deepest).__name__)


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
