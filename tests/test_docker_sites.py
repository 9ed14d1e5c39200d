"""Site volumes (envs/docker_sites.py, envs/docker_volumes.py) as pure logic: what a volume is
named and filled with, when one is reused, refilled or refused, and how a run that cannot find
its volume ends.  The real engine runs them in tests/test_docker.py."""

from __future__ import annotations

import os
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import cast

import pytest

from test_docker_plan import BASE, EMPTY_LOCK_BYTES, TF_LOCK, TF_LOCK_BYTES, empty_lock, spec
from tfbisect.core.errors import EnvironmentBuildError, MachineFaultError
from tfbisect.core.progress import Progress
from tfbisect.envs import cache, docker_sites
from tfbisect.envs.backend_docker import (
    SITE_PYTHON,
    WATCHDOG,
    DockerBackend,
    Image,
    ImagePlan,
    reproducible,
    watched,
)
from tfbisect.envs.bases import Base, BaseImages
from tfbisect.envs.docker_builds import LOW_CPU_SHARES
from tfbisect.envs.docker_engine import Engine
from tfbisect.envs.docker_volumes import MARKER, SITE_LABEL, FillRequest
from tfbisect.envs.environments import Launch
from tfbisect.platform.process import Finished

RUNTIME = docker_sites.plan_runtime(spec(), b"FROM ${BASE} AS base\n", BASE)


def site(lock_bytes: bytes = TF_LOCK_BYTES, runtime: ImagePlan = RUNTIME) -> docker_sites.SitePlan:
    lock = TF_LOCK if lock_bytes == TF_LOCK_BYTES else empty_lock()
    return docker_sites.plan_site(spec(), lock, lock_bytes, runtime)


def test_a_site_is_named_by_release_and_content_and_every_input_changes_it() -> None:
    one = site()
    assert one == site(), "the same inputs give the same plan"
    assert one.name == f"tfbisect-site-tf2.21.0-py3.11-cpu-{one.content_hash[:12]}"
    assert one.labels[SITE_LABEL] == "1" and one.labels["tfbisect.hash"] == one.content_hash
    assert one.labels["tfbisect.image"] == RUNTIME.tag and RUNTIME.target == "base"
    other_base = Base(BASE.ref, "3.11", "debootstrap", "sha256:" + "c" * 64)
    other_runtime = docker_sites.plan_runtime(spec(), b"FROM ${BASE} AS base\n", other_base)
    assert other_runtime.tag != RUNTIME.tag, "a base is known by its image id"
    assert len({one.name, site(EMPTY_LOCK_BYTES).name, site(runtime=other_runtime).name}) == 3
    # TF 2.21's CPU release installs its and-cuda lock without the NVIDIA wheels.
    assert one.pins and not any(p.is_nvidia for p in one.pins)
    assert any(p.name.startswith("tensorflow") for p in one.pins)


def test_the_filling_installs_offline_checks_the_import_and_marks_the_volume_last() -> None:
    one = site()
    script = one.script("file:///wheels", "f" * 64)
    lines = script.splitlines()
    assert lines[0] == "set -e", "any failing step fails the filling (and no marker is written)"
    assert lines[1].startswith("python /opt/tfbisect/install_wheels.py file:///wheels 3.11 ")
    assert f"{one.lock_sha256}-cpu.txt" in lines[1] and lines[1].endswith("f" * 64)
    # The import check writes the bytecode each read-only run then reads.
    assert lines[2].startswith("PYTHONDONTWRITEBYTECODE= python -c") and "import tensorflow" in lines[2]
    assert lines[-1] == f"echo {one.content_hash} > {MARKER}"
    bare = site(EMPTY_LOCK_BYTES).script("file:///wheels", "")
    assert "import" not in bare, "a lock of nothing has nothing to import"
    request = FillRequest("tfbisect:runtime-x", one.name, script, "/home/u/.cache/tfbisect/wheels")
    argv = request.argv("tfbisect-fill-1", 2)
    assert argv[argv.index("--network") + 1] == "none", "the wheels are a read-only mount, not a server"
    assert "/home/u/.cache/tfbisect/wheels:/wheels:ro" in argv
    assert f"type=volume,src={one.name},dst=/opt/venv" in argv and argv[argv.index("--cpu-shares") + 1] == "2"


