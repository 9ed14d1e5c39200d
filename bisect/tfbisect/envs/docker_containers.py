"""Containers in the Docker engine: the `docker` command lines the backends run (against the
engine the SDK talks to), a run container's name and removal, its state, and the short-lived
containers that read a file from an image or run one command in it."""

from __future__ import annotations

import base64
import binascii
import contextlib
import datetime as dt
import io
import os
import shlex
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import docker.types

from tfbisect.core import interrupt, jsonread
from tfbisect.core.errors import DockerError
from tfbisect.envs.docker_calls import FAILURES, EngineCalls, shown

# Every run container carries its deadline (seconds since the epoch) as a label: after it, the
# container is removed by whichever tfbisect next talks to the engine, even if its driver died.
DEADLINE_LABEL = "tfbisect.deadline"
KEEP_LABEL = "tfbisect.keep"  # --keep-containers: an ended one is left for debugging
# A `docker build` step's container passes the Dockerfile's build arguments in its environment
# and command; this one is tfbisect's own (Dockerfile: ARG WHEELS_URL).
BUILD_MARK = "WHEELS_URL="
# The Dockerfile's base ENV, which every step of its builds from then on carries.
BUILD_ENV = ("VIRTUAL_ENV=/opt/venv", "TF_CPP_MIN_LOG_LEVEL=2")
# How long an ended step container of a build must have sat before a sweep takes it for a
# leftover (a build in another process commits its step's container within seconds).
BUILD_LEFTOVER_AGE_S = 15 * 60
SITE_MOUNT = "/opt/venv"  # where a site volume is mounted (envs/docker_volumes.py)


@dataclass(frozen=True)
class Containers(EngineCalls):
    host: str  # the engine's address, as DOCKER_HOST names it
    binary: str = "docker"  # the CLI that runs the containers (`docker run`)

    def command(self, *args: str) -> list[str]:
        """A command line the CLI runs (`docker run`), against the engine the SDK talks to (`run_env`)."""
        return [self.binary, *args]

    def run_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """The environment of a `command`: DOCKER_HOST names the same engine as the SDK's."""
        return {**env, "DOCKER_HOST": self.host}

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

    def container_state(self, name: str) -> dict[str, object]:
        """The container's `.State` (ExitCode, OOMKilled …), or {} when it is gone or the engine fails."""
        try:
            state = self.api.inspect_container(name).get("State")
        except FAILURES:
            return {}
        return dict(state) if isinstance(state, dict) else {}

    def read_file(self, image: str, path: str, limit: int, *, volume: str | None = None) -> bytes | None:
        """A regular file's bytes from an image, without running anything in it (`docker cp` from
        a created, never started container); None when it is missing, not a regular file, over
        `limit` bytes, or the engine fails.  With `volume`, a site volume is mounted (read-only,
        never copied into: a volume that is not there stays empty) where runs mount it."""
        argv = shown("cp", f"{image}:{path}", "-")
        self._echo(argv)
        container = None
        mounts = (
            [] if volume is None else [docker.types.Mount(SITE_MOUNT, volume, read_only=True, no_copy=True)]
        )
        try:
            container = self.api.create_container(
                image,
                command=["true"],
                network_disabled=True,
                host_config=self.api.create_host_config(mounts=mounts) if mounts else None,
            )
            # The archive endpoint by hand, so that the response is closed on every path (the
            # SDK's get_archive leaves it open when its stream is not read to the end).
            api: Any = self.api
            url = api._url("/containers/{0}/archive", container["Id"])
            response = api._get(url, params={"path": path}, stream=True)
            try:
                api._raise_for_status(response)
                header = response.headers.get("X-Docker-Container-Path-Stat", "")
                stat = jsonread.loads(base64.b64decode(header) or b"{}")
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
        except (*FAILURES, tarfile.TarError, ValueError, binascii.Error):
            return None
        finally:
            if container is not None:
                with contextlib.suppress(*FAILURES):
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
        except FAILURES:
            return ""
        finally:
            if container is not None:
                with contextlib.suppress(*FAILURES):
                    self.api.remove_container(container, force=True)

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
        with interrupt.held(), contextlib.suppress(*FAILURES):
            self.api.remove_container(name, force=True)

    def sweep_leftovers(self) -> int:
        """Remove what tfbisect left in the engine: run containers past their deadline (running or
        not: their driver is gone or killed them already) and the ended containers of its own
        builds (a build cancelled or killed before `forcerm` could act).  Returns how many went."""
        removed = 0
        now = time.time()
        try:
            runs = self.api.containers(all=True, filters={"label": DEADLINE_LABEL})
            ended = self.api.containers(all=True, filters={"status": ["exited", "created", "dead"]})
        except FAILURES:
            return 0
        for found in runs:
            labels = found.get("Labels") or {}
            try:
                deadline = float(labels.get(DEADLINE_LABEL, "inf"))
            except ValueError:
                continue
            kept = labels.get(KEEP_LABEL) == "1" and found.get("State") != "running"
            if deadline < now and not kept:
                removed += self._remove_quietly(str(found["Id"]))
        for found in ended:
            if DEADLINE_LABEL not in (found.get("Labels") or {}) and self._is_left_build_step(
                str(found["Id"]), now
            ):
                removed += self._remove_quietly(str(found["Id"]))
        return removed

    def _is_left_build_step(self, container: str, now: float) -> bool:
        """A step container of one of tfbisect's builds that no build will commit any more.  A
        build running in another tfbisect process has its step's container for seconds between
        the step's end and its commit (and a created one before it starts): only one that has
        sat there for BUILD_LEFTOVER_AGE_S is a leftover."""
        try:
            found = self.api.inspect_container(container)
        except FAILURES:
            return False
        if not _from_our_build(found.get("Config") or {}):
            return False
        state = found.get("State") or {}
        since = state.get("FinishedAt") if state.get("Status") == "exited" else found.get("Created")
        moment = _moment(since)
        return moment is not None and now - moment > BUILD_LEFTOVER_AGE_S

    def _remove_quietly(self, container: str) -> int:
        try:
            self.api.remove_container(container, force=True)
        except FAILURES:
            return 0
        return 1


def _from_our_build(config: dict[str, object]) -> bool:
    """Whether a container's config is that of a step of tfbisect's Dockerfile: a RUN step passes
    its build arguments (WHEELS_URL), a later step carries the image's tfbisect.* labels, and every
    step from the base stage's ENV on carries that ENV (a metadata step such as `ARG NVIDIA_REST`,
    left `Created` when its build was cancelled, has nothing else of ours)."""
    env, cmd, labels = config.get("Env") or [], config.get("Cmd") or [], config.get("Labels") or {}
    words = (
        [w for w in [*env, *cmd] if isinstance(w, str)]
        if isinstance(env, list) and isinstance(cmd, list)
        else []
    )
    if any(BUILD_MARK in w for w in words):
        return True
    if isinstance(labels, dict) and any(str(k).startswith("tfbisect.") for k in labels):
        return True
    text = " ".join(words)
    return all(part in text for part in BUILD_ENV)


def _moment(text: object) -> float | None:
    """An engine's RFC 3339 time (`2026-12-05T14:41:59.123456789Z`) in epoch seconds; None when absent."""
    if not isinstance(text, str) or text.startswith("0001-"):
        return None
    try:
        return dt.datetime.fromisoformat(text[:26].rstrip("Z") + "+00:00").timestamp()
    except ValueError:
        return None
