"""The proof in a Docker-prepared environment: a thin layer on the cached image, run through the
Docker backend's own launch, the cached image unchanged, nothing left behind.

The real test needs no TensorFlow and no base image build: its "cached image" is imported from a
root file system of this machine's own Python (a few seconds), laid out as the backend's images
are (a venv at /opt/venv, a package in its site-packages with bytecode that is never checked
against its source, user 10001).  Only the preparation is the test's (`Runner.prepare` hands that
image back); the rest is tfbisect's: the layer's build, the locked-down run, the stored record."""

from __future__ import annotations

import ast
import base64
import hashlib
import io
import json
import os
import py_compile
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import time
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tfbisect.core import catalogue
from tfbisect.core.errors import MachineFaultError, TraceError
from tfbisect.core.progress import Progress
from tfbisect.core.scenario import Scenario, find
from tfbisect.core.spec import EnvSpec, Flavour
from tfbisect.envs import docker_proof
from tfbisect.envs.backend_docker import Image
from tfbisect.envs.bases import Base
from tfbisect.envs.cache import UV_CACHE_VARIABLE, wheel_cache_dir
from tfbisect.envs.locks import Lock
from tfbisect.envs.wheelhouse import Pin
from tfbisect.platform.process import Finished
from tfbisect.runs.patched import PatchedRuns, PinError, install_failure, unstarted
from tfbisect.runs.runner import Runner, Settings

PYTHON = f"{sys.version_info.major}.{sys.version_info.minor}"
OLD = "def answer():\n    return 1\n"
NEW = "def answer():\n    return 2\n"
# A scenario whose one probe, `answer`, depends on one function of the installed `demo` package.
SCENARIO = """import hashlib, json, sys
from pathlib import Path

import demo

here = Path(__file__)
bad = demo.answer() != 1
probe = {"name": "answer", "kind": "fault", "outcome": "mismatch" if bad else "match",
         "summary": "answer() is %r" % demo.answer(), "metrics": {}, "duration_s": 0.0}
outcome = "reproduced" if bad else "not_reproduced"
document = {
    "schema_version": 1,
    "scenario": {"name": here.stem, "sha256": hashlib.sha256(here.read_bytes()).hexdigest()},
    "environment": {"python": sys.version.split()[0]},
    "probes": [probe],
    "verdict": {"outcome": outcome, "summary": probe["summary"], "disagreements": []},
    "timings": {"total_s": 0.0},
}
Path(sys.argv[sys.argv.index("--output") + 1]).write_text(json.dumps(document))
sys.exit(1 if bad else 0)
"""


# ---- the pure parts -------------------------------------------------------------------------------


def test_the_layer_is_built_on_the_cached_images_id_and_ends_as_its_user(tmp_path: Path) -> None:
    layer = docker_proof.Layer({"pkg/b.py": "b", "../../etc/x.py": "x"})
    folder = docker_proof.write_context(tmp_path / "ctx", layer, "sha256:abc", "tfbisect")
    text = (folder / "Dockerfile").read_text()
    assert text.startswith("FROM sha256:abc AS proof\nUSER root\n") and text.endswith("USER tfbisect\n")
    assert 'RUN ["python", "/opt/tfbisect-proof/apply.py"]' in text  # exec form: no shell needed
    # Staged under numbers, the paths only in their list (the script checks them in the image).
    assert sorted(p.name for p in (folder / "stage" / "files").iterdir()) == ["0", "1"]
    listed = ast.literal_eval((folder / "stage" / "patches.txt").read_text())
    assert listed == ["../../etc/x.py", "pkg/b.py"]
    assert (folder / "stage" / "files" / "1").read_text() == "b"
    assert not (folder / "stage" / "pins.txt").exists()
    pinned = docker_proof.Layer({}, (Pin("six", "1.16.0", frozenset({"a" * 64})),), "six==1.16.0 --hash=x\n")
    other = docker_proof.write_context(tmp_path / "pins", pinned, "sha256:abc", "")
    assert (other / "stage" / "pins.txt").read_text() == "six==1.16.0 --hash=x\n"
    assert (other / "Dockerfile").read_text().endswith("USER root\n")
    assert docker_proof.proof_tag().startswith(f"tfbisect-proof:{os.getpid()}-")