class VolumeEngine:
    """Volumes by name (labels, files) and a record of the fillings; images always there."""

    host = "unix:///var/run/docker.sock"

    @property
    def client(self) -> VolumeEngine:  # the engine answers (`engine_fault` pings it)
        return self

    def ping(self) -> bool:
        return True

    def __init__(self, fill_code: int = 0) -> None:
        self.volumes: dict[str, tuple[dict[str, str], dict[str, bytes]]] = {}
        self.fills: list[FillRequest] = []
        self.in_use: set[str] = set()
        self.fill_code = fill_code
        self.tail = "ERROR: no matching distribution\n"  # a failed filling's last words

    def image_labels(self, ref: str) -> dict[str, str]:
        return {"tfbisect.hash": RUNTIME.content_hash} if ref == RUNTIME.tag else {}

    def image_layers(self, ref: str) -> list[str]:
        return []

    def image_id(self, ref: str) -> str | None:
        return f"sha256:{ref}"

    def volume_labels(self, name: str) -> dict[str, str] | None:
        return dict(self.volumes[name][0]) if name in self.volumes else None

    def create_volume(self, name: str, labels: dict[str, str]) -> None:
        self.volumes[name] = (dict(labels), {})

    def remove_volume(self, name: str) -> bool:
        if name in self.in_use:
            return False
        self.volumes.pop(name, None)
        return True

    def read_file(self, image: str, path: str, limit: int, *, volume: str | None = None) -> bytes | None:
        return self.volumes.get(volume or "", ({}, {}))[1].get(path)

    def fill_volume(self, request: FillRequest, log_path: Path, timeout: float) -> Finished:
        self.fills.append(request)
        if self.fill_code == 0:
            marked = request.script.splitlines()[-1].split()[1]
            self.volumes[request.volume][1][MARKER] = marked.encode() + b"\n"
        tail = "tfbisect: site kB 2048\n" if self.fill_code == 0 else self.tail
        return Finished(exit_code=self.fill_code, timed_out=False, log_tail=tail, seconds=1.0)


