"""A small typed wrapper around the Docker CLI; every command it runs is echoed.

Why the CLI and not the Docker SDK for Python: the CLI is there wherever an engine is,
speaks whatever API version the engine does (the SDK pins one and fails on old engines,
such as Debian's 20.10 next to a 28.x client here), streams build logs line by line into our
own log files, and gives users commands they can paste.  The SDK would add a dependency and
a second way of talking to the engine for nothing we need.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import subprocess
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tfbisect.errors import BackendUnavailableError, TfbisectError
from tfbisect.process import Finished, run_logged
from tfbisect.progress import Progress


class DockerError(TfbisectError):
    exit_code = 12


@dataclass
class Engine:
    progress: Progress
    binary: str = "docker"
    echo: bool = True
    _info: dict[str, object] = field(default_factory=dict)

    def command(self, *args: str) -> list[str]:
        return [self.binary, *args]

    def _echo(self, argv: Sequence[str]) -> None:
        if self.echo:
            self.progress.say("+ " + shlex.join(argv))

    def capture(self, *args: str, check: bool = True, quiet: bool = False, timeout: float = 300) -> str:
        argv = self.command(*args)
        if not quiet:
            self._echo(argv)
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout)
        if check and done.returncode != 0:
            raise DockerError(
                f"`{shlex.join(argv)}` failed ({done.returncode}): {done.stderr.strip()[-800:]}",
                "see the message above; `docker info` tells whether the engine is healthy.",
            )
        return done.stdout

    def logged(self, args: Sequence[str], log_path: Path, timeout: float, **kwargs: object) -> Finished:
        argv = self.command(*args)
        self._echo(argv)
        return run_logged(argv, log_path=log_path, timeout=timeout, **kwargs)  # type: ignore[arg-type]

    # -- queries -----------------------------------------------------------------------
    def info(self) -> dict[str, object]:
        if not self._info:
            self._info.update(json.loads(self.capture("info", "--format", "{{json .}}", quiet=True)))
        return self._info

    def has_nvidia_runtime(self) -> bool:
        runtimes = self.info().get("Runtimes") or {}
        return isinstance(runtimes, dict) and "nvidia" in runtimes

    def image_inspect(self, ref: str) -> dict[str, object] | None:
        done = subprocess.run(
            self.command("image", "inspect", ref), capture_output=True, text=True, check=False, timeout=60
        )
        if done.returncode != 0:
            return None
        found = json.loads(done.stdout)
        return dict(found[0]) if found else None

    def image_labels(self, ref: str) -> dict[str, str]:
        found = self.image_inspect(ref)
        config = (found or {}).get("Config") or {}
        labels = config.get("Labels") if isinstance(config, dict) else None
        return dict(labels or {})

    def image_id(self, ref: str) -> str | None:
        found = self.image_inspect(ref)
        return str(found["Id"]) if found else None

    def image_repo_digest(self, ref: str) -> str | None:
        """The image's first registry digest (`name@sha256:…`); None for an image only built here."""
        found = self.image_inspect(ref)
        digests = (found or {}).get("RepoDigests")
        return str(digests[0]) if isinstance(digests, list) and digests else None

    def container_state(self, name: str) -> dict[str, object]:
        """The container's `.State` (ExitCode, OOMKilled …), or {} when it is gone."""
        done = subprocess.run(
            self.command("container", "inspect", "--format", "{{json .State}}", name),
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        if done.returncode != 0:
            return {}
        try:
            state = json.loads(done.stdout)
        except ValueError:
            return {}
        return dict(state) if isinstance(state, dict) else {}

    def remove_image(self, ref: str) -> None:
        self.capture("image", "rm", "--force", ref, check=False)

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
                subprocess.run(
                    self.command("rm", "--force", name), capture_output=True, check=False, timeout=120
                )


def connect(progress: Progress, *, echo: bool = True) -> Engine:
    """An engine that answers, or a message that says what to do without one."""
    binary = shutil.which("docker")
    if binary is None:
        raise BackendUnavailableError(
            "The Docker client is not installed, so the Docker backend cannot run.",
            "install Docker (e.g. `apt-get install docker.io`), or use --backend venv, which needs no Docker.",
        )
    done = subprocess.run(
        [binary, "info", "--format", "{{json .ServerVersion}}"], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise BackendUnavailableError(
            "The Docker engine is not running (or this user may not use it): "
            + (done.stderr.strip().splitlines() or ["no answer"])[-1],
            "start it (`dockerd &`, or `systemctl start docker`), or use --backend venv, which needs no Docker.",
        )
    return Engine(progress=progress, binary=binary, echo=echo)


def environment_names(mapping: Mapping[str, str]) -> list[str]:
    out = []
    for key, value in mapping.items():
        out += ["--env", f"{key}={value}"]
    return out
