"""Which CUDA libraries each TensorFlow line loads, and where a CUDA image gets them from.

TF publishes the CUDA and cuDNN each line was built and tested with (`TESTED`, from
tensorflow.org/install/source#gpu).  From that follows, per release, one `CudaPlan`:

* TF 2.14+ names its NVIDIA wheels itself (`tensorflow[and-cuda]`): the lock holds them.
* TF 2.5-2.13 load CUDA 11 libraries by soname (libcudart.so.11.0, libcublas.so.11,
  libcufft.so.10, libcurand.so.10, libcusolver.so.11, libcusparse.so.11, libcudnn.so.8), and the
  index has those sonames as `nvidia-*-cu11` wheels: CUDA 11.8, which CUDA's minor-version
  compatibility lets code built for 11.2 use, and cuDNN 8.6, which TF accepts for anything
  built with cuDNN 8.x up to 8.6 (same major, equal or newer minor).  One `CudaSet`, so every
  line from 2.5 to 2.13 shares one NVIDIA layer.  The image build proves it per line with TF's
  own loader (`data/cuda_check.py`).
* TF 2.0-2.4 load CUDA 10.0/10.1 or 11.0 sonames (libcudart.so.10.x, libcusolver.so.10) that no
  wheel carries: those build only on a base image that brings the libraries (`--base-image`),
  and are skipped otherwise, with the reason.  TF 2.0's CUDA build is a separate project,
  `tensorflow-gpu`, of which the index keeps only a 2.12.0 placeholder.

Pure data and functions: no engine, no index.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from tfbisect.core.versions import minor_line


class CudaSource(enum.StrEnum):
    AND_CUDA = "tensorflow[and-cuda]"  # TF 2.14+: the lock names the NVIDIA wheels
    WHEEL_SET = "nvidia-*-cu11 wheels"  # a CudaSet tfbisect maps the line to
    BASE_IMAGE = "a CUDA base image"  # the libraries come with --base-image


@dataclass(frozen=True)
class Tested:
    """What TF built and tested a line with (its published table)."""

    cuda: str
    cudnn: str


TESTED: dict[str, Tested] = {
    "2.0": Tested("10.0", "7.4"),
    "2.1": Tested("10.1", "7.6"),
    "2.2": Tested("10.1", "7.6"),
    "2.3": Tested("10.1", "7.6"),
    "2.4": Tested("11.0", "8.0"),
    **{f"2.{minor}": Tested("11.2", "8.1") for minor in range(5, 12)},
    "2.12": Tested("11.8", "8.6"),
    "2.13": Tested("11.8", "8.6"),
    "2.14": Tested("11.8", "8.7"),
    "2.15": Tested("12.2", "8.9"),
    "2.16": Tested("12.3", "8.9"),
    "2.17": Tested("12.3", "8.9"),
    "2.18": Tested("12.5", "9.3"),
    "2.19": Tested("12.5", "9.3"),
    "2.20": Tested("12.5", "9.3"),
    "2.21": Tested("12.5", "9.3"),
}


@dataclass(frozen=True)
class CudaSet:
    """NVIDIA libraries as pinned pip wheels, installed as one layer that every TF line using
    them shares.  `requirements` are exact pins; the lock (`nvidia-<name>.txt`) adds hashes."""

    name: str
    cuda: str
    cudnn: str
    requirements: tuple[str, ...]
    # Resolve as of this time: the newest pinned wheel's upload plus a grace period.
    exclude_newer: str
    # The sonames TF 2.5-2.13 open, and the wheel that carries each (what the mapping rests on).
    sonames: tuple[tuple[str, str], ...]

    @property
    def lock_filename(self) -> str:
        return f"nvidia-{self.name}.txt"


CU11 = CudaSet(
    name="cu11.8-cudnn8.6",
    cuda="11.8",
    cudnn="8.6",
    requirements=(
        "nvidia-cuda-runtime-cu11==11.8.89",
        "nvidia-cublas-cu11==11.11.3.6",
        "nvidia-cufft-cu11==10.9.0.58",
        "nvidia-curand-cu11==10.3.0.86",
        "nvidia-cusolver-cu11==11.4.1.48",
        "nvidia-cusparse-cu11==11.7.5.86",
        "nvidia-cudnn-cu11==8.6.0.163",
        "nvidia-cuda-nvrtc-cu11==11.8.89",  # cuDNN 8's runtime fusion compiles with NVRTC
        "nvidia-cuda-cupti-cu11==11.8.87",  # the profiler's; TF runs without it
    ),
    exclude_newer="2023-01-15T00:00:00Z",
    sonames=(
        ("libcudart.so.11.0", "nvidia-cuda-runtime-cu11"),
        ("libcublas.so.11", "nvidia-cublas-cu11"),
        ("libcublasLt.so.11", "nvidia-cublas-cu11"),
        ("libcufft.so.10", "nvidia-cufft-cu11"),
        ("libcurand.so.10", "nvidia-curand-cu11"),
        ("libcusolver.so.11", "nvidia-cusolver-cu11"),
        ("libcusparse.so.11", "nvidia-cusparse-cu11"),
        ("libcudnn.so.8", "nvidia-cudnn-cu11"),
    ),
)
WHEEL_SET_LINES = {f"2.{minor}": CU11 for minor in range(5, 14)}
AND_CUDA_FROM_LINE = 14
# Per line, the NVIDIA image with the libraries TF was built for (when a registry serves it).
BASE_IMAGES = {
    "2.0": "nvidia/cuda:10.0-cudnn7-runtime-ubuntu18.04",
    "2.1": "nvidia/cuda:10.1-cudnn7-runtime-ubuntu18.04",
    "2.2": "nvidia/cuda:10.1-cudnn7-runtime-ubuntu18.04",
    "2.3": "nvidia/cuda:10.1-cudnn7-runtime-ubuntu18.04",
    "2.4": "nvidia/cuda:11.0.3-cudnn8-runtime-ubuntu18.04",
}
MISSING_SONAMES = {
    "2.0": "libcudart.so.10.0 and libcublas.so.10.0",
    "2.1": "libcudart.so.10.1 and libcublas.so.10",
    "2.2": "libcudart.so.10.1 and libcublas.so.10",
    "2.3": "libcudart.so.10.1 and libcublas.so.10",
    "2.4": "libcusolver.so.10 (CUDA 11.0's cuSOLVER)",
}


@dataclass(frozen=True)
class CudaPlan:
    """Where the CUDA image of one release gets its NVIDIA libraries, or why it cannot here."""

    tf_version: str
    tested: Tested | None
    source: CudaSource | None  # None: no CUDA image for this release
    project: str = "tensorflow"  # the project whose wheel has CUDA support
    cuda_set: CudaSet | None = None  # for WHEEL_SET
    base_image: str | None = None  # for BASE_IMAGE: the image with the libraries
    needs: str = ""  # for BASE_IMAGE / None: what is missing here, a sentence

    @property
    def buildable_from_index(self) -> bool:
        """True when the index alone (no CUDA base image) gives everything the image needs."""
        return self.source in (CudaSource.AND_CUDA, CudaSource.WHEEL_SET)

    def describe(self) -> str:
        """One short phrase for tables: whether a CUDA image can be built here, and from what."""
        tested = f"CUDA {self.tested.cuda}, cuDNN {self.tested.cudnn}" if self.tested else "CUDA ?"
        if self.source is CudaSource.AND_CUDA:
            return f"yes: tensorflow[and-cuda] ({tested})"
        if self.source is CudaSource.WHEEL_SET and self.cuda_set is not None:
            return f"yes: {self.cuda_set.name} wheels (TF built for {tested})"
        if self.source is CudaSource.BASE_IMAGE:
            gpu = "; tensorflow-gpu 2.0 not on the index" if self.project == "tensorflow-gpu" else ""
            return f"no wheels: --base-image with {tested} ({self.base_image}){gpu}"
        return "no"


def cuda_plan(tf_version: str) -> CudaPlan:
    """The CUDA plan of one release (every release in the catalogue has one)."""
    line = minor_line(tf_version)
    tested = TESTED.get(line)
    major, _, minor_text = line.partition(".")
    minor = int(minor_text) if major == "2" and minor_text.isdigit() else -1
    if minor >= AND_CUDA_FROM_LINE:
        return CudaPlan(tf_version, tested, CudaSource.AND_CUDA)
    if line in WHEEL_SET_LINES:
        return CudaPlan(tf_version, tested, CudaSource.WHEEL_SET, cuda_set=WHEEL_SET_LINES[line])
    if line in BASE_IMAGES:
        project = "tensorflow-gpu" if line == "2.0" else "tensorflow"
        needs = f"{MISSING_SONAMES[line]} come in no wheel; {BASE_IMAGES[line]} has them"
        if project == "tensorflow-gpu":
            needs += "; and TF 2.0's CUDA build is tensorflow-gpu, which the index no longer has"
        return CudaPlan(
            tf_version, tested, CudaSource.BASE_IMAGE, project, base_image=BASE_IMAGES[line], needs=needs
        )
    return CudaPlan(tf_version, tested, None, needs=f"tfbisect knows no CUDA libraries for TF {line}")


def one_per_set(versions: list[str]) -> list[str]:
    """The newest of `versions` (final releases, oldest first) for every CUDA set a CUDA image
    can be built from here: what `tfbisect gpu-check` checks by default."""
    newest: dict[str, str] = {}
    for version in versions:
        plan = cuda_plan(version)
        if plan.source is CudaSource.WHEEL_SET and plan.cuda_set is not None:
            newest[plan.cuda_set.name] = version
        elif plan.source is CudaSource.AND_CUDA:
            newest[f"and-cuda {plan.tested.cuda if plan.tested else '?'}"] = version
    return list(newest.values())
