"""Debian bases without a registry, pure: which tool builds one and how, that a preparation ahead
on a bet never starts one, and that a failed build leaves nothing behind.  The builds themselves
are real in test_docker (the Debian bases of its CPU images)."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import pytest

from tfbisect.core import priority
from tfbisect.core.errors import BackendUnavailableError, DockerError
from tfbisect.core.fsio import file_lock
from tfbisect.core.progress import Progress
from tfbisect.envs import bases
from tfbisect.envs.bases import BaseImages
from tfbisect.envs.docker_engine import Engine
from tfbisect.platform.process import Finished


class FakeEngine:
    """No registry answers; an imported tarball becomes an image (its name and changes noted)."""

    def __init__(self) -> None:
        self.progress = Progress(quiet=True)
        self.images: dict[str, str] = {}
        self.imported: list[tuple[str, str, list[str]]] = []

    def image_id(self, ref: str) -> str | None:
        return self.images.get(ref)

    def pull(self, ref: str, timeout: float) -> None:
        raise DockerError(f"pulling {ref}: no registry", "none")

    def import_rootfs(self, tar: Path, ref: str, changes: Sequence[str]) -> None:
        self.imported.append((tar.read_text(), ref, list(changes)))
        self.images[ref] = "sha256:" + "a" * 64


class FakeBuilds:
    """Stands in for `run_logged`: notes each command, makes what the tool would (its chroot's
    work files, and the tarball when it succeeds, or half a tarball when it fails)."""

    def __init__(self, exit_code: int) -> None:
        self.exit_code = exit_code
        self.commands: list[list[str]] = []
        self.tmpdirs: list[str | None] = []
        self.long: list[bool] = []  # whether each ran as a long build (the prefetch's gate opens)

    def __call__(
        self, command: Sequence[str], *, log_path: Path, timeout: float, env: dict[str, str] | None = None
    ) -> Finished:
        self.commands.append(list(command))
        self.long.append(priority.long_build_running())
        self.tmpdirs.append(None if env is None else env.get("TMPDIR"))
        log_path.write_text("I: building\nE: the mirror is gone\n")
        scratch = log_path.with_suffix("")
        (scratch / "mmdebstrap.x1").mkdir()
        (scratch / "mmdebstrap.x1" / "usr").write_text("half a root")
        log_path.with_suffix(".tar").write_text("a root" if self.exit_code == 0 else "half a tar")
        return Finished(self.exit_code, False, "I: building\nE: the mirror is gone", 1.0)


def images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, builds: FakeBuilds
) -> tuple[BaseImages, FakeEngine]:
    monkeypatch.setattr(bases, "run_logged", builds)
    monkeypatch.setattr(bases, "builder", lambda: "mmdebstrap")
    engine = FakeEngine()
    return BaseImages(cast(Engine, engine), tmp_path / "bases"), engine


def test_a_bet_never_builds_a_base_and_a_sure_preparation_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds = FakeBuilds(exit_code=0)
    made, engine = images(tmp_path, monkeypatch, builds)
    with priority.ahead(priority.Urgency()), pytest.raises(BackendUnavailableError) as bet:
        made.get("3.11")
    assert "Debian bookworm base is not built yet" in bet.value.what
    assert builds.commands == [] and engine.imported == []
    hurried = priority.Urgency()
    hurried.hurry()  # a run now waits for it: no longer a bet
    for urgency in (priority.Urgency(sure=True), hurried):
        engine.images.clear()
        with priority.ahead(urgency):
            base = made.get("3.11")
        assert (base.ref, base.python, base.source) == ("tfbisect-base:bookworm", "3.11", "debootstrap")
    assert len(builds.commands) == 2 and builds.long == [True, True] and not priority.long_build_running()
    assert engine.imported[0] == ("a root", "tfbisect-base:bookworm", ["ENV LANG=C.UTF-8", 'CMD ["python3"]'])
    # mmdebstrap's chroot went in the work folder, and nothing of the build is left but its log.
    assert builds.tmpdirs[0] == str(tmp_path / "bases" / "rootfs" / "bookworm")
    assert sorted(p.name for p in (tmp_path / "bases" / "rootfs").iterdir()) == ["bookworm.log"]
    builds.commands.clear()
    made.get("3.11")  # built already: a bet or not, nothing to build
    with priority.ahead(priority.Urgency()):
        made.get("3.11")
    assert builds.commands == []


def test_work_ahead_parks_while_another_builds_the_base_and_a_runs_own_waits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another (a thread or a process) holds the base's lock: a preparation ahead, even one a run
    waits for, is parked with a question that says when the lock is free; a run's own waits for
    the lock and then finds the base built.  The build counts as a long one meanwhile."""
    builds = FakeBuilds(exit_code=0)
    made, engine = images(tmp_path, monkeypatch, builds)
    lock = tmp_path / "bases" / "base-bullseye.lock"
    holding, release = threading.Event(), threading.Event()

    def other_builder() -> None:
        with file_lock(lock):
            holding.set()
            assert release.wait(30)
            engine.images["tfbisect-base:bullseye"] = "sha256:" + "b" * 64

    other = threading.Thread(target=other_builder)
    other.start()
    assert holding.wait(30)
    hurried = priority.Urgency()
    hurried.hurry()
    for urgency in (priority.Urgency(sure=True), hurried):
        with priority.ahead(urgency), pytest.raises(priority.Deferred) as parked:
            made.get("3.9")
        assert parked.value.awaited == "the Debian bullseye base" and not parked.value.ready()
    threading.Timer(0.5, release.set).start()
    base = made.get("3.9")  # a run's own: waits for the other builder
    other.join(30)
    assert base.image_id == "sha256:" + "b" * 64 and builds.commands == []
    assert parked.value.ready(), "the lock is free: the parked one may go on"


