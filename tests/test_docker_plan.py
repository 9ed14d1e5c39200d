"""The Docker image plan without an engine: tags, content hashes, stages, build arguments and
labels as a pure function of the Dockerfile, the base image, the lock(s) and the flavour; the
NVIDIA image shared by the TF versions of one CUDA set; and the backend's reuse-or-build
decisions against a fake engine."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, cast

import pytest

from tfbisect import __version__
from tfbisect.core.cudasets import CU11
from tfbisect.core.errors import LockError
from tfbisect.core.progress import Progress
from tfbisect.core.spec import EnvSpec, Flavour
from tfbisect.envs import cache, locks
from tfbisect.envs.backend_docker import (
    DOCKERFILE,
    DockerBackend,
    ImagePlan,
    import_check,
    plan_image,
    read_cuda_check,
)
from tfbisect.envs.bases import Base
from tfbisect.envs.docker_builds import _build_text
from tfbisect.envs.docker_engine import BuildRequest, Engine
from tfbisect.envs.locks import Lock, LockSpec
from tfbisect.envs.wheelhouse import requirement_text
from tfbisect.platform.process import Finished

DOCKERFILE_BYTES = b"FROM ${BASE} AS base\n"
BASE = Base("tfbisect-base:bookworm", "3.11", "debootstrap", "sha256:" + "b" * 64)
TF_LOCK = locks.load(LockSpec("2.21.0", "3.11", Flavour.CUDA))  # committed: both images of 2.21 use it
TF_LOCK_BYTES = TF_LOCK.path.read_bytes()
EMPTY_LOCK_BYTES = b"# tfbisect lock\n# requirements: none\n# exclude-newer: 2026-01-01T00:00:00Z\n"


def spec(version: str = "2.21.0", flavour: Flavour = Flavour.CPU, python: str = "3.11") -> EnvSpec:
    return EnvSpec(version, python, flavour, backend="docker")


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
    nvidia_lock: bytes | None = None,
    check: bytes = b"check v1",
) -> ImagePlan:
    return plan_image(env or spec(), lock, lock_bytes, dockerfile, base, nvidia_lock=nvidia_lock, check=check)


CU11_LOCK_BYTES = locks.set_lock(CU11).read_bytes()  # committed


def and_cuda(version: str) -> ImagePlan:
    """The CUDA image of a TF 2.14+ version from its own committed `tensorflow[and-cuda]` lock."""
    lock = locks.load(LockSpec(version, "3.11", Flavour.CUDA))
    return plan(spec(version, Flavour.CUDA), lock, lock.path.read_bytes())


def cu11(version: str) -> ImagePlan:
    lock = locks.load(LockSpec(version, "3.11", Flavour.CUDA))  # committed
    return plan(spec(version, Flavour.CUDA), lock, lock.path.read_bytes(), nvidia_lock=CU11_LOCK_BYTES)


def test_the_tag_names_version_python_flavour_and_the_content_hash() -> None:
    cpu = plan()
    assert cpu.tag == f"tfbisect:tf2.21.0-py3.11-cpu-{cpu.content_hash[:12]}"
    assert cpu.target == "cpu" and cpu.below is None
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
        "CHECK_IMPORT": "tensorflow",
    }
    assert plan(check=b"another check") == cpu, "the CUDA check is no part of a CPU image"
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


def test_a_cuda_image_is_planned_on_top_of_its_nvidia_image() -> None:
    cuda, cpu = plan(spec(flavour=Flavour.CUDA)), plan()
    assert cuda.target == "cuda" and cuda.tag.startswith("tfbisect:tf2.21.0-py3.11-cuda-")
    nvidia = cuda.below
    assert nvidia is not None and nvidia.target == "nvidia" and nvidia.below is None
    assert nvidia.tag.startswith("tfbisect-nvidia:cu12-py3.11-")
    assert cuda.build_args == {**cpu.build_args, "BASE": nvidia.tag, "EXPECT_CUDA": "12.5"}
    layers = ("NVIDIA_TOOLKIT", "NVIDIA_CUDNN", "NVIDIA_REST")
    assert nvidia.build_args["BASE"] == BASE.ref and set(nvidia.build_args) == {"BASE", "PYTHON", *layers}
    everything = locks_pins(TF_LOCK_BYTES)
    assert cuda.fetch == cpu.fetch, "the TF layer is the same packages on either base"
    assert {p.name for p in cuda.fetch} | {p.name for p in nvidia.fetch} == everything
    assert all(p.is_nvidia for p in nvidia.fetch) and len(nvidia.fetch) > 5
    assert not any(p.is_nvidia for p in cpu.fetch) and "tensorflow" in {p.name for p in cpu.fetch}
    sha = hashlib.sha256(TF_LOCK_BYTES).hexdigest()
    assert cuda.requirement_files() == cpu.requirement_files()
    cpu_text = cuda.requirement_files()[f"{sha}-cpu.txt"]
    # Each pin with the lock's hashes, which the build requires (--require-hashes).
    [tf_line] = [line for line in cpu_text.splitlines() if line.startswith("tensorflow==2.21.0 ")]
    [tf_pin] = [p for p in cpu.fetch if p.name == "tensorflow"]
    assert tf_line.split()[1:] == [f"--hash=sha256:{h}" for h in sorted(tf_pin.hashes)] and tf_pin.hashes
    assert all(" --hash=sha256:" in line for line in cpu_text.splitlines())
    files = nvidia.requirement_files()
    assert sorted(files) == sorted(f"{nvidia.build_args[layer]}-nvidia.txt" for layer in layers)
    toolkit, cudnn, rest = (files[f"{nvidia.build_args[layer]}-nvidia.txt"].splitlines() for layer in layers)
    assert [line.split("==")[0] for line in cudnn] == ["nvidia-cudnn-cu12"]
    assert [line.split("==")[0] for line in rest] == ["nvidia-nccl-cu12"]
    assert any(line.startswith("nvidia-cublas-cu12==12.9.1.4 --hash=") for line in toolkit)
    assert len(toolkit) == 10
    assert sorted(toolkit + cudnn + rest) == sorted(requirement_text(nvidia.pins, hashes=True).splitlines())
    assert plan(spec(flavour=Flavour.CUDA), check=b"check v2").content_hash != cuda.content_hash


def test_tf_versions_on_one_cuda_set_share_one_nvidia_image() -> None:
    """TF 2.12.0, 2.12.1 and 2.13.1 use the cu11 set: one NVIDIA image under three CUDA images,
    each of which installs its own TF (`tensorflow`, not `tensorflow-cpu`)."""
    plans = [cu11(v) for v in ("2.12.0", "2.12.1", "2.13.1")]
    belows = {(p.below.tag, p.below.content_hash) if p.below else None for p in plans}
    assert len(belows) == 1 and None not in belows, "one NVIDIA image for the three"
    assert len({p.tag for p in plans}) == 3
    nvidia = plans[0].below
    assert nvidia is not None
    assert {p.name for p in nvidia.pins} == {r.split("==")[0] for r in CU11.requirements}
    for planned in plans:
        assert planned.build_args["EXPECT_CUDA"] == "11.8"
        assert "tensorflow" in {p.name for p in planned.pins} and not any(p.is_nvidia for p in planned.pins)
    # TF 2.18 and 2.19 differ in NCCL alone: different NVIDIA images, the same lower layers.
    below_218, below_219 = (and_cuda(v).below for v in ("2.18.1", "2.19.0"))
    assert below_218 is not None and below_219 is not None and below_218.tag != below_219.tag
    for layer in ("NVIDIA_TOOLKIT", "NVIDIA_CUDNN"):
        assert below_218.build_args[layer] == below_219.build_args[layer]
    assert below_218.build_args["NVIDIA_REST"] != below_219.build_args["NVIDIA_REST"]
    other_python = plan_image(
        spec("2.12.1", Flavour.CUDA, "3.9"),
        locks.load(LockSpec("2.12.1", "3.11", Flavour.CUDA)),
        locks.lock_path(LockSpec("2.12.1", "3.11", Flavour.CUDA)).read_bytes(),
        DOCKERFILE_BYTES,
        dataclasses.replace(BASE, ref="tfbisect-base:bullseye", python="3.9", image_id="sha256:" + "9" * 64),
        nvidia_lock=CU11_LOCK_BYTES,
    )
    assert other_python.below is not None and other_python.below.tag != nvidia.tag, "one per base"


def locks_pins(lock_bytes: bytes) -> set[str]:
    from tfbisect.envs.wheelhouse import pins

    return {p.name for p in pins(lock_bytes.decode())}


def test_the_expected_cuda_is_part_of_a_cuda_image_only() -> None:
    older = plan(spec("2.15.0", Flavour.CUDA), empty_lock("2.15.0"), EMPTY_LOCK_BYTES)
    assert older.build_args["EXPECT_CUDA"] == "12.2"
    unknown = plan(spec("2.22.0", Flavour.CUDA), empty_lock("2.22.0"), EMPTY_LOCK_BYTES)
    assert unknown.build_args["EXPECT_CUDA"] == "", "a line not in the table is not checked"


@pytest.mark.parametrize("version", ["2.3.4", "2.4.1", "2.0.0"])
def test_cuda_without_wheels_for_its_libraries_needs_a_base_image(version: str) -> None:
    with pytest.raises(LockError) as refused:
        plan(spec(version, Flavour.CUDA))
    assert f"No CUDA image for TF {version} can be built here:" in refused.value.what
    assert "come in no wheel" in refused.value.what and "nvidia/cuda:" in refused.value.what
    assert refused.value.todo.startswith(
        "name an image that has those libraries and Python 3.11 with --base-image"
    )
    backend = DockerBackend(Path("/nonexistent-cache"), Progress(quiet=True))
    with pytest.raises(LockError) as again:
        backend.lock_spec(spec(version, Flavour.CUDA))
    assert again.value.what == refused.value.what
    assert backend._engine is None, "planning never contacts the engine"
    # With a base image of the user's, the libraries are its business, proven by TF's check.
    mine = plan(spec(version, Flavour.CUDA), base=dataclasses.replace(BASE, ref="mine:cuda10", source="user"))
    assert mine.below is None and mine.build_args["BASE"] == "mine:cuda10" and mine.target == "cuda"
    backend = DockerBackend(Path("/nonexistent-cache"), Progress(quiet=True), user_base="mine:cuda10")
    assert backend.lock_spec(spec(version, Flavour.CUDA)).flavour is Flavour.CUDA


def test_locks_by_line_without_an_engine() -> None:
    backend = DockerBackend(Path("/nonexistent-cache"), Progress(quiet=True))
    assert backend.lock_spec(spec("2.21.0", Flavour.CPU)).flavour is Flavour.CUDA
    assert backend.lock_spec(spec("2.9.3", Flavour.CPU)).flavour is Flavour.CPU
    assert backend.lock_spec(spec("2.9.3", Flavour.CUDA)).flavour is Flavour.CUDA, "TF's GPU wheel"
    assert backend._engine is None


def test_an_images_loader_check_is_stored_bounded_and_reduced() -> None:
    good = read_cuda_check('{"tensorflow": "2.12.1", "libraries": [{"soname": "libcudnn.so.8"}], "x": 1}')
    assert good == {"tensorflow": "2.12.1", "libraries": [{"soname": "libcudnn.so.8"}]}
    assert read_cuda_check("[1]") == {"problems": ["the image's loader check is not a JSON object"]}
    assert "not JSON" in str(read_cuda_check("{")["problems"])
    assert "over" in str(read_cuda_check(" " * 300_000)["problems"])
    failed = ",".join(["{}"] * 500)
    huge = read_cuda_check(f'{{"driver": "{"d" * 5000}", "failed": [{failed}]}}')
    assert len(str(huge["driver"])) == 300 and len(cast(list[object], huge["failed"])) == 64
    assert read_cuda_check('{"status_ok": NaN}') == {"status_ok": None}
    deep = read_cuda_check('{"gpus": ' + "[" * 900 + "]" * 900 + "}")
    assert deep == {"gpus": [[[[None]]]]}, "nesting is cut, never a crash"
    assert "not JSON" in str(read_cuda_check("[" * 100_000 + "]" * 100_000)["problems"])


def test_the_import_check_follows_the_lock() -> None:
    assert import_check(TF_LOCK) == "tensorflow"
    assert import_check(empty_lock()) == ""
    nightly = dataclasses.replace(empty_lock(), requirements=("tf-nightly==2.22.0.dev1",))
    assert import_check(nightly) == "tensorflow"
    bare = plan(lock=empty_lock(), lock_bytes=EMPTY_LOCK_BYTES)
    assert bare.build_args["CHECK_IMPORT"] == "" and bare.pins == ()


def test_the_build_request_and_its_command_line_come_from_the_same_fields() -> None:
    request = plan().build_request("http://127.0.0.1:38471", DOCKERFILE, Path("/cache/context"))
    argv = request.argv()
    assert argv[:10] == [
        "docker",
        "build",
        "--force-rm",
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
    # Remove the intermediate containers of every build, also of one that fails or is cancelled
    # (`docker build --force-rm`): a failing `pip install` step's container holds gigabytes.
    assert sdk["rm"] is True and sdk["forcerm"] is True and sdk["decode"] is True


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
        # A CUDA image is built FROM its NVIDIA image (BASE).
        below = self.images[request.build_args["BASE"]][1] if request.target == "cuda" else ["base"]
        layers = [*below, "nvidia" if request.target == "nvidia" else "tf"]
        self.images[request.tag] = (dict(request.labels), layers)
        return Finished(exit_code=0, timed_out=False, log_tail="", seconds=0.0)


def ensure(backend: DockerBackend, planned: ImagePlan, tmp_path: Path) -> tuple[bool, list[str]]:
    """Reuse or build against the fake engine; the wheels are not fetched (no index here)."""
    fake = cast(FakeEngine, backend.engine)
    fake.builds.clear()
    backend.wheels.ensure = lambda *args, **kwargs: []  # type: ignore[method-assign]
    image = backend.ensure_plan(planned, BASE, tmp_path / "logs")
    return image.built, [b.target for b in fake.builds]


def test_ensure_reuses_what_is_current_and_builds_the_nvidia_image_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The machine's uv cache and the wheel cache beside it: this test's own.
    monkeypatch.setenv(cache.UV_CACHE_VARIABLE, str(tmp_path / "machine" / cache.UV_CACHE))
    fake = FakeEngine()
    backend = DockerBackend(tmp_path / "cache", Progress(quiet=True), engine=cast(Engine, fake))
    cuda = plan(spec(flavour=Flavour.CUDA))
    nvidia = cuda.below
    assert nvidia is not None
    assert ensure(backend, cuda, tmp_path) == (True, ["nvidia", "cuda"]), "cold: NVIDIA, then CUDA"
    assert ensure(backend, cuda, tmp_path) == (False, []), "warm: nothing is built"
    assert ensure(backend, nvidia, tmp_path) == (False, [])
    # The NVIDIA image was rebuilt since (new layers): the CUDA image no longer sits on it.
    labels, _ = fake.images[nvidia.tag]
    fake.images[nvidia.tag] = (labels, ["base", "nvidia-rebuilt"])
    assert ensure(backend, cuda, tmp_path) == (True, ["cuda"])
    # Only the CUDA image is left: it is still current and is reused.
    del fake.images[nvidia.tag]
    assert ensure(backend, cuda, tmp_path) == (False, [])
    # A stale image (another hash under the tag) is never reused.
    fake.images[nvidia.tag] = ({"tfbisect.hash": "stale"}, ["base", "old"])
    assert ensure(backend, nvidia, tmp_path) == (True, ["nvidia"])
    req = tmp_path / "machine" / cache.WHEELS / "req"  # beside the wheels, whatever the cache folder
    written = [(req / name).read_text() for name in nvidia.requirement_files()]
    assert sorted("".join(written).splitlines()) == sorted(
        requirement_text(nvidia.pins, hashes=True).splitlines()
    )
    assert (
        (tmp_path / "cache" / "context" / "cuda_check.py")
        .read_text()
        .startswith('"""TensorFlow\'s own check')
    )
