"""The Docker backend for real: Debian bases, CPU images on Python 3.9 and 3.11, a CUDA image,
each run in a locked-down container, and results that agree with the venv backend's."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tfbisect.core.cudasets import CU11
from tfbisect.core.outcome import Outcome
from tfbisect.core.record import RunRecord
from tfbisect.core.store import ResultStore

from conftest import cli

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.docker]


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def site_volumes() -> set[str]:
    return set(docker("volume", "ls", "--quiet", "--filter", "label=tfbisect.site").split())


def tags() -> set[str]:
    out = docker("images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "reference=tfbisect*")
    return set(out.split())


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Reports and caches of their own (venvs, bases' work folders); the engine's images are
    the machine's, so every test holds whether an image was there before (reused) or not (built).
    Afterwards the images this module's builds tagged are removed; images that were there before,
    or that others made meanwhile, stay.  The Debian bases it built stay until the session ends
    (conftest's `engine_left_as_found`): the next Docker module finds them."""
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        pytest.fail("no Docker engine answers: .ci/setup starts one (dockerd)")
    before, volumes = tags(), site_volumes()
    path = tmp_path_factory.mktemp("docker")
    yield path
    filled = sorted(site_volumes() - volumes)  # the CPU releases' site volumes this module filled
    if filled:
        subprocess.run(["docker", "volume", "rm", "--force", *filled], capture_output=True, check=False)
    made = set()
    for log in (path / "reports" / "logs").rglob("*.build.log"):
        made |= set(re.findall(r"^Successfully tagged (\S+)$", log.read_text(errors="replace"), re.M))
    made -= before
    if made:
        subprocess.run(["docker", "image", "rm", "--force", *sorted(made)], capture_output=True, check=False)
    # Venvs and bases' work folders: pytest would keep them in its last three temp folders.  (The
    # wheels are the machine's, beside its uv cache: kept for the next run, like uv's.)
    shutil.rmtree(path / "cache", ignore_errors=True)


