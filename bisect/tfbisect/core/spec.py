"""What one run is: the environment axes (version, Python, flavour, Keras variant, backend), and
the lock an environment of it installs.

A backend is named by the string it is registered under (envs/registry.py); nothing here knows
which backends exist."""

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


# The backend a spec names when none is said (a stored record from before backends had names).
DEFAULT_BACKEND = "venv"


@dataclass(frozen=True)
class LockSpec:
    """Which lock file an environment installs: a release on a Python, its flavour and Keras."""

    tf_version: str
    python: str
    flavour: Flavour = Flavour.CPU
    keras: KerasVariant = KerasVariant.DEFAULT

    @property
    def filename(self) -> str:
        legacy = "-tfkeras" if self.keras is KerasVariant.LEGACY else ""
        return f"tf{self.tf_version}-py{self.python}-{self.flavour.value}{legacy}.txt"


@dataclass(frozen=True)
class EnvSpec:
    """The environment a scenario runs in; its `key` names stored results."""

    tf_version: str
    python: str
    flavour: Flavour = Flavour.CPU
    keras: KerasVariant = KerasVariant.DEFAULT
    backend: str = DEFAULT_BACKEND  # the registered name of the backend it runs on (envs/registry.py)
    base: str = ""  # kept for stored records that name one (none is made now); part of their key

    @property
    def key(self) -> str:
        parts = [f"tf{self.tf_version}", f"py{self.python}", self.flavour.value]
        if self.keras is KerasVariant.LEGACY:
            parts.append("tfkeras")
        parts.append(str(self.backend))
        if self.base:
            parts.append(self.base.replace("/", "_").replace(":", "_"))
        return "-".join(parts)

    @property
    def label(self) -> str:
        extra = " tf-keras" if self.keras is KerasVariant.LEGACY else ""
        return f"TF {self.tf_version} · py{self.python} · {self.flavour.value}{extra} · {self.backend}"

    def lock_spec(self, flavour: Flavour | None = None) -> LockSpec:
        """The lock of this environment; `flavour` when a backend installs another flavour's lock
        (the Docker backend installs TF 2.14+'s `and-cuda` lock for CPU images too)."""
        return LockSpec(self.tf_version, self.python, flavour or self.flavour, self.keras)

    def env_vars(self) -> dict[str, str]:
        return {"TF_USE_LEGACY_KERAS": "1"} if self.keras is KerasVariant.LEGACY else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "tf_version": self.tf_version,
            "python": self.python,
            "flavour": self.flavour.value,
            "keras": self.keras.value,
            "backend": str(self.backend),
            "base": self.base,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnvSpec:
        return cls(
            tf_version=data["tf_version"],
            python=data["python"],
            flavour=Flavour(data.get("flavour", "cpu")),
            keras=KerasVariant(data.get("keras", "default")),
            backend=_backend_name(data.get("backend", DEFAULT_BACKEND)),
            base=data.get("base", ""),
        )


def _backend_name(value: object) -> str:
    """A stored record's backend name, refused when it could not name one (a key part)."""
    if not isinstance(value, str) or not value or not value.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"the backend {str(value)[:60]!r} is no backend name")
    return value
