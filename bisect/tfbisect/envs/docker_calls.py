"""What every Docker engine call shares: the `docker …` command line it is echoed as (for users
to paste), and its failure as a `DockerError` that names that command line and says why in
words.  The engine's jobs (`docker_images`, `docker_builds`, `docker_containers`) build on it.
"""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import docker
import docker.errors
import requests

from tfbisect.core.errors import DockerError
from tfbisect.core.progress import Progress

FAILURES = (docker.errors.DockerException, requests.exceptions.RequestException, OSError)


def shown(*args: str) -> list[str]:
    """The `docker …` command line a user can paste for an engine call."""
    return ["docker", *args]


@dataclass(frozen=True)
class EngineCalls:
    """One engine's calls (`client`), each echoed on `progress` unless `echo` is off."""

    progress: Progress
    client: docker.DockerClient
    echo: bool

    @property
    def api(self) -> docker.APIClient:
        return self.client.api

    def _echo(self, argv: Sequence[str]) -> None:
        if self.echo:
            self.progress.say("+ " + shlex.join(argv))

    @contextlib.contextmanager
    def _calling(self, argv: Sequence[str]) -> Iterator[None]:
        """An engine call's failure as a DockerError that names the equivalent command."""
        try:
            yield
        except FAILURES as exc:
            raise DockerError(
                f"`{shlex.join(argv)}` failed: {reason(exc)}",
                "see the message above; `docker info` tells whether the engine is healthy.",
            ) from exc


def clean(text: str) -> str:
    return " ".join(text.split())[-800:]


def reason(exc: BaseException) -> str:
    """The innermost cause, in words: "No such file or directory", "Permission denied" …"""
    if isinstance(exc, docker.errors.APIError):
        return clean(str(exc.explanation or exc))
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
    return clean(str(deepest) or type(deepest).__name__)
