"""What the Docker engine knows about its images and itself: inspection (labels, layers, step
sizes, digests), the engine's runtimes, and removing an image."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import docker.errors

from tfbisect.core.errors import DockerError
from tfbisect.envs.docker_calls import EngineCalls, shown


@dataclass(frozen=True)
class Images(EngineCalls):
    _info: dict[str, object] = field(default_factory=dict)  # `docker info`, asked once

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

    def image_list(self, reference: str) -> list[tuple[str, int]]:
        """(tag, bytes) of each image of that repository (`docker images REFERENCE`), for `tfbisect cache`."""
        with self._calling(shown("images", "--filter", f"reference={reference}:*")):
            found: Any = self.api.images(filters={"reference": f"{reference}:*"})
        return [
            (str(tag), int(image.get("Size") or 0))
            for image in found
            if isinstance(image, dict)
            for tag in image.get("RepoTags") or []
            if str(tag).startswith(f"{reference}:")
        ]

    def remove_image(self, ref: str) -> None:
        argv = shown("image", "rm", "--force", ref)
        self._echo(argv)
        with contextlib.suppress(DockerError), self._calling(argv):
            self.api.remove_image(ref, force=True)