def backend_on(engine: VolumeEngine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> DockerBackend:
    monkeypatch.setenv(cache.UV_CACHE_VARIABLE, str(tmp_path / "machine" / cache.UV_CACHE))
    backend = DockerBackend(tmp_path / "cache", Progress(quiet=True), engine=cast(Engine, engine))
    backend._bases = cast(BaseImages, type("Bases", (), {"get": lambda self, p, u: BASE})())
    backend.wheels.ensure = lambda *args, **kwargs: []  # type: ignore[method-assign]
    backend.wheels.recheck = lambda *args, **kwargs: []  # type: ignore[method-assign]
    monkeypatch.setattr(docker_sites, "dockerfile_bytes", lambda: b"FROM ${BASE} AS base\n")
    return backend


def prepare(backend: DockerBackend, tmp_path: Path) -> Image:
    return backend.prepare(spec(), TF_LOCK, tmp_path / "logs")


def test_a_site_is_filled_once_then_reused_and_a_partial_one_is_refilled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = VolumeEngine()
    backend = backend_on(engine, tmp_path, monkeypatch)
    first = prepare(backend, tmp_path)
    assert first.volume == site().name and first.tag == RUNTIME.tag and first.built
    assert len(engine.fills) == 1 and engine.fills[0].image == RUNTIME.tag
    assert f"volume:{first.volume}" in backend.in_use, "the cache budget keeps a volume in use"
    assert cache.image_mark(tmp_path / "cache", site().name, "size").read_text() == str(2048 * 1024)
    assert not prepare(backend, tmp_path).built and len(engine.fills) == 1
    # Another process asks the engine: the marker holds the hash, so the volume is reused.
    again = backend_on(engine, tmp_path, monkeypatch)
    assert not prepare(again, tmp_path).built and len(engine.fills) == 1
    # A filling killed before its marker: the volume is removed and filled again.
    del engine.volumes[site().name][1][MARKER]
    assert prepare(backend_on(engine, tmp_path, monkeypatch), tmp_path).built and len(engine.fills) == 2
    # A stranger under the name (another hash): never used.
    labels, files = engine.volumes[site().name]
    engine.volumes[site().name] = ({**labels, "tfbisect.hash": "other"}, files)
    assert prepare(backend_on(engine, tmp_path, monkeypatch), tmp_path).built and len(engine.fills) == 3


def test_a_partial_site_in_use_is_refused_and_a_failed_filling_leaves_no_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = VolumeEngine()
    engine.create_volume(site().name, site().labels)  # no marker: being filled elsewhere
    engine.in_use.add(site().name)
    with pytest.raises(EnvironmentBuildError) as refused:
        prepare(backend_on(engine, tmp_path, monkeypatch), tmp_path)
    assert f"docker ps -a --filter volume={site().name}" in refused.value.todo and not engine.fills
    failing = VolumeEngine(fill_code=1)
    with pytest.raises(EnvironmentBuildError) as failed:
        prepare(backend_on(failing, tmp_path, monkeypatch), tmp_path)
    assert "no matching distribution" in failed.value.what and "skip" in failed.value.todo
    assert failing.volumes == {}, "a volume that did not fill is removed"
    full = VolumeEngine(fill_code=1)
    full.tail = "OSError: [Errno 28] No space left on device: '/opt/venv/lib'\n"
    with pytest.raises(MachineFaultError) as fault:
        prepare(backend_on(full, tmp_path, monkeypatch), tmp_path)
    assert "No space left" in fault.value.what and full.volumes == {} and len(full.fills) == 1


class StateEngine:
    def __init__(self, state: dict[str, object]) -> None:
        self.state = state
        self.volumes: dict[str, dict[str, str]] = {"tfbisect-site-x": {}}  # as the engine makes one
        self.removed: list[str] = []

    def container_state(self, name: str) -> dict[str, object]:
        return self.state

    def volume_labels(self, name: str) -> dict[str, str] | None:
        return self.volumes.get(name)

    def remove_volume(self, name: str) -> bool:
        return self.volumes.pop(name, None) is not None

    def remove_container(self, name: str) -> None:
        self.removed.append(name)  # the run's container holds the stand-in volume


def test_a_run_whose_volume_is_gone_is_no_verdict_and_the_volume_is_asked_for_again(tmp_path: Path) -> None:
    # The engine's empty stand-in for the missing volume: no python in it, so the container's
    # init could not run the scenario (exit 127); the container itself did start.
    engine = StateEngine({"StartedAt": "2026-12-06T01:00:00Z", "ExitCode": 127})
    backend = DockerBackend(tmp_path / "cache", Progress(quiet=True), engine=cast(Engine, engine))
    backend.sites_ready.add("tfbisect-site-x")
    launch = Launch(argv=[], env={}, extra={"container": "c", "site_volume": "tfbisect-site-x"}, shown="")
    tail = "[FATAL tini (7)] exec /opt/venv/bin/python failed: No such file or directory"
    done = Finished(exit_code=127, timed_out=False, log_tail=tail, seconds=0.1)
    ended = backend.ended(launch, done, False)
    assert ended.unstarted is not None and "tfbisect-site-x was gone" in ended.unstarted
    assert "No such file" in ended.unstarted
    assert "tfbisect-site-x" not in backend.sites_ready
    assert engine.volumes == {} and engine.removed == ["c"], "the stand-in volume is removed"
    # The volume is there (labelled): the scenario's own 127, or its crash, is its own.
    engine.volumes["tfbisect-site-x"] = {"tfbisect.site": "1"}
    backend.sites_ready.add("tfbisect-site-x")
    assert backend.ended(launch, done, False).unstarted is None
    assert "tfbisect-site-x" in backend.sites_ready and engine.volumes


def test_a_site_run_names_the_volumes_python_and_pastes_without_the_watchdog() -> None:
    assert watched(None, SITE_PYTHON) == [SITE_PYTHON]
    assert watched(10.0, SITE_PYTHON)[:3] == [SITE_PYTHON, "-c", WATCHDOG]
    argv = ["docker", "run", "--name", "tfbisect-a", "--label", "tfbisect.deadline=1", "img"]
    argv += [*watched(10.0, SITE_PYTHON), "/scenario/s.py", "--output", "/out/result.json"]
    pasted = reproducible(argv, "tfbisect-a", Path("/r/out"))
    assert pasted == f"docker run --rm img {SITE_PYTHON} /scenario/s.py --output /out/result.json"


def test_two_preparations_of_one_release_fill_it_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two tfbisects (here two backends in threads) preparing the same release: the second waits
    for the first one's filling (a lock beside the machine's wheels) and reuses the volume."""
    import threading
    import time

    engine = VolumeEngine()
    filling = engine.fill_volume

    def slow_fill(request: FillRequest, log_path: Path, timeout: float) -> Finished:
        time.sleep(0.5)  # the other one checks meanwhile: it must find the lock taken
        return filling(request, log_path, timeout)

    monkeypatch.setattr(engine, "fill_volume", slow_fill)
    backends = [backend_on(engine, tmp_path, monkeypatch) for _ in range(2)]
    found: list[Image] = []
    threads = [threading.Thread(target=lambda b=b: found.append(prepare(b, tmp_path))) for b in backends]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(found) == 2 and len(engine.fills) == 1
    assert sorted(image.built for image in found) == [False, True]


def test_an_engine_that_stops_answering_is_a_fault_not_a_partial_volume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = VolumeEngine()
    prepare(backend_on(engine, tmp_path, monkeypatch), tmp_path)
    monkeypatch.setattr(engine, "read_file", lambda *args, **kwargs: None)  # the engine failed

    def gone() -> bool:
        raise ConnectionError("Connection refused")

    monkeypatch.setattr(engine, "ping", gone)
    with pytest.raises(MachineFaultError) as fault:
        prepare(backend_on(engine, tmp_path, monkeypatch), tmp_path)
    assert "stopped answering" in fault.value.what
    assert site().name in engine.volumes and len(engine.fills) == 1, "the good volume is kept"


def shell_image(tmp_path: Path) -> str:
    """An image of this machine's /bin/sh alone (and the C library it links): a filling's script
    runs in it, as in a runtime image, without building one."""
    import tarfile

    shell = Path(os.path.realpath("/bin/sh"))
    out = subprocess.run(["ldd", str(shell)], capture_output=True, text=True, check=False).stdout
    libraries = {p for line in out.splitlines() for p in line.split() if p.startswith("/")}
    tar_path = tmp_path / "sh.tar"
    with tarfile.open(tar_path, "w") as tar:
        tar.add(shell, arcname="bin/sh")
        for library in sorted(libraries):
            tar.add(os.path.realpath(library), arcname=library.lstrip("/"))
        for folder in ("opt/venv", "tmp"):
            info = tarfile.TarInfo(folder)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
    tag = f"tfbisect-test-sh:{uuid.uuid4().hex[:8]}"
    subprocess.run(["docker", "import", str(tar_path), tag], check=True, capture_output=True)
    return tag


def inspect_shares(container: str) -> str:
    found = subprocess.run(
        ["docker", "container", "inspect", "--format", "{{.HostConfig.CpuShares}}", container],
        capture_output=True,
        text=True,
        check=False,
    )
    return found.stdout.strip() if found.returncode == 0 else ""


@pytest.mark.docker
def test_a_prefetchs_filling_runs_at_low_shares_is_hurried_dropped_and_never_left(tmp_path: Path) -> None:
    """The real engine: a filling asked for from a niced thread runs with the fewest CPU shares,
    gets the default ones when a run waits for it, stops when the search drops it, and its
    container is gone every way; a filling that fails says how, in its log and exit code."""
    from test_prefetch_priority import in_niced_thread
    from tfbisect.core import priority
    from tfbisect.envs.docker_engine import cancel_all, connect

    engine = connect(Progress(quiet=True), echo=False)
    image, volume = shell_image(tmp_path), f"tfbisect-test-site-{uuid.uuid4().hex[:8]}"
    (tmp_path / "wheels").mkdir()
    try:
        engine.create_volume(volume, {"tfbisect.test": "1"})
        log = tmp_path / "busy.log"

        def started(urgency: priority.Urgency) -> tuple[threading.Thread, list[object], str]:
            """A filling that never ends, asked for from a niced thread; its container's name."""

            def fill() -> object:
                with priority.ahead(urgency):
                    request = FillRequest(image, volume, "while :; do :; done", str(tmp_path / "wheels"))
                    try:
                        return engine.fill_volume(request, log, 120)
                    except priority.DroppedError as exc:
                        return exc

            ended: list[object] = []
            thread = threading.Thread(target=lambda: ended.append(in_niced_thread(fill)))
            thread.start()
            deadline, name = time.monotonic() + 60, ""
            while not (name and inspect_shares(name)) and time.monotonic() < deadline:
                time.sleep(0.2)
                found = re.search(r"--name (tfbisect-fill-\w+)", log.read_text() if log.exists() else "")
                name = found.group(1) if found else ""
            return thread, ended, name

        urgency = priority.Urgency()
        thread, ended, name = started(urgency)
        assert inspect_shares(name) == str(LOW_CPU_SHARES), log.read_text()
        assert "--network none" in log.read_text() and ":/wheels:ro" in log.read_text()
        urgency.drop()  # the search moved past it
        thread.join(60)
        assert ended and isinstance(ended[0], priority.DroppedError), ended
        assert inspect_shares(name) == "", "the dropped filling's container is removed"

        urgency = priority.Urgency()
        thread, ended, name = started(urgency)
        urgency.hurry()  # a run waits for it now
        deadline = time.monotonic() + 30
        while inspect_shares(name) != "1024" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert inspect_shares(name) == "1024", "hurried: a run waits for it"
        cancel_all()  # the search is over
        thread.join(60)
        assert ended and isinstance(ended[0], priority.DroppedError), ended
        assert inspect_shares(name) == "", "the cancelled filling's container is removed"

        script = "echo half > /opt/venv/x; echo the install failed; exit 3"
        failed = engine.fill_volume(FillRequest(image, volume, script, str(tmp_path / "wheels")), log, 60)
        assert failed.exit_code == 3 and "the install failed" in failed.log_tail
        left = subprocess.run(["docker", "ps", "-aq", "--filter", "name=tfbisect-fill-"], capture_output=True)
        assert left.stdout.strip() == b"", "no filling's container is left"
        assert engine.volume_labels(volume) == {"tfbisect.test": "1"}
        assert engine.remove_volume(volume) and engine.volume_labels(volume) is None
    finally:
        subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True, check=False)
        subprocess.run(["docker", "rmi", "-f", image], capture_output=True, check=False)
