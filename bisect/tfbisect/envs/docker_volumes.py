"""Site volumes in the Docker engine: a named volume that holds one release's /opt/venv, filled
once by a short-lived container and mounted read-only by every run of that release.

Why a volume and not an image layer: committing a layer copies it (the classic builder tars
the step container's new files and unpacks them again into a layer, about 9 s for TF 2.9.3's
980 MB), while a container writes straight into a volume.  A cold release costs the install
and its import check, and nothing after them (see envs/docker_sites.py for what goes where).

A volume has no atomic "done" the way a tagged image has, so the filling container writes a
marker file last (`MARKER`), and a volume without it is a partial one, never used.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker.errors

from tfbisect.core import interrupt, priority
from tfbisect.core.errors import DockerError
from tfbisect.envs.docker_builds import Builds, closed_log, raise_shares, shares_ahead
from tfbisect.envs.docker_calls import FAILURES, shown
from tfbisect.envs.docker_containers import DEADLINE_LABEL, SITE_MOUNT
from tfbisect.platform.process import Finished
from tfbisect.platform.process import _Output as BoundedLog

SITE_LABEL = "tfbisect.site"  # every site volume carries it (`docker volume ls --filter label=…`)
MOUNT = SITE_MOUNT  # where a site volume is mounted: the Dockerfile's venv
MARKER = f"{MOUNT}/.tfbisect-site"  # written last by the filling container: the volume's hash


WHEELS = "/wheels"  # where the filling container sees the host's wheel cache (read-only)


@dataclass(frozen=True)
class FillRequest:
    """One filling of a site volume: `script` (sh) runs as root in `image` with no network, the
    volume mounted read-write at MOUNT (empty at first: the engine copies the image's venv into
    it) and the host's wheel cache `wheels` read-only at WHEELS.  Reading the wheels as files
    (not over loopback HTTP) lets uv unpack them at disk speed: 1.9 s instead of 5.4 s for TF
    2.9.3's.  So it needs an engine on this machine (`DockerBackend.uses_sites`)."""

    image: str
    volume: str
    script: str
    wheels: str

    def argv(self, name: str, cpu_shares: int | None) -> list[str]:
        shares = ["--cpu-shares", str(cpu_shares)] if cpu_shares is not None else []
        mount = ["--mount", f"type=volume,src={self.volume},dst={MOUNT}"]
        return shown(
            "run", "--rm", "--name", name, "--network", "none", *shares, *mount,
            "--volume", f"{self.wheels}:{WHEELS}:ro", "--user", "0", self.image, "sh", "-c", self.script,
        )  # fmt: skip


