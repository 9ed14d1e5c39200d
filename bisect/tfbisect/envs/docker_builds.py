"""What makes images in the Docker engine: builds (the classic builder), pulls, pushes and
imports; the streaming requests among them read on a connection of their own, with a deadline,
and cancelled by a stop signal (`cancel_all`)."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests

from tfbisect.core import interrupt, priority
from tfbisect.core.errors import DockerError
from tfbisect.core.limits import PIPE_GRACE_SECONDS
from tfbisect.envs.docker_calls import EngineCalls, clean, reason, shown
from tfbisect.platform.process import Finished
from tfbisect.platform.process import _Output as BoundedLog


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
    cpu_shares: int | None = None  # low priority (a prefetch's build): see `low_priority_thread`
    # A failed build's own step images are removed as a cancelled one's are (a proof's layer:
    # nothing retries it, so they would only be left behind).
    clean_failed: bool = False

    def argv(self) -> list[str]:
        args = ["build", "--force-rm", "--network", self.network, "--file", str(self.dockerfile)]
        if self.cpu_shares is not None:
            args += ["--cpu-shares", str(self.cpu_shares)]
        args += ["--target", self.target, "--tag", self.tag]
        for key, value in self.build_args.items():
            args += ["--build-arg", f"{key}={value}"]
        for key, value in self.labels.items():
            args += ["--label", f"{key}={value}"]
        return shown(*args, str(self.context))

    def sdk_arguments(self) -> dict[str, Any]:
        """`APIClient.build`'s arguments: `rm` and `forcerm` (`docker build --force-rm`) remove
        the intermediate containers of every build, also of one that fails or is cancelled: a
        failing `pip install` step's container holds gigabytes, and nothing else would remove it."""
        return {
            "path": str(self.context),
            "dockerfile": str(self.dockerfile),
            "tag": self.tag,
            "target": self.target,
            "buildargs": dict(self.build_args),
            "labels": dict(self.labels),
            "network_mode": self.network,
            "rm": True,
            "forcerm": True,
            "decode": True,
            **({"container_limits": {"cpushares": self.cpu_shares}} if self.cpu_shares is not None else {}),
        }


# -- low priority: a prefetch's builds (search/prefetch.py) ----------------------------------------
# The prefetch thread runs niced, and the installs it starts inherit that; an image build runs in
# the engine instead, so a build asked for from a niced thread gets the fewest CPU shares the
# engine accepts (2): its steps' containers yield the CPU to the runs a search waits for.
LOW_CPU_SHARES = 2


# A step container hurried (core/priority.py: a run now waits for this build) gets the engine's
# default CPU shares back.
DEFAULT_CPU_SHARES = 1024
_STEP = re.compile(r"^Step \d+/\d+ :")
_RUNNING = re.compile(r"^---> Running in ([0-9a-f]{12,64})$")
_MADE = re.compile(r"^---> ([0-9a-f]{12,64})$")


class StepTrail:
    """What a classic build's output says it made, step by step: the container of the step
    running now, and the images its steps committed (not those it took from the cache): the ones
    to remove when the build is cancelled, since nothing else would (each is an untagged image)."""

    def __init__(self) -> None:
        self.container: str | None = None
        self.made: list[str] = []
        self._cached = False

    def feed(self, text: str) -> str | None:
        """Read one piece of the build's output; the id of a step container it starts, if any."""
        started = None
        for line in text.splitlines():
            line = line.strip()
            if _STEP.match(line):
                self._cached, self.container = False, None
            elif line == "---> Using cache":
                self._cached = True
            elif found := _RUNNING.match(line):
                self.container = started = found.group(1)
            elif (found := _MADE.match(line)) and not self._cached:
                self.made.append(found.group(1))
                self.container = None
        return started


def low_priority_thread() -> bool:
    """Whether the calling thread runs at a lower CPU priority than the process's main thread."""
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) > os.getpriority(
            os.PRIO_PROCESS, os.getpid()
        )
    except (OSError, AttributeError):  # no per-thread priorities here: every build as asked
        return False


def shares_ahead(low_priority: bool | None = None) -> int | None:
    """The CPU shares of a container started now: the fewest (LOW_CPU_SHARES) for work ahead of
    need (from a niced thread: a prefetch's, core/priority.py) that no run waits for yet, else
    None, the engine's default.  `low_priority`: whether the thread is niced (default: asked)."""
    urgency = priority.current()
    low = low_priority_thread() if low_priority is None else low_priority
    return LOW_CPU_SHARES if low and not (urgency and urgency.urgent) else None


def raise_shares(api: Any, container: str) -> None:
    """A run waits for this container now: the engine's default shares.  A speed-up only: a
    container already gone (a step over, a run ended) is no failure."""
    with contextlib.suppress(Exception):
        api.update_container(container, cpu_shares=DEFAULT_CPU_SHARES)


class _Stream:
    """One streaming request on a connection of its own, which `cancel` shuts from any thread
    (and `also` ends what the stream follows: a container whose log it reads)."""

    def __init__(self, also: Callable[[], None] | None = None) -> None:
        self.lock = threading.Lock()
        self.cancelled = False
        self.response: requests.Response | None = None
        self.also = also

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
        if self.also is not None:  # first: shutting a followed log's response may wait for its end
            with contextlib.suppress(Exception):
                self.also()
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
    cancelled: bool = False  # by the deadline or a stop: the engine stopped the request mid-way
    errors: str = ""  # the errors the stream reported
    failure: str = ""  # why the request itself failed