def tfbisect(
    workspace: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return cli(workspace / "reports", *args, cache=workspace / "cache", env=env)


def record(workspace: Path, key: str, scenario: str = "gradient_mismatch") -> RunRecord:
    store = ResultStore(workspace / "reports" / "results")
    found = [r for _, r in store.records(scenario) if r.spec.key == key]
    assert found, f"no stored result {key}"
    return found[0]


def probe_outcomes(rec: RunRecord) -> dict[str, str]:
    assert rec.document is not None
    return {p["name"]: p["outcome"] for p in rec.document["probes"]}


def container_gone(rec: RunRecord) -> None:
    """The run's own container is removed (others' containers may run meanwhile)."""
    name = str(rec.extra["container"])
    assert name.startswith("tfbisect-")
    assert docker("ps", "--all", "--quiet", "--filter", f"name=^/{name}$").strip() == ""


def built(done: subprocess.CompletedProcess[str], prefix: str) -> bool:
    """Whether this call built the image whose tag starts with `prefix` (else it was reused)."""
    if not any("building the image " + prefix in line for line in done.stderr.splitlines()):
        return False
    # the echo: --force-rm, so a failed or cancelled step leaves no container behind
    assert f"+ docker build --force-rm --network host --file {ROOT / 'Dockerfile'}" in done.stderr
    return True


@pytest.mark.parametrize(
    ("version", "python", "suite"), [("2.9.3", "3.9", "bullseye"), ("2.21.0", "3.11", "bookworm")]
)
def test_cpu_image_agrees_with_the_venv(workspace: Path, version: str, python: str, suite: str) -> None:
    done = tfbisect(workspace, "run", "--tf", version, "--python", python, "--backend", "docker")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    in_docker = record(workspace, f"tf{version}-py{python}-cpu-docker")
    assert in_docker.outcome in (Outcome.REPRODUCED, Outcome.NOT_REPRODUCED)
    extra = in_docker.extra
    # A CPU release runs on its base's runtime image with its site volume (envs/docker_sites.py).
    image, volume = str(extra["image"]), str(extra["site_volume"])
    assert extra["gpu_visible"] is False and image.startswith(f"tfbisect:runtime-py{python}-")
    assert volume.startswith(f"tfbisect-site-tf{version}-py{python}-cpu-") and volume in site_volumes()
    filled = f"filling the volume {volume}" in done.stderr
    assert filled or "filling" not in done.stderr
    if filled:  # installed by the host's uv with its sha256, from the wheels mounted read-only
        [log] = (workspace / "reports" / "logs").rglob(f"tf{version}-py{python}-cpu-docker.fill.log")
        fill_log = log.read_text()
        assert "tfbisect: installing with uv (sha256 " in fill_log and "--network none" in fill_log
        assert f"tensorflow {version}" in fill_log, "the import check ran"
    assert extra["base_image"] in (f"tfbisect-base:{suite}", f"python:{python}-slim")
    assert str(extra["base_image_id"]).startswith("sha256:")
    # Every hardening flag of an image's run, and the volume read-only, never copied into.
    command = in_docker.command
    assert command.startswith("docker run ") and "--network none" in command and "--init" in command
    assert "--user 10001:10001" in command and "--read-only" in command and ":ro" in command
    assert "--memory " in command and "--pids-limit " in command
    assert f"type=volume,src={volume},dst=/opt/venv,readonly,volume-nocopy" in command
    assert f" {image} /opt/venv/bin/python " in command
    container_gone(in_docker)

    venv = tfbisect(workspace, "run", "--tf", version, "--python", python)
    assert venv.returncode in (0, 1), venv.stdout + venv.stderr
    if built(done, image) and version == "2.9.3":
        # One lock for both backends (TF 2.14+ images install the and-cuda lock): the venv took
        # the wheels the image build fetched, none fetched again.
        assert "fetching" not in venv.stderr
    in_venv = record(workspace, f"tf{version}-py{python}-cpu-venv")
    assert probe_outcomes(in_docker) == probe_outcomes(in_venv)
    assert in_docker.outcome is in_venv.outcome

    again = tfbisect(workspace, "run", "--tf", version, "--python", python, "--backend", "docker", "--force")
    assert again.returncode == done.returncode
    assert "building" not in again.stderr, "an unchanged image must be reused, not rebuilt"
    assert "filling" not in again.stderr, "a complete site volume must be reused, not refilled"
    assert record(workspace, f"tf{version}-py{python}-cpu-docker").extra["site_volume"] == volume


def test_recorded_image_id_is_the_images_own_and_the_bases_is_apart(workspace: Path) -> None:
    """The record names the image that ran by its own ID (two TF images never share one), the base
    apart with the base's ID, and the image's registry digest where it has one (built here: none)."""
    done = tfbisect(workspace, "run", "--tf", "2.9.3", "--python", "3.9", "--backend", "docker")
    assert done.returncode in (0, 1), done.stdout + done.stderr
    extra = record(workspace, "tf2.9.3-py3.9-cpu-docker").extra
    image = str(extra["image"])
    assert extra["image_id"] == docker("image", "inspect", "--format", "{{.Id}}", image).strip()
    assert (
        extra["base_image_id"]
        == docker("image", "inspect", "--format", "{{.Id}}", str(extra["base_image"])).strip()
    )
    assert extra["image_id"] != extra["base_image_id"]
    assert "base_digest" not in extra
    digests = json.loads(docker("image", "inspect", "--format", "{{json .RepoDigests}}", image))
    assert extra["image_repo_digest"] == (digests[0] if digests else None)


def image_layers(image: str) -> list[str]:
    return list(json.loads(docker("image", "inspect", image))[0]["RootFS"]["Layers"])


def image_size(image: str) -> int:
    return int(docker("image", "inspect", "--format", "{{.Size}}", image))


def nvidia_under(images: list[str]) -> str:
    """The tfbisect-nvidia image whose layers are the bottom layers of every one of `images`."""
    candidates = docker(
        "images", "--format", "{{.Repository}}:{{.Tag}}", "--filter", "reference=tfbisect-nvidia"
    )
    for candidate in candidates.split():
        below = image_layers(candidate)
        if all(image_layers(image)[: len(below)] == below for image in images):
            return candidate
    raise AssertionError(f"no NVIDIA image under all of {images}: {candidates}")


def test_gpu_check_builds_cuda_images_that_tfs_own_loader_accepts(workspace: Path) -> None:
    """`tfbisect gpu-check` for a CUDA 11 line from the cu11 set (2.12.0 and 2.12.1) and a CUDA 12
    line from its own `tensorflow[and-cuda]` lock (2.21.0): each CUDA image's build ran TF's
    loader check, which opened every library TF asks for from the image's NVIDIA wheels; the
    two 2.12 images sit on one NVIDIA image; without a GPU each says it ran on CPU, and gets the
    CPU image's answers."""
    done = tfbisect(
        workspace, "gpu-check", "--tf", "2.12.0", "--tf", "2.12.1", "--tf", "2.21.0", "--python", "3.11"
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    lines = [line for line in done.stdout.splitlines() if line.startswith("TF ")]
    assert [line.split()[1] for line in lines] == ["2.12.0", "2.12.1", "2.21.0"]
    assert "gpu-check: 3 of 3 CUDA images passed" in done.stderr
    for version in ("2.12.0", "2.12.1", "2.21.0"):
        cuda = record(workspace, f"tf{version}-py3.11-cuda-docker")
        check = cuda.extra["cuda_check"]
        assert isinstance(check, dict), f"{version}: the record carries the image's loader check"
        assert check["status_ok"] is True and check["failed"] == [] and check["problems"] == []
        assert str(check["loader"]).endswith("DsoLoader22TryDlopenCUDALibrariesEv")
        libraries = check["libraries"]
        assert isinstance(libraries, list)
        opened = {lib["soname"] for lib in libraries}
        assert all(str(lib["wheel"]).startswith("nvidia-") and lib["version"] for lib in libraries)
        if version.startswith("2.12"):
            assert opened == {soname for soname, _ in CU11.sonames}, "every soname the cu11 mapping rests on"
            assert {lib["wheel"] for lib in libraries} <= {r.split("==")[0] for r in CU11.requirements}
            assert check["build_info"]["cuda_version"] == "11.8"
        else:
            assert {"libcudart.so.12", "libcudnn.so.9"} <= opened and len(opened) >= 6
            assert str(check["build_info"]["cuda_version"]).startswith("12.5")
        line = next(line for line in lines if line.split()[1] == version)
        assert f"{len(libraries)} opened by TF's loader" in line and str(cuda.extra["image"]) in line
        gpu = bool(cuda.extra["gpu_visible"])
        assert cuda.ran_on == cuda.extra["ran_on"] and str(cuda.ran_on).startswith("GPU" if gpu else "CPU")
        assert f"ran on {cuda.ran_on}" in line
        image = str(cuda.extra["image"])
        history = docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", image)
        assert "cuda_check.py --output /opt/tfbisect/cuda-check.json" in history, "the check is a build step"
        container_gone(cuda)
    # The 2.12 images sit on one NVIDIA image: its layers (the set, several GB) are stored once.
    images = [
        str(record(workspace, f"tf{v}-py3.11-cuda-docker").extra["image"]) for v in ("2.12.0", "2.12.1")
    ]
    nvidia = nvidia_under(images)
    assert nvidia.startswith("tfbisect-nvidia:cu11-py3.11-") and image_size(nvidia) > 2_500_000_000
    assert {
        record(workspace, f"tf{v}-py3.11-cuda-docker").extra["nvidia_image"] for v in ("2.12.0", "2.12.1")
    } == {nvidia}
    assert image_layers(images[0]) != image_layers(images[1]), "each has its own TF layer on top"
    # The check fails when a library is missing, and says which: cuDNN hidden under a tmpfs.
    cudnn = "/opt/venv/lib/python3.11/site-packages/nvidia/cudnn/lib"
    hidden = subprocess.run(
        [
            *("docker", "run", "--rm", "--network", "none", "--tmpfs", cudnn, "--tmpfs", "/tmp", images[1]),
            *("python", "/opt/tfbisect/cuda_check.py", "--output", "/tmp/check.json"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert hidden.returncode == 1, hidden.stdout + hidden.stderr
    assert "TF loader check FAILED: TF could not open libcudnn.so.8" in hidden.stderr
    assert "opened 7 CUDA libraries" in hidden.stdout
    if not record(workspace, "tf2.21.0-py3.11-cuda-docker").extra["gpu_visible"]:
        cpu_run = tfbisect(workspace, "run", "--tf", "2.21.0", "--python", "3.11", "--backend", "docker")
        assert cpu_run.returncode in (0, 1), cpu_run.stdout + cpu_run.stderr
        cpu = record(workspace, "tf2.21.0-py3.11-cpu-docker")
        assert probe_outcomes(record(workspace, "tf2.21.0-py3.11-cuda-docker")) == probe_outcomes(cpu)


def test_timeout_kills_and_removes_the_container(workspace: Path, tmp_path: Path) -> None:
    hang = tmp_path / "hang.py"
    hang.write_text("import time\nprint('probe sleeping')\ntime.sleep(600)\n")
    done = tfbisect(
        workspace,
        "run",
        "--tf",
        "2.9.3",
        "--python",
        "3.9",
        "--backend",
        "docker",
        "--scenario",
        str(hang),
        "--timeout",
        "8",
    )
    assert done.returncode == 124, done.stdout + done.stderr
    rec = record(workspace, "tf2.9.3-py3.9-cpu-docker", scenario="hang")
    assert rec.outcome is Outcome.TIMEOUT
    container_gone(rec)


def test_no_engine_says_venv_works(workspace: Path) -> None:
    env = dict(os.environ, DOCKER_HOST="unix:///nonexistent/docker.sock")
    done = tfbisect(workspace, "run", "--tf", "2.9.3", "--backend", "docker", env=env)
    assert done.returncode == 10
    assert "Docker engine is not running" in done.stderr and "--backend venv" in done.stderr
    assert "unix:///nonexistent/docker.sock (No such file or directory)" in done.stderr


def test_wheel_cache_builds_sdists_and_fetches_each_wheel_once(tmp_path: Path) -> None:
    """termcolor 1.1.0 (pinned by TF 2.0-2.7 locks) ships only as source; six is a plain wheel."""
    from tfbisect.core.progress import Progress
    from tfbisect.envs.wheelhouse import Wheelhouse, pins

    lock = (ROOT / "bisect" / "tfbisect" / "data" / "locks" / "tf2.7.0-py3.9-cpu.txt").read_text()
    wanted = [p for p in pins(lock) if p.name in ("termcolor", "six")]
    assert {p.key for p in wanted} == {"termcolor==1.1.0", "six==1.16.0"}
    house = Wheelhouse(tmp_path, Progress(quiet=True))
    first = house.ensure(wanted, "3.9", tmp_path / "fetch.log")
    assert sorted(p.name for p in first) == [
        "six-1.16.0-py2.py3-none-any.whl",
        "termcolor-1.1.0-py3-none-any.whl",
    ]
    fetched = house.fetched_bytes
    assert fetched == sum(p.stat().st_size for p in first)
    again = Wheelhouse(tmp_path, Progress(quiet=True))
    assert again.ensure(wanted, "3.9", tmp_path / "fetch.log") == first
    assert again.fetched_bytes == 0  # bytes fetched / unique wheel bytes stays 1.0


def test_a_file_is_read_from_an_image_without_running_it(tmp_path: Path) -> None:
    """How the driver reads what an image's build left (the CUDA check): a regular file only,
    bounded, from a container that is created and removed, never started.  The image is a tiny
    root file system imported here: a file, a link to it, a folder and a big file."""
    import io
    import tarfile
    import uuid

    from tfbisect.core.progress import Progress
    from tfbisect.envs.docker_engine import connect

    rootfs = tmp_path / "rootfs.tar"
    with tarfile.open(rootfs, "w") as tar:
        for name, data in (("check.json", b'{"ok": true}'), ("big.bin", b"x" * 300_000)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("link.json")
        link.type, link.linkname = tarfile.SYMTYPE, "check.json"
        tar.addfile(link)
        folder = tarfile.TarInfo("folder")
        folder.type = tarfile.DIRTYPE
        tar.addfile(folder)
    image = f"tfbisect-test-readfile:{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "import", str(rootfs), image], capture_output=True, check=True)
    engine = connect(Progress(quiet=True), echo=False)
    try:
        before = docker("ps", "--all", "--quiet")
        assert engine.read_file(image, "/check.json", 1024) == b'{"ok": true}'
        assert engine.read_file(image, "/big.bin", 256 * 1024) is None, "over the limit: not read"
        assert engine.read_file(image, "/link.json", 1024) is None, "a link is not followed"
        assert engine.read_file(image, "/folder", 1024) is None, "a folder is no file"
        assert engine.read_file(image, "/nonexistent", 1024) is None
        assert docker("ps", "--all", "--quiet") == before, "every container it made is gone"
    finally:
        subprocess.run(["docker", "image", "rm", "--force", image], capture_output=True, check=False)


def test_a_probe_is_traced_in_a_container_and_its_sources_read_from_the_wheels(workspace: Path) -> None:
    """The narrowing's traced run on the Docker backend: the tracer mounted read-only, the trace
    written by the container's unprivileged user, and the installed sources read back from the
    wheels the image was built from (no download, nothing run)."""
    from tfbisect.core import catalogue
    from tfbisect.core.progress import Progress
    from tfbisect.core.scenario import find
    from tfbisect.envs.cache import wheel_cache_dir
    from tfbisect.narrow.narrower import TRACED_PACKAGES
    from tfbisect.narrow.sources import read_places
    from tfbisect.narrow.traces import Trace
    from tfbisect.runs.runner import Runner, Settings

    containers = docker("ps", "--all", "--quiet", "--filter", "name=tfbisect-").split()
    runner = Runner(
        catalogue.load_snapshot(), Settings(workspace / "reports", workspace / "cache"), Progress(quiet=True)
    )
    scenario = find("gradient_mismatch")
    spec = runner.spec_for("2.21.0", python="3.11", backends=("docker",))
    done = runner.trace(spec, scenario, ["gradient_eager_plain"], TRACED_PACKAGES)
    trace = Trace.from_dict(done.document)
    assert trace.python.startswith("3.11") and trace.versions["tensorflow"] == "2.21.0"
    assert any(path.startswith("keras/src/losses/") for path in trace.lines), sorted(trace.lines)[:20]
    assert done.result is not None and [p["name"] for p in done.result["probes"]] == ["gradient_eager_plain"]
    places = runner.source_places(spec, scenario)
    assert places and all(
        place.suffix == ".whl" and place.is_relative_to(wheel_cache_dir()) for place in places
    )
    sources = read_places(places, set(trace.lines))
    assert set(trace.lines) == set(sources)  # every file that ran is in the wheels, byte for byte readable
    assert docker("ps", "--all", "--quiet", "--filter", "name=tfbisect-").split() == containers


def test_a_site_volume_left_partial_is_refilled_and_one_gone_is_no_verdict(
    workspace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filling killed before its marker leaves a volume that is never used: the next run fills
    it again.  A volume removed after its release was prepared: the run cannot start (the venv's
    python is missing from the empty volume the engine makes), which is a skip, never a verdict."""
    from tfbisect.core import catalogue
    from tfbisect.core.progress import Progress
    from tfbisect.core.scenario import find
    from tfbisect.runs.runner import Runner, Settings

    args = ("run", "--tf", "2.9.3", "--python", "3.9", "--backend", "docker", "--force")
    store = ResultStore(workspace / "reports" / "results")
    if not any(r.spec.key == "tf2.9.3-py3.9-cpu-docker" for _, r in store.records("gradient_mismatch")):
        assert tfbisect(workspace, *args).returncode in (0, 1)  # alone, not after the tests above
    extra = record(workspace, "tf2.9.3-py3.9-cpu-docker").extra
    volume, image = str(extra["site_volume"]), str(extra["image"])
    mount = f"type=volume,src={volume},dst=/opt/venv"
    docker("run", "--rm", "--user", "0", "--mount", mount, image, "rm", "/opt/venv/.tfbisect-site")
    again = tfbisect(workspace, *args)
    assert again.returncode in (0, 1) and f"filling the volume {volume}" in again.stderr, again.stderr
    assert record(workspace, "tf2.9.3-py3.9-cpu-docker").outcome in (
        Outcome.REPRODUCED,
        Outcome.NOT_REPRODUCED,
    )

    runner = Runner(
        catalogue.load_snapshot(),
        Settings(workspace / "reports", workspace / "cache", force=True),
        Progress(quiet=True),
    )
    scenario = find("gradient_mismatch")
    spec = runner.spec_for("2.9.3", python="3.9", backends=("docker",))
    prepared = runner.prepare(spec, scenario)
    docker("volume", "rm", volume)
    monkeypatch.setattr(runner, "prepare", lambda spec, scenario: prepared)
    gone = runner.run(spec, scenario).record
    assert gone.outcome is Outcome.SKIP and gone.failure is not None, gone
    assert f"{volume} was gone when the run began" in gone.failure.message, gone.failure
    assert "/opt/venv/bin/python" in gone.failure.message, "what the engine said, kept"
    left = docker("volume", "ls", "--quiet").split()
    assert volume not in left, "the empty volume the engine made for the run is not left"