@dataclass(frozen=True)
class Volumes(Builds):
    """The engine's site volumes: inspect, create, list, remove, and fill one."""

    def volume_labels(self, name: str) -> dict[str, str] | None:
        """The volume's labels ({} for none); None when there is no such volume."""
        try:
            with self._calling(shown("volume", "inspect", name)):
                found: Any = self.api.inspect_volume(name)
        except DockerError as exc:
            if isinstance(exc.__cause__, docker.errors.NotFound):
                return None
            raise
        labels = found.get("Labels") if isinstance(found, dict) else None
        return {str(k): str(v) for k, v in (labels or {}).items()}

    def create_volume(self, name: str, labels: Mapping[str, str]) -> None:
        argv = shown(
            "volume", "create", *(w for k, v in labels.items() for w in ("--label", f"{k}={v}")), name
        )
        self._echo(argv)
        with self._calling(argv):
            self.api.create_volume(name, labels=dict(labels))

    def remove_volume(self, name: str) -> bool:
        """`docker volume rm NAME`: True when it is gone (or was not there), False while a
        container uses it."""
        argv = shown("volume", "rm", name)
        self._echo(argv)
        try:
            with self._calling(argv):
                self.api.remove_volume(name)
        except DockerError as exc:
            cause = exc.__cause__
            if isinstance(cause, docker.errors.NotFound):
                return True
            if isinstance(cause, docker.errors.APIError) and cause.status_code == 409:
                return False
            raise
        return True

    def site_volumes(self) -> dict[str, dict[str, str]]:
        """Every site volume's labels, by name (`docker volume ls --filter label=tfbisect.site`)."""
        with self._calling(shown("volume", "ls", "--filter", f"label={SITE_LABEL}")):
            found: Any = self.api.volumes(filters={"label": SITE_LABEL})
        listed = (found or {}).get("Volumes") or [] if isinstance(found, dict) else []
        return {
            str(v["Name"]): {str(k): str(x) for k, x in (v.get("Labels") or {}).items()}
            for v in listed
            if isinstance(v, dict) and v.get("Name")
        }

    def fill_volume(self, request: FillRequest, log_path: Path, timeout: float) -> Finished:
        """Run the request's container to its end, its output written to `log_path` as it comes
        (bounded like a build's); exit code as the script's, None on timeout.  Like a build, a
        prefetch's filling runs with the fewest CPU shares until a run waits for it, and one the
        search no longer needs is stopped (DroppedError); the container is removed on every way out."""
        urgency = priority.current()
        if urgency is not None and urgency.dropped:
            raise _dropped(request)
        shares = shares_ahead()
        name = f"tfbisect-fill-{uuid.uuid4().hex[:8]}"
        argv = request.argv(name, shares)
        self._echo(argv)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            output = BoundedLog(log, None)
            output.write(("$ " + " ".join(argv) + "\n").encode("utf-8", "replace"))
            try:
                return self._filled(request, name, shares, timeout, output, urgency)
            finally:
                with interrupt.held(), contextlib.suppress(*FAILURES):
                    self.api.remove_container(name, force=True)

    def _filled(
        self,
        request: FillRequest,
        name: str,
        shares: int | None,
        timeout: float,
        output: BoundedLog,
        urgency: priority.Urgency | None,
    ) -> Finished:
        deadline = int(time.time() + timeout + 60)  # a driver that died leaves it to the next sweep
        with self._calling(shown("create", "--name", name, request.image)):
            host = self.api.create_host_config(
                network_mode="none",
                binds={
                    request.volume: {"bind": MOUNT, "mode": "rw"},
                    request.wheels: {"bind": WHEELS, "mode": "ro"},
                },
                cpu_shares=shares,
            )
            self.api.create_container(
                request.image,
                command=["sh", "-c", request.script],
                name=name,
                user="0",
                labels={DEADLINE_LABEL: str(deadline)},
                host_config=host,
            )
            self.api.start(name)
        lock = threading.Lock()

        def hurry() -> None:  # a run waits for this volume now
            if shares is not None:
                raise_shares(self.api, name)

        def on_item(item: object) -> None:
            with lock:
                output.feed(item if isinstance(item, bytes) else str(item).encode("utf-8", "replace"))

        forget = urgency.on_hurry(hurry) if urgency is not None else (lambda: None)
        try:
            # Cancelled (dropped, a stop, the deadline): the container is killed, which ends its
            # log stream, and so the wait on it.
            done = self._stream(
                lambda api: api.logs(name, stream=True, follow=True),
                on_item,
                timeout,
                urgency,
                also=lambda: self.api.kill(name),
            )
        finally:
            forget()
        if done.cancelled and not done.timed_out:
            interrupt.check()
            raise _dropped(request)
        code = None if done.timed_out else self._exit_code(name)
        with lock:
            return closed_log(output, done, timeout, "the filling was stopped", code)

    def _exit_code(self, name: str) -> int:
        """The ended container's exit code (its log stream has ended: so has it, or nearly)."""
        with self._calling(shown("wait", name)):
            ended: Any = self.api.wait(name, timeout=60)
        return int(ended.get("StatusCode", 1)) if isinstance(ended, dict) else 1


def _dropped(request: FillRequest) -> priority.DroppedError:
    return priority.DroppedError(
        f"filling {request.volume} was stopped: the search no longer needs it",
        "nothing to do; a run that needs the release fills it.",
    )