class FakeImages:
    """The three engine calls the sweep makes, over a table of images (pure logic only), and the
    volume calls an ImageEngine has (none here)."""

    def __init__(self, images: dict[str, dict[str, object]]) -> None:
        self.images = images
        self.removed: list[str] = []

    def image_list(self, reference: str) -> list[tuple[str, int]]:
        return [(tag, 1) for tag in self.images if tag.startswith(f"{reference}:")]

    def image_inspect(self, ref: str) -> dict[str, object] | None:
        return self.images.get(ref)

    def remove_image(self, ref: str) -> None:
        self.removed.append(ref)

    def site_volumes(self) -> dict[str, dict[str, str]]:
        return {}

    def remove_volume(self, name: str) -> bool:
        raise AssertionError(f"the proof images' sweep removed the volume {name}")


def test_only_a_dead_owners_old_proof_image_is_swept() -> None:
    import socket

    host = socket.gethostname()
    dead = 2**22 + 12345  # above pid_max's default: no such process

    def image(owner: int, age_h: float, on: str = host) -> dict[str, object]:
        created = time.strftime("%Y-%m-%dT%H:%M:%S.123456789Z", time.gmtime(NOW - age_h * 3600))
        labels = {docker_proof.OWNER_LABEL: str(owner), docker_proof.HOST_LABEL: on}
        return {"Created": created, "Config": {"Labels": labels}}

    NOW = time.time()
    engine = FakeImages(
        {
            "tfbisect-proof:old-dead": image(dead, 2),
            "tfbisect-proof:young-dead": image(dead, 0.1),
            "tfbisect-proof:old-alive": image(os.getpid(), 2),
            "tfbisect-proof:elsewhere-2h": image(dead, 2, "another-host"),
            "tfbisect-proof:elsewhere-2d": image(os.getpid(), 48, "another-host"),
            "tfbisect:tf2.21.0-py3.11-cpu-abc": image(dead, 100),  # a cached image: never
        }
    )
    assert docker_proof.sweep_proof_images(engine, now=NOW) == 2
    assert sorted(engine.removed) == ["tfbisect-proof:elsewhere-2d", "tfbisect-proof:old-dead"]
    assert docker_proof.created("garbage", 7.0) == 7.0 and docker_proof.created(None, 7.0) == 7.0


def test_a_run_that_never_started_is_the_machines_fault_or_no_result(tmp_path: Path) -> None:
    gone = "docker: Cannot connect to the Docker daemon at unix:///var/run/docker.sock."
    assert isinstance(unstarted(gone, tmp_path / "log"), MachineFaultError)
    assert isinstance(
        unstarted("write /var/lib/docker/x: no space left on device", tmp_path), MachineFaultError
    )
    other = unstarted("The container could not start: no such image", tmp_path / "log")
    assert isinstance(other, TraceError) and not isinstance(other, MachineFaultError)


class Pinging:
    """An engine whose `ping` answers or fails (the engine gone), for the fault words alone."""

    def __init__(self, answers: bool) -> None:
        self.answers = answers
        self.client = self

    def ping(self) -> bool:
        if not self.answers:
            raise requests.exceptions.ConnectionError("Connection refused")
        return True


def test_a_failed_layer_is_the_machines_fault_only_when_the_machine_or_engine_failed(tmp_path: Path) -> None:
    image = Image(
        "tfbisect:tf2.21.0-x", "sha256:abc", Base("b", PYTHON, "user", "sha256:b"), Flavour.CPU, False
    )

    def failure(engine: Pinging, tail: str, code: int | None = 1) -> Exception:
        finished = Finished(exit_code=code, timed_out=code is None, log_tail=tail, seconds=1.0)
        return docker_proof.build_failure(engine, image, finished, tmp_path / "log")  # type: ignore[arg-type]

    assert isinstance(failure(Pinging(True), "write /x: no space left on device"), MachineFaultError)
    gone = failure(Pinging(False), "the engine failed: Connection aborted")
    assert isinstance(gone, MachineFaultError) and "stopped answering" in gone.what
    pip = "ERROR: Could not find a version that satisfies the requirement demo==9\nERROR: No matching distribution found for demo==9"
    layer = failure(Pinging(True), pip)
    assert isinstance(layer, docker_proof.LayerError) and layer.status == 1
    assert "No matching distribution" in layer.what
    pin = Pin("demo", "9", frozenset({"0" * 64}))
    stored = install_failure([pin], layer.tail, layer.status, tmp_path / "log")
    assert isinstance(stored, PinError) and stored.lasting  # stored: it never resolves
    timed_out = failure(Pinging(True), "Step 5/6 : RUN", None)
    assert isinstance(timed_out, docker_proof.LayerError) and "timed out" in timed_out.what
    again = install_failure([pin], timed_out.tail, None, tmp_path / "log")
    assert isinstance(again, PinError) and again.inconclusive and not again.lasting


# ---- for real ---------------------------------------------------------------------------------------


def docker(*args: str, check: bool = True) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=check).stdout


