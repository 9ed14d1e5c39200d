"""The Docker image plan without an engine: tags, content hashes, stages, build arguments and
labels as a pure function of the Dockerfile, the base image, the lock and the flavour; and the
backend's reuse-or-build decisions against a fake engine."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, cast

import pytest

from tfbisect import __version__
from tfbisect.core.errors import LockError
from tfbisect.core.process import Finished
from tfbisect.core.progress import Progress
from tfbisect.core.spec import Backend, EnvSpec, Flavour
from tfbisect.envs import locks
from tfbisect.envs.backend_docker import (
    DOCKERFILE,
    DockerBackend,
    ImagePlan,
    import_check,
    plan_image,
)
from tfbisect.envs.bases import Base
from tfbisect.envs.docker_engine import BuildRequest, Engine, _build_text
from tfbisect.envs.locks import Lock, LockSpec

DOCKERFILE_BYTES = b"FROM ${BASE} AS base\n"
BASE = Base("tfbisect-base:bookworm", "3.11", "debootstrap", "sha256:" + "b" * 64)
TF_LOCK = locks.load(LockSpec("2.21.0", "3.11", Flavour.CUDA))  # committed: both images of 2.21 use it
TF_LOCK_BYTES = TF_LOCK.path.read_bytes()
EMPTY_LOCK_BYTES = b"# tfbisect lock\n# requirements: none\n# exclude-newer: 2026-01-01T00:00:00Z\n"


def spec(version: str = "2.21.0", flavour: Flavour = Flavour.CPU, python: str = "3.11") -> EnvSpec:
    return EnvSpec(version, python, flavour, backend=Backend.DOCKER)


def empty_lock(version: str = "2.21.0") -> Lock:
    return Lock(
        LockSpec(version, "3.11", Flavour.CUDA), Path(f"tf{version}-py3.11-cuda.txt"), ("none",), "2026-01-01"
    )


def plan(
    env: EnvSpec | None = None,
    lock: Lock = TF_LOCK,
    lock_bytes: bytes = TF_LOCK_BYTES,
    dockerfile: bytes = DOCKERFILE_BYTES,
    base: Base = BASE,
) -> ImagePlan:
    return plan_image(env or spec(), lock, lock_bytes, dockerfile, base)


def test_the_tag_names_version_python_flavour_and_the_content_hash() -> None:
    cpu = plan()
    assert cpu.tag == f"tfbisect:tf2.21.0-py3.11-cpu-{cpu.content_hash[:12]}"
    assert cpu.target == "cpu" and cpu.cpu_first is None
    # The formula of every image built so far: a change would orphan every cached image.
    expected = hashlib.sha256()
    for part in (DOCKERFILE_BYTES, BASE.image_id.encode(), TF_LOCK_BYTES, b"cpu", b""):
        expected.update(part + b"\0")
    assert cpu.content_hash == expected.hexdigest()
    assert cpu.labels == {
        "tfbisect.hash": cpu.content_hash,
        "tfbisect.lock": "tf2.21.0-py3.11-cuda.txt",
        "tfbisect.base": "tfbisect-base:bookworm",
        "tfbisect.version": __version__,
    }
    assert cpu.build_args == {
        "BASE": "tfbisect-base:bookworm",
        "PYTHON": "3.11",
        "LOCK_SHA": hashlib.sha256(TF_LOCK_BYTES).hexdigest(),
        "EXPECT_CUDA": "12.5",
        "CHECK_IMPORT": "tensorflow",
    }
    assert plan() == cpu, "the same inputs give the same plan"


@pytest.mark.parametrize(
    "change",
    [
        {"dockerfile": DOCKERFILE_BYTES + b"RUN true\n"},
        {"base": dataclasses.replace(BASE, image_id="sha256:" + "c" * 64)},
        {"lock_bytes": TF_LOCK_BYTES + b"# one more line\n"},
        {"env": spec(flavour=Flavour.CUDA)},
    ],
    ids=["dockerfile", "base-image-id", "lock", "flavour"],
)
def test_every_input_changes_the_hash_and_the_tag(change: dict[str, Any]) -> None:
    before, after = plan(), plan(**change)
    assert after.content_hash != before.content_hash
    assert after.tag != before.tag and after.labels["tfbisect.hash"] == after.content_hash


def test_a_base_is_known_by_its_image_id_not_its_name() -> None:
    renamed = plan(base=dataclasses.replace(BASE, ref="python:3.11-slim", source="official"))
    assert renamed.content_hash == plan().content_hash
    assert renamed.build_args["BASE"] == renamed.labels["tfbisect.base"] == "python:3.11-slim"


def test_a_cuda_image_is_planned_on_top_of_its_cpu_image() -> None:
    cuda, cpu = plan(spec(flavour=Flavour.CUDA)), plan()
    assert cuda.target == "cuda" and cuda.tag.startswith("tfbisect:tf2.21.0-py3.11-cuda-")
    assert cuda.cpu_first == cpu, "the CPU image of the same lock comes first"
    assert cuda.build_args == {**cpu.build_args, "EXPECT_CUDA": "12.5"}
    everything = locks_pins(TF_LOCK_BYTES)
    assert cpu.layers == cuda.layers
    assert {p.name for p in cpu.fetch} | {p.name for p in cuda.fetch} == everything
    assert all(p.is_nvidia for p in cuda.fetch) and len(cuda.fetch) > 5
    assert not any(p.is_nvidia for p in cpu.fetch) and "tensorflow" in {p.name for p in cpu.fetch}
    files = cuda.requirement_files()
    sha = hashlib.sha256(TF_LOCK_BYTES).hexdigest()
    assert sorted(files) == [f"{sha}-cpu.txt", f"{sha}-nvidia.txt"]
    assert "tensorflow==2.21.0\n" in files[f"{sha}-cpu.txt"]
    assert all(line.startswith("nvidia-") for line in files[f"{sha}-nvidia.txt"].splitlines())


def locks_pins(lock_bytes: bytes) -> set[str]:
    from tfbisect.envs.wheelhouse import pins

    return {p.name for p in pins(lock_bytes.decode())}


def test_the_expected_cuda_is_part_of_a_cuda_image_only() -> None:
    older = plan(spec("2.15.0", Flavour.CUDA), empty_lock("2.15.0"), EMPTY_LOCK_BYTES)
    assert older.build_args["EXPECT_CUDA"] == "12.2"
    unknown = plan(spec("2.20.0", Flavour.CUDA), empty_lock("2.20.0"), EMPTY_LOCK_BYTES)
    assert unknown.build_args["EXPECT_CUDA"] == "", "a line not in the table is not checked"


@pytest.mark.parametrize("version", ["2.13.1", "2.9.3"])
def test_cuda_before_2_14_is_refused_with_what_to_do(version: str) -> None:
    with pytest.raises(LockError) as refused:
        plan(spec(version, Flavour.CUDA))
    assert (
        f"CUDA images are built for TF 2.14 and newer (tensorflow[and-cuda]); TF {version}"
        in refused.value.what
    )
    assert refused.value.todo == "use --base cpu for this version."
    backend = DockerBackend(Path("/nonexistent-cache"), Progress(quiet=True))
    with pytest.raises(LockError) as again:
        backend.lock_spec(spec(version, Flavour.CUDA))
    assert again.value.what == refused.value.what
    assert backend._engine is None, "planning never contacts the engine"


def test_locks_by_line_without_an_engine() -> None:
    backend = DockerBackend(Path("/nonexistent-cache"), Progress(quiet=True))
    assert backend.lock_spec(spec("2.21.0", Flavour.CPU)).flavour is Flavour.CUDA
    assert backend.lock_spec(spec("2.9.3", Flavour.CPU)).flavour is Flavour.CPU
    assert backend._engine is None


def test_the_import_check_follows_the_lock() -> None:
    assert import_check(TF_LOCK) == "tensorflow"
    assert import_check(empty_lock()) == ""
    nightly = dataclasses.replace(empty_lock(), requirements=("tf-nightly==2.22.0.dev1",))
    assert import_check(nightly) == "tensorflow"
    bare = plan(lock=empty_lock(), lock_bytes=EMPTY_LOCK_BYTES)
    assert bare.build_args["CHECK_IMPORT"] == "" and bare.layers == {"cpu": (), "nvidia": ()}


def test_the_build_request_and_its_command_line_come_from_the_same_fields() -> None:
    request = plan().build_request("http://127.0.0.1:38471", DOCKERFILE, Path("/cache/context"))
    argv = request.argv()
    assert argv[:9] == [
        "docker",
        "build",
        "--network",
        "host",
        "--file",
        str(DOCKERFILE),
        "--target",
        "cpu",
        "--tag",
    ]
    assert argv[-1] == "/cache/context"
    build_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--build-arg"]
    assert build_args[:2] == ["BASE=tfbisect-base:bookworm", "WHEELS_URL=http://127.0.0.1:38471"]
    sdk = request.sdk_arguments()
    assert sdk["tag"] == argv[argv.index("--tag") + 1] and sdk["target"] == "cpu"
    assert sdk["network_mode"] == "host" and sdk["dockerfile"] == str(DOCKERFILE)
    assert [f"{k}={v}" for k, v in sdk["buildargs"].items()] == build_args
    assert [f"{k}={v}" for k, v in sdk["labels"].items()] == [
        argv[i + 1] for i, a in enumerate(argv) if a == "--label"
    ]
    # The classic builder's defaults, as `docker build` has them: remove the intermediate
    # containers of a build that succeeds, keep the failing step's.
    assert sdk["rm"] is True and sdk["forcerm"] is False and sdk["decode"] is True


def test_build_output_is_written_as_the_cli_prints_it() -> None:
    assert _build_text({"stream": "Step 1/4 : FROM x"}) == "Step 1/4 : FROM x"
    assert _build_text({"error": "The command returned a non-zero code: 1"}).endswith("code: 1\n")
    assert _build_text({"status": "Downloading", "id": "abc"}) == "abc Downloading\n"
    assert _build_text({"aux": {"ID": "sha256:1"}}) == ""


class FakeEngine:
    """Images by tag (labels, layers) and a record of the builds asked for."""

    def __init__(self) -> None:
        self.images: dict[str, tuple[dict[str, str], list[str]]] = {}
        self.builds: list[BuildRequest] = []

    def image_labels(self, ref: str) -> dict[str, str]:
        return dict(self.images.get(ref, ({}, []))[0])

    def image_layers(self, ref: str) -> list[str]:
        return list(self.images.get(ref, ({}, []))[1])

    def image_id(self, ref: str) -> str | None:
        return f"sha256:{ref}" if ref in self.images else None

    def build(self, request: BuildRequest, log_path: Path, timeout: float) -> Finished:
        self.builds.append(request)
        # The layer cache builds a CUDA image on the CPU image there.
        layers = [*self.images[self.cpu_tag][1], "nvidia"] if request.target == "cuda" else ["base", "cpu"]
        self.images[request.tag] = (dict(request.labels), layers)
        return Finished(exit_code=0, timed_out=False, log_tail="", seconds=0.0)

    cpu_tag = ""


def ensure(backend: DockerBackend, planned: ImagePlan, tmp_path: Path) -> tuple[bool, list[str]]:
    fake = cast(FakeEngine, backend.engine)
    fake.builds.clear()
    image = backend._ensure(planned, BASE, tmp_path / "logs")
    return image.built, [b.target for b in fake.builds]


def test_ensure_reuses_what_is_current_and_builds_the_cpu_image_first(tmp_path: Path) -> None:
    fake = FakeEngine()
    backend = DockerBackend(tmp_path / "cache", Progress(quiet=True), engine=cast(Engine, fake))
    cuda = plan(spec(flavour=Flavour.CUDA), empty_lock(), EMPTY_LOCK_BYTES)
    assert cuda.cpu_first is not None
    fake.cpu_tag = cuda.cpu_first.tag
    assert ensure(backend, cuda, tmp_path) == (True, ["cpu", "cuda"]), "cold: the CPU image, then CUDA"
    assert ensure(backend, cuda, tmp_path) == (False, []), "warm: nothing is built"
    assert ensure(backend, cuda.cpu_first, tmp_path) == (False, [])
    # The CPU image was rebuilt since (new layers): the CUDA image no longer sits on it.
    labels, _ = fake.images[cuda.cpu_first.tag]
    fake.images[cuda.cpu_first.tag] = (labels, ["base", "cpu-rebuilt"])
    assert ensure(backend, cuda, tmp_path) == (True, ["cuda"])
    # Only the CUDA image is left: it is still current and is reused.
    del fake.images[cuda.cpu_first.tag]
    assert ensure(backend, cuda, tmp_path) == (False, [])
    # A stale image (another hash under the tag) is never reused.
    fake.images[cuda.cpu_first.tag] = ({"tfbisect.hash": "stale"}, ["base", "old"])
    assert ensure(backend, cuda.cpu_first, tmp_path) == (True, ["cpu"])
    sha = hashlib.sha256(EMPTY_LOCK_BYTES).hexdigest()
    req = tmp_path / "cache" / "wheels" / "req"
    assert (req / f"{sha}-cpu.txt").read_text() == "" and (req / f"{sha}-nvidia.txt").read_text() == ""