def test_a_run_that_comes_to_wait_hurries_a_base_that_work_ahead_builds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The next round's midpoint (sure, niced) builds the base; the round's own run then needs
    it too: the build gets the default priority (its own urgency, hurried), while the work
    ahead it belongs to stays work ahead (its run ahead still goes at low priority)."""
    building, release = threading.Event(), threading.Event()
    seen: list[priority.Urgency | None] = []

    class SlowBuild(FakeBuilds):
        def __call__(self, *args: object, **kwargs: object) -> Finished:
            seen.append(priority.current())
            building.set()
            assert release.wait(30)
            return super().__call__(*args, **kwargs)  # type: ignore[arg-type]

    made, _ = images(tmp_path, monkeypatch, SlowBuild(exit_code=0))
    midpoint = priority.Urgency(sure=True)

    def ahead_builds() -> None:
        with priority.ahead(midpoint):
            made.get("3.9")

    builder = threading.Thread(target=ahead_builds)
    builder.start()
    assert building.wait(30)
    build = seen[0]
    assert build is not None and build is not midpoint and not build.urgent
    threading.Timer(0.5, release.set).start()
    assert made.get("3.9").ref == "tfbisect-base:bullseye"  # a run's own: waits, and hurries
    builder.join(30)
    assert build.urgent and not midpoint.urgent


def test_a_failed_build_leaves_no_image_and_no_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made, engine = images(tmp_path, monkeypatch, FakeBuilds(exit_code=100))
    with pytest.raises(DockerError) as failed:
        made.get("3.9")
    what, todo = failed.value.what, failed.value.todo
    assert what.startswith("mmdebstrap of Debian bullseye failed (exit code 100); the end of ")
    assert what.endswith("E: the mirror is gone")
    assert "TFBISECT_DEBIAN_MIRROR" in todo
    assert engine.imported == [] and engine.images == {}
    assert sorted(p.name for p in (tmp_path / "bases" / "rootfs").iterdir()) == ["bullseye.log"]
    monkeypatch.setattr(bases, "builder", lambda: None)
    with pytest.raises(BackendUnavailableError) as missing:
        made.get("3.9")
    assert "needs mmdebstrap or debootstrap" in missing.value.what
    assert "apt-get install mmdebstrap" in missing.value.todo


def test_mmdebstrap_is_used_where_installed_with_eatmydata_where_it_can(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed = {"mmdebstrap", "debootstrap", "eatmydata", "unshare"}
    monkeypatch.setattr(
        "tfbisect.envs.bases.shutil.which", lambda name: f"/usr/bin/{name}" if name in installed else None
    )
    monkeypatch.setattr("tfbisect.envs.bases.os.geteuid", lambda: 0)
    scratch, tarball = tmp_path / "bookworm", tmp_path / "bookworm.tar"
    hook = tmp_path / "hooks" / "eatmydata"
    hook.mkdir(parents=True)
    monkeypatch.setattr(bases, "EATMYDATA_HOOK", hook)
    assert bases.builder() == "mmdebstrap"
    command = bases.build_command("mmdebstrap", "bookworm", scratch, tarball)
    assert command[:5] == ["unshare", "--mount", "--propagation", "private", "mmdebstrap"]
    assert f"--hook-dir={hook}" in command
    assert "--dpkgopt=path-exclude=/usr/share/doc/*" in command
    assert command[-3:] == ["bookworm", str(tarball), bases.MIRROR]
    installed.remove("eatmydata")  # the hook needs eatmydata itself
    assert not any(
        a.startswith("--hook-dir") for a in bases.build_command("mmdebstrap", "bookworm", scratch, tarball)
    )
    installed.remove("mmdebstrap")
    monkeypatch.setattr("tfbisect.envs.bases.os.geteuid", lambda: 1000)
    assert bases.builder() == "debootstrap"
    assert bases.build_command("debootstrap", "bookworm", scratch, tarball) == [
        "debootstrap",
        "--variant=minbase",
        f"--include={bases.PACKAGES}",
        "bookworm",
        str(scratch),
        bases.MIRROR,
    ]
    installed.remove("debootstrap")
    assert bases.builder() is None
