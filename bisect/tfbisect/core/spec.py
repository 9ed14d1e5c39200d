"""What one run is: the environment axes (version, Python, flavour, Keras variant, backend)."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

from packaging.version import Version

# TF_USE_LEGACY_KERAS (with tf-keras) exists from TF 2.16; before it tf.keras already is Keras 2.
LEGACY_KERAS_FROM = Version("2.16.0rc0")
# `tensorflow[and-cuda]` (the NVIDIA libraries as pip wheels) exists from TF 2.14.
AND_CUDA_FROM = Version("2.14.0rc0")


def legacy_keras_applies(tf_version: str) -> bool:
    return Version(tf_version) >= LEGACY_KERAS_FROM


def has_and_cuda(tf_version: str) -> bool:
    return Version(tf_version) >= AND_CUDA_FROM


class Flavour(enum.StrEnum):
    CPU = "cpu"
    CUDA = "cuda"


class KerasVariant(enum.StrEnum):
    DEFAULT = "default"  # whatever Keras the release brings
    LEGACY = "legacy"  # TF 2.16+: TF_USE_LEGACY_KERAS=1 with the matching tf-keras


class Backend(enum.StrEnum):
    VENV = "venv"
    DOCKER = "docker"
    SWARM = "swarm"  # the Docker backend's images as one-shot services on a Docker Swarm


@dataclass(frozen=True)
class EnvSpec:
    """The environment a scenario runs in; its `key` names stored results."""

    tf_version: str
    python: str
    flavour: Flavour = Flavour.CPU
    keras: KerasVariant = KerasVariant.DEFAULT
    backend: Backend = Backend.VENV
    base: str = ""  # docker base image tag; empty for venvs

    @property
    def key(self) -> str:
        parts = [f"tf{self.tf_version}", f"py{self.python}", self.flavour.value]
        if self.keras is KerasVariant.LEGACY:
            parts.append("tfkeras")
        parts.append(self.backend.value)
        if self.base:
            parts.append(self.base.replace("/", "_").replace(":", "_"))
        return "-".join(parts)

    @property
    def label(self) -> str:
        extra = " tf-keras" if self.keras is KerasVariant.LEGACY else ""
        return f"TF {self.tf_version} · py{self.python} · {self.flavour.value}{extra} · {self.backend.value}"

    def env_vars(self) -> dict[str, str]:
        return {"TF_USE_LEGACY_KERAS": "1"} if self.keras is KerasVariant.LEGACY else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "tf_version": self.tf_version,
            "python": self.python,
            "flavour": self.flavour.value,
            "keras": self.keras.value,
            "backend": self.backend.value,
            "base": self.base,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnvSpec:
        return cls(
            tf_version=data["tf_version"],
            python=data["python"],
            flavour=Flavour(data.get("flavour", "cpu")),
            keras=KerasVariant(data.get("keras", "default")),
            backend=Backend(data.get("backend", "venv")),
            base=data.get("base", ""),
        )