def record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
    return f"{name},sha256={digest},{len(data)}"


def distribution(version: str, text: str) -> dict[str, bytes]:
    """The files of `demo` `version` as a wheel holds them (its RECORD last)."""
    info = f"demo-{version}.dist-info"
    files = {
        "demo/__init__.py": text.encode(),
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: demo\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tfbisect-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    lines = [record_line(name, data) for name, data in files.items()]
    files[f"{info}/RECORD"] = ("\n".join([*lines, f"{info}/RECORD,,"]) + "\n").encode()
    return files


def installed(version: str, text: str) -> dict[str, bytes]:
    """`demo` as pip leaves it installed: its files, and bytecode in its RECORD."""
    files = distribution(version, text)
    info = f"demo-{version}.dist-info"
    cached = f"demo/__pycache__/__init__.{sys.implementation.cache_tag}.pyc"
    files[f"{info}/RECORD"] += f"{cached},,\n{info}/INSTALLER,,\n".encode()
    files[f"{info}/INSTALLER"] = b"pip\n"
    return files


def wheel(folder: Path, version: str, text: str) -> Pin:
    """`demo` `version` as a wheel in `folder`, and its pin (with the wheel's sha256)."""
    path = folder / f"demo-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in distribution(version, text).items():
            archive.writestr(name, data)
    return Pin("demo", version, frozenset({hashlib.sha256(path.read_bytes()).hexdigest()}))


def descendants(image: str) -> set[str]:
    """The images built on `image` (the engine's, whoever else builds meanwhile: only these count)."""
    ids = docker("images", "--all", "--quiet", "--no-trunc").split()
    found = json.loads(docker("image", "inspect", *ids)) if ids else []
    parents = {str(i["Id"]): str(i.get("Parent") or "") for i in found}
    root = json.loads(docker("image", "inspect", image))[0]["Id"]
    below: set[str] = set()
    for start in parents:
        chain, at = [], start
        while at and at not in below and at != root:
            chain.append(at)
            at = parents.get(at, "")
        if at == root or at in below:
            below.update(chain)
    return below


def python_rootfs(tar_path: Path, site: str) -> None:
    """A root file system of this machine's Python (its stdlib, the libraries it and its
    extension modules link), a venv at /opt/venv with the `demo` package whose bytecode says 2
    while its source says 2 too, compiled unchecked (never compared with the source)."""
    executable = Path(os.path.realpath(sys.executable))
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    objects = [executable, *stdlib.glob("lib-dynload/*.so")]
    libraries: set[str] = set()
    for found in objects:
        out = subprocess.run(["ldd", str(found)], capture_output=True, text=True, check=False).stdout
        for line in out.splitlines():
            parts = line.split()
            path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
            if path.startswith("/"):
                libraries.add(path)
    skip = {"site-packages", "test", "idlelib", "tkinter", "lib2to3", "ensurepip", "pydoc_data", "turtledemo"}

    def add_file(tar: tarfile.TarFile, source: Path, name: str) -> None:
        tar.add(os.path.realpath(source), arcname=name, recursive=False)

    def add_text(tar: tarfile.TarFile, name: str, text: str | bytes, mode: int = 0o644) -> None:
        data = text.encode() if isinstance(text, str) else text
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), mode, int(time.time())
        tar.addfile(info, io.BytesIO(data))

    with tarfile.open(tar_path, "w") as tar:
        add_file(tar, executable, str(executable).lstrip("/"))
        for library in sorted(libraries):
            add_file(tar, Path(library), library.lstrip("/"))
        for root, folders, files in os.walk(stdlib):
            folders[:] = [f for f in folders if f not in skip and not f.startswith("config-")]
            for name in files:
                source = Path(root) / name
                add_file(tar, source, str(source).lstrip("/"))
        add_text(
            tar,
            "etc/passwd",
            "root:x:0:0:root:/root:/bin/false\ntfbisect:x:10001:10001::/home/tfbisect:/bin/false\n",
        )
        add_text(tar, "etc/group", "root:x:0:\ntfbisect:x:10001:\n")
        add_text(
            tar,
            "opt/venv/pyvenv.cfg",
            f"home = {executable.parent}\ninclude-system-site-packages = false\nversion = {PYTHON}\n",
        )
        link = tarfile.TarInfo("opt/venv/bin/python")
        link.type, link.linkname = tarfile.SYMTYPE, str(executable)
        tar.addfile(link)
        for name, data in installed("2.0", NEW).items():
            add_text(tar, f"{site}/{name}", data)
        pip = Path(sysconfig.get_paths()["purelib"])
        for root, folders, files in os.walk(pip / "pip"):
            folders[:] = [f for f in folders if f != "__pycache__"]
            for name in files:
                source = Path(root) / name
                add_file(tar, source, f"{site}/{source.relative_to(pip)}")
        compiled = tar_path.parent / "demo.pyc"
        source = tar_path.parent / "demo_init.py"
        source.write_text(NEW)
        py_compile.compile(
            str(source),
            str(compiled),
            doraise=True,
            invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
        )
        add_text(
            tar, f"{site}/demo/__pycache__/__init__.{sys.implementation.cache_tag}.pyc", compiled.read_bytes()
        )