@dataclass(frozen=True)
class Builds(EngineCalls):
    params: dict[str, Any] = field(default_factory=dict)  # the client's connection (address, TLS)

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

    def build(
        self, request: BuildRequest, log_path: Path, timeout: float, *, low_priority: bool | None = None
    ) -> Finished:
        """Build with the classic builder, each line of its output written to `log_path` as it
        arrives (the log keeps its head and tail, like a run's); exit code 0 or 1, None on timeout.
        A stop signal cancels the build and raises `interrupt.Interrupted`; cancelled otherwise (a
        build ahead the search no longer needs, core/priority.py), it raises a DroppedError.  Either
        way the untagged images its own steps made are removed.  `low_priority` (default: whether
        the calling thread is niced, as a prefetch's is): LOW_CPU_SHARES, until it is hurried."""
        urgency = priority.current()
        if urgency is not None and urgency.dropped:
            raise _dropped(request)
        if request.cpu_shares is None:
            request = dataclasses.replace(request, cpu_shares=shares_ahead(low_priority))
        argv = request.argv()
        self._echo(argv)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        trail = StepTrail()
        with open(log_path, "wb") as log:
            output = BoundedLog(log, None)
            output.write(("$ " + shlex.join(argv) + "\n").encode("utf-8", "replace"))
            lock = threading.Lock()
            hurried = False

            def hurry() -> None:
                # A run waits for this build now: its step containers get the default shares.
                nonlocal hurried
                with lock:
                    hurried, step = True, trail.container
                if step is not None and request.cpu_shares is not None:
                    raise_shares(self.api, step)

            forget = urgency.on_hurry(hurry) if urgency is not None else (lambda: None)

            def on_item(item: object) -> None:
                text = _build_text(item)
                with lock:
                    output.feed(text.encode("utf-8", "replace"))
                    started, raise_it = trail.feed(text), hurried
                if started is not None and raise_it and request.cpu_shares is not None:
                    raise_shares(self.api, started)

            try:
                done = self._stream(
                    lambda api: api.build(**request.sdk_arguments()), on_item, timeout, urgency
                )
            except BaseException:
                forget()
                self._remove_cancelled(trail)
                raise
            forget()
            if (done.cancelled or request.clean_failed) and not done.ok:
                self._remove_cancelled(trail)
                if done.cancelled and not done.timed_out:
                    # Stopped from outside (the search moved past it, or is over): no failure
                    # of the build, so nothing to retry and no wheel to check.
                    interrupt.check()  # by a stop signal: the stop goes on
                    raise _dropped(request)
            code = None if done.timed_out else (0 if done.ok else 1)
            with lock:
                return closed_log(output, done, timeout, "the build was cancelled", code)

    def _remove_cancelled(self, trail: StepTrail, patience: float = 10.0) -> None:
        """Remove the untagged images a cancelled build's own steps committed (`docker rmi`
        without force, which also removes their untagged parents): never a tagged image, never
        one another image is built on, never one from the cache.  The engine removes the step
        container the build was running in after the cancel; until then its image is in use."""
        deadline = time.monotonic() + patience
        for image in reversed(trail.made):
            while True:
                try:
                    found = self.api.inspect_image(image)  # type: ignore[no-untyped-call]  # untyped in types-docker
                    tags = found.get("RepoTags") or []
                    if any(tag != "<none>:<none>" for tag in tags):
                        break
                    self.api.remove_image(image, force=False, noprune=False)
                    break
                except docker.errors.NotFound:
                    break
                except docker.errors.APIError as exc:
                    in_use = exc.status_code == 409 and "container" in str(exc.explanation or "")
                    if not in_use or time.monotonic() >= deadline:
                        break
                    time.sleep(0.25)
                except Exception:  # the engine is gone: nothing to remove now
                    return

    def _stream(
        self,
        request: Callable[[docker.APIClient], Iterable[Any]],
        on_item: Callable[[object], None],
        timeout: float,
        urgency: priority.Urgency | None = None,
        also: Callable[[], None] | None = None,
    ) -> Streamed:
        """Read a streaming engine call on a connection of its own, in a thread, while this one
        watches the deadline and stop signals and cancels the call on either (or when `urgency`,
        a build ahead's, is dropped: no run needs it any more)."""
        interrupt.check()
        start = time.monotonic()
        deadline = start + timeout
        stream = _Stream(also)
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
                        errors.append(clean(str(item.get("error"))))
            except Exception as exc:  # a cancelled read fails in any way the HTTP stack has
                if not stream.cancelled:
                    failures.append(reason(exc))

        reader = threading.Thread(target=read, daemon=True, name="docker-stream")
        with _LIVE_LOCK:
            _LIVE.add(stream)
        forget = urgency.on_drop(stream.cancel) if urgency is not None else (lambda: None)
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
            forget()
            with _LIVE_LOCK:
                _LIVE.discard(stream)
            api.close()
        return Streamed(
            # A cancelled request is never a success, whatever the engine had sent until then.
            ok=not timed_out and not stream.cancelled and not errors and not failures,
            timed_out=timed_out,
            cancelled=stream.cancelled,
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


def closed_log(
    output: BoundedLog, done: Streamed, timeout: float, stopped: str, code: int | None
) -> Finished:
    """A streamed request's end: the engine's failure and the deadline noted in its log (the
    stream's own errors are there already), the log closed, the request's `Finished`."""
    if done.failure:
        output.feed(f"\nthe engine failed: {done.failure}\n".encode("utf-8", "replace"))
    if done.timed_out:
        output.feed(f"\n[tfbisect: {stopped} after {timeout:g}s]\n".encode())
    tail = output.close()
    return Finished(
        exit_code=code,
        timed_out=done.timed_out,
        log_tail=tail,
        seconds=done.seconds,
        log_error=output.log_error,
    )


def _dropped(request: BuildRequest) -> priority.DroppedError:
    return priority.DroppedError(
        f"the build of {request.tag} was cancelled: the search no longer needs it",
        "nothing to do; a run that needs the image builds it.",
    )


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