@pytest.fixture(scope="module")
def cached_image(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if subprocess.run(["docker", "info"], capture_output=True, check=False).returncode != 0:
        pytest.fail("no Docker engine answers: .ci/setup starts one (dockerd)")
    folder = tmp_path_factory.mktemp("rootfs")
    tar_path = folder / "rootfs.tar"
    python_rootfs(tar_path, f"opt/venv/lib/python{PYTHON}/site-packages")
    tag = f"tfbisect-test-proofbase:{uuid.uuid4().hex[:8]}"
    changes = [
        "ENV PATH=/opt/venv/bin:/usr/bin",
        "ENV VIRTUAL_ENV=/opt/venv",
        "ENV PYTHONDONTWRITEBYTECODE=1",
        "USER 10001:10001",
        "WORKDIR /home/tfbisect",
    ]
    docker("import", *(a for c in changes for a in ("--change", c)), str(tar_path), tag)
    tar_path.unlink()
    try:
        yield tag
    finally:
        docker("image", "rm", "--force", tag, check=False)


def proof_runs(
    cached_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[PatchedRuns, EnvSpec, Scenario]:
    """tfbisect's proof runs on the Docker backend, whose preparation hands back `cached_image`;
    the spec and the scenario."""
    path = tmp_path / "demo_answer.py"
    path.write_text(SCENARIO)
    scenario = find(str(path))
    reports, cache = tmp_path / "reports", tmp_path / "cache"
    runner = Runner(catalogue.load_snapshot(), Settings(reports, cache, timeout=120), Progress(quiet=True))
    spec = EnvSpec("2.21.0", PYTHON, backend="docker")
    lock_path = tmp_path / "lock.txt"
    lock_path.write_text("# a test's lock: the image is the test's\n")
    lock = Lock(spec.lock_spec(), lock_path, (), "")
    inspected = json.loads(docker("image", "inspect", cached_image))[0]
    base = Base(cached_image, PYTHON, "user", inspected["Id"])
    image = Image(cached_image, inspected["Id"], base, spec.flavour, False)
    monkeypatch.setattr(runner, "prepare", lambda spec, scenario: (lock, image))
    return PatchedRuns(runner), spec, scenario


@pytest.mark.docker
def test_a_revert_in_a_layer_on_the_cached_image_flips_the_outcome_and_leaves_the_image_alone(
    cached_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    proofs, spec, scenario = proof_runs(cached_image, tmp_path, monkeypatch)
    reports, cache = tmp_path / "reports", tmp_path / "cache"
    inspected = json.loads(docker("image", "inspect", cached_image))[0]
    # A layer with the image's own text changes nothing: still bad.
    plain = proofs.run(spec, scenario, "answer", patches={"demo/__init__.py": NEW})
    assert plain.record.outcome.value == "reproduced", plain.record.log_tail
    reverted = proofs.run(spec, scenario, "answer", patches={"demo/__init__.py": OLD})
    assert reverted.record.outcome.value == "not_reproduced", reverted.record.log_tail
    assert not reverted.reused
    extra = reverted.record.extra
    assert extra["proof_base_image_id"] == inspected["Id"] and str(extra["image"]).startswith(
        "tfbisect-proof:"
    )
    # Every hardening flag of a run: the backend's own launch.
    for flag in ("--init", "--network none", "--user 10001:10001", "--read-only", "--memory", "--pids-limit"):
        assert flag in reverted.record.command, reverted.record.command
    # The cached image is the same image, layer for layer; no proof image, container or copy is left.
    after = json.loads(docker("image", "inspect", cached_image))[0]
    assert after["Id"] == inspected["Id"] and after["RootFS"]["Layers"] == inspected["RootFS"]["Layers"]
    assert descendants(cached_image) == set()
    for done in (plain, reverted):  # its container is removed (others' may run meanwhile)
        name = str(done.record.extra["container"])
        assert docker("ps", "--all", "--quiet", "--filter", f"name=^/{name}$").strip() == ""
    assert list((cache / "proof-copies").iterdir()) == []
    assert not list((cache / "marks").rglob("tfbisect-proof*"))
    # A repeat runs nothing: the stored record, keyed as a venv proof run's.
    again = proofs.run(spec, scenario, "answer", patches={"demo/__init__.py": OLD})
    assert again.reused and again.record.outcome.value == "not_reproduced"
    # A patch that leaves site-packages does not build: no verdict, nothing stored, nothing left.
    with pytest.raises(TraceError, match="proof's layer"):
        proofs.run(spec, scenario, "answer", patches={"../../../../../etc/evil.py": OLD})
    assert descendants(cached_image) == set()
    assert descendants(cached_image) == set(), "a failed layer's steps are removed too"
    shutil.rmtree(reports, ignore_errors=True)


@pytest.mark.docker
def test_a_transplant_installs_the_pin_offline_in_a_layer_and_flips_the_outcome(
    cached_image: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """demo 1.0 put back in the image that has 2.0: from the wheel cache over loopback, hash-checked,
    without its dependencies; the image's pip uninstalls 2.0 (its bytecode too)."""
    # A private wheel cache (the machine's follows tfbisect's uv cache): the demo wheel is put there.
    monkeypatch.setenv(UV_CACHE_VARIABLE, str(tmp_path / "uv"))
    proofs, spec, scenario = proof_runs(cached_image, tmp_path, monkeypatch)
    wheels = wheel_cache_dir() / f"py{PYTHON}"
    wheels.mkdir(parents=True)
    pin = wheel(wheels, "1.0", OLD)
    (wheels / "index.json").write_text(json.dumps({"demo==1.0": "demo-1.0-py3-none-any.whl"}))
    done = proofs.run(spec, scenario, "answer", pins=[pin])
    assert done.record.outcome.value == "not_reproduced", done.record.log_tail
    assert done.record.extra["pins"] == {"demo": "1.0"}
    # A wheel that does not match its lock's hash does not install (pip checks it in the image):
    # not testable, no verdict, nothing left.
    forged = Pin("demo", "1.0", frozenset({"0" * 64}))
    (wheels / "verified.json").unlink(missing_ok=True)
    with pytest.raises(PinError, match=r"(?i)do not match the hashes"):
        proofs.run(spec, scenario, "answer", pins=[forged])
    assert descendants(cached_image) == set()


@pytest.mark.docker
def test_cache_lists_a_proof_image_a_killed_run_left_and_not_one_a_live_run_uses(
    cached_image: str, tmp_path: Path
) -> None:
    """Two thin images on the cached image, tagged and labelled as proof images: one a dead
    process of this host owns (a killed run left it), one this test's own process owns.  The
    listing (two hours on, past the sweep's age) counts the first with its own layer's size and
    says how it goes; it removes nothing."""
    import socket

    from tfbisect.envs import cache
    from tfbisect.envs.docker_engine import connect

    (tmp_path / "blob").write_bytes(os.urandom(3_000_000))  # its own layer: 3 MB, never compressed
    (tmp_path / "Dockerfile").write_text(f"FROM {cached_image}\nCOPY blob /blob\n")
    run, dead = uuid.uuid4().hex[:8], 2**22 + 12345  # above pid_max's default: no such process
    tags = {owner: f"{docker_proof.REPOSITORY}:{owner}-test{run}" for owner in (dead, os.getpid())}
    engine = connect(Progress(quiet=True), echo=False)
    try:
        for owner, tag in tags.items():
            labels = {
                docker_proof.OWNER_LABEL: str(owner),
                docker_proof.HOST_LABEL: socket.gethostname(),
                docker_proof.OF_LABEL: cached_image,
            }
            docker(
                "build",
                "--quiet",
                "--tag",
                tag,
                *(f"--label={k}={v}" for k, v in labels.items()),
                str(tmp_path),
            )
        later = time.time() + 2 * 3600
        left = dict(docker_proof.left_proof_images(engine, now=later))
        assert tags[dead] in left and tags[os.getpid()] not in left
        assert 3_000_000 <= left[tags[dead]] < 4_000_000, left  # its layer, not the image under it
        notes = cache.inventory(tmp_path / "cache", engine=engine, now=later).notes
        note = next(n for n in notes if n.startswith("proof images:"))
        assert f"{len(left)} left by killed runs" in note and "`tfbisect cache prune`" in note
        # Not yet an hour old: a run may still be starting with it; never listed.
        assert tags[dead] not in dict(docker_proof.left_proof_images(engine))
        assert all(docker("image", "inspect", "--format", "{{.Id}}", tag).strip() for tag in tags.values())
    finally:
        for tag in tags.values():
            docker("image", "rm", "--force", tag, check=False)
