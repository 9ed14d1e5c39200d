"""Locks: each TF version's dependencies resolved as of its release date, per (TF, Python, flavour).

Old releases do not install with today's dependencies (numpy 2 breaks TF 2.7-2.11 and
2.14.0, protobuf 4 breaks 2.0-2.5), and pip alone picks those.  So every environment
(venv, tox, Docker) installs from a lock that uv resolved with `--exclude-newer` set to
the newest pinned package's upload time plus a grace period.  A tf-nightly build is locked
the same way with a short grace, so that it gets the keras-nightly of its day.  A plain
script's own dependencies (PEP 723) are resolved together with TF's, as of the same date, into
a lock of their own in the user's cache.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tfbisect.core.catalogue import Catalogue, Release, ReleaseKind
from tfbisect.core.cudasets import CudaSet, cuda_plan
from tfbisect.core.errors import LockError
from tfbisect.core.fsio import iso_z, write_text_atomic
from tfbisect.core.packagedata import data_file
from tfbisect.core.spec import Flavour, KerasVariant, has_and_cuda, legacy_keras_applies
from tfbisect.core.spec import LockSpec as LockSpec  # where it was before EnvSpec.lock_spec() named it
from tfbisect.core.versions import python_sort_key

# Point releases of TF's dependencies in the first two weeks after a TF release are the
# fixes that release was tested against; later ones (numpy 2, protobuf 4) broke old TF.
GRACE = dt.timedelta(days=14)
# A nightly is one day of master: 14 days would pull the keras-nightly (tb-nightly, for older
# ones) of two weeks of later nightlies, which its own CI never saw.  Half a day covers the rest of its own upload
# (all wheels of one nightly land within ~15 minutes, measured over 179 of them) and the
# companion nightlies built that night, i.e. roughly what a user installing it that day got.
NIGHTLY_GRACE = dt.timedelta(hours=12)
# How uv treats pre-releases when TF itself is one (RCs, nightlies).  Its default strategy is
# the right one: a pre-release where a requirement names one (the 2.13.0rc1 lock takes keras
# 2.13.1rc0 and tensorflow-estimator 2.13.0rc0) or where a package has nothing else (keras-nightly).  It is passed explicitly so that a
# UV_PRERELEASE in the environment cannot change it: `allow` takes every pre-release going
# (for tf-nightly[and-cuda] a placeholder cudnn sdist that downloads from pypi.nvidia.com at
# build time), `disallow` cannot lock a nightly at all.  Final-release locks keep the plain command.
PRERELEASE_STRATEGY = "if-necessary-or-explicit"
# The wheels the venvs and images here can run.
PLATFORM = "x86_64-manylinux_2_28"
HEADER = "# tfbisect lock"


@dataclass(frozen=True)
class Lock:
    spec: LockSpec
    path: Path
    requirements: tuple[str, ...]
    exclude_newer: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def locks_dir() -> Path:
    """Where the committed locks are read: the package's own (read-only seed data), or
    `$TFBISECT_LOCKS`, which then is the one folder locks are read from and written to."""
    override = os.environ.get("TFBISECT_LOCKS")
    return Path(override) if override else Path(str(data_file("locks")))


def written_locks_dir() -> Path:
    """Where locks resolved at run time (RCs, nightlies, anything not committed) are written:
    `$TFBISECT_LOCKS`, else the user's cache (`$XDG_CACHE_HOME/tfbisect/locks`, by default
    `~/.cache/tfbisect/locks`), never the package: an installed one may be read-only, and a
    checkout's tree stays as committed."""
    override = os.environ.get("TFBISECT_LOCKS")
    if override:
        return Path(override)
    cache = os.environ.get("XDG_CACHE_HOME", "")
    # The XDG spec: a relative path there is invalid and is ignored.
    root = Path(cache) if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return root / "tfbisect" / "locks"


def _found(filename: str) -> Path:
    """The committed lock when there is one, else the user's cache's (found or to be written)."""
    committed = locks_dir() / filename
    return committed if committed.is_file() else written_locks_dir() / filename


def top_level_requirements(spec: LockSpec, catalogue: Catalogue) -> tuple[list[str], str]:
    """The pinned requirements of a lock and the `--exclude-newer` time they resolve at."""
    release = catalogue.resolve(spec.tf_version, pre=True)
    nightly = release.kind is ReleaseKind.NIGHTLY
    uploads = [release.uploaded]
    if spec.flavour is Flavour.CPU:
        requirements = [f"{release.cpu_project}=={release.version}"]
    elif has_and_cuda(release.version):
        # tf-nightly has the same `and-cuda` extra (one wheel serves CPU and GPU)
        project = release.cpu_project if nightly else "tensorflow"
        requirements = [f"{project}[and-cuda]=={release.version}"]
    else:
        # Before 2.14 the CUDA lock is TF's GPU-capable wheel alone: its NVIDIA libraries are a
        # shared set with a lock of its own (`set_lock`), or come with the base image.
        plan = cuda_plan(release.version)
        if plan.source is None:
            raise LockError(
                f"There is no CUDA build of TF {release.version} that tfbisect can install: {plan.needs}.",
                "use --base cpu for this version.",
            )
        requirements = [f"{plan.project}=={release.version}"]
    if spec.keras is KerasVariant.LEGACY and nightly:
        raise LockError(
            f"TF {release.version} is a nightly: its Keras 2 would be tf-keras-nightly, which tfbisect does not lock.",
            "drop the tf-keras variant for nightlies, or bisect the tf-keras releases instead.",
        )
    if spec.keras is KerasVariant.LEGACY:
        tf_keras = catalogue.tf_keras_for(release)
        if not legacy_keras_applies(release.version) or tf_keras is None:
            raise LockError(
                f"TF {release.version} has no tf-keras variant: TF_USE_LEGACY_KERAS applies to TF 2.16 and newer.",
                "drop the tf-keras variant for versions before 2.16 (before 2.16 tf.keras already is Keras 2).",
            )
        requirements.append(f"tf-keras=={tf_keras.version}")
        uploads.append(tf_keras.uploaded)
    newest = max(dt.datetime.fromisoformat(u.replace("Z", "+00:00")) for u in uploads)
    grace = NIGHTLY_GRACE if nightly else GRACE
    cutoff = iso_z(newest + grace)
    return requirements, cutoff


def preferred_python(release: Release, have: set[str] | None = None) -> str:
    """The newest Python the release has wheels for (among those here, when given)."""
    pythons = release.cpython3
    if have is not None:
        pythons = [p for p in pythons if p in have] or pythons
    if not pythons:
        raise LockError(
            f"TF {release.version} has no CPython 3 wheel for linux x86_64.",
            "pick another version (`tfbisect versions`).",
        )
    return max(pythons, key=python_sort_key)


def lock_path(spec: LockSpec) -> Path:
    return _found(spec.filename)


def load(spec: LockSpec) -> Lock:
    path = lock_path(spec)
    if not path.is_file():
        raise LockError(
            f"There is no lock for TF {spec.tf_version} on Python {spec.python} ({spec.flavour.value}"
            + (", tf-keras" if spec.keras is KerasVariant.LEGACY else "")
            + f"): {path} does not exist.",
            f"create it with `tfbisect lock --tf {spec.tf_version} --python {spec.python}"
            + (" --keras legacy" if spec.keras is KerasVariant.LEGACY else "")
            + (" --flavour cuda" if spec.flavour is Flavour.CUDA else "")
            + "` (needs the package index).",
        )
    return parse(spec, path)


def parse(spec: LockSpec, path: Path) -> Lock:
    fields: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        if ":" in line and not line.startswith(HEADER):
            key, _, value = line[1:].partition(":")
            fields[key.strip()] = value.strip()
    try:
        return Lock(
            spec=spec,
            path=path,
            requirements=tuple(fields["requirements"].split()),
            exclude_newer=fields["exclude-newer"],
        )
    except KeyError as exc:
        raise LockError(
            f"The lock {path} has no {exc.args[0]!r} header line: it was not written by `tfbisect lock`.",
            f"regenerate it with `tfbisect lock --tf {spec.tf_version} --python {spec.python}`.",
        ) from exc


def compile_lock(
    spec: LockSpec,
    catalogue: Catalogue,
    interpreter: Path | None,
    *,
    index_url: str | None = None,
    dependencies: tuple[str, ...] = (),
) -> Lock:
    """Resolve with uv as of the release date and write the lock atomically, into the user's
    cache (`written_locks_dir`): a committed lock is seed data, regenerated with
    `TFBISECT_LOCKS=bisect/tfbisect/data/locks tfbisect lock …`.  With a script's
    `dependencies` (PEP 723) they are resolved together with TF's own, as of the same date, into
    a lock of their own (`dependencies_filename`)."""
    requirements, cutoff = top_level_requirements(spec, catalogue)
    header = [
        f"# tensorflow: {spec.tf_version}",
        f"# python: {spec.python}",
        f"# flavour: {spec.flavour.value}",
        f"# keras: {spec.keras.value}",
    ]
    python = str(interpreter) if interpreter else None
    prerelease = catalogue.resolve(spec.tf_version, pre=True).prerelease
    extras = normalized_dependencies(dependencies)
    if not extras:
        path = written_locks_dir() / spec.filename
        write_lock(path, requirements, cutoff, header, spec.python, python, index_url, prerelease=prerelease)
        return parse(spec, path)
    path = written_locks_dir() / dependencies_filename(spec, extras)
    # The `requirements` line stays TF's own (split on spaces when read); the script's, whose
    # markers may hold spaces, are a JSON list of their own.
    header.append(f"# script-dependencies: {json.dumps(extras)}")
    try:
        write_lock(
            path,
            [*requirements, *extras],
            cutoff,
            header,
            spec.python,
            python,
            index_url,
            prerelease=prerelease,
            listed=requirements,
        )
    except LockError as exc:
        raise dependencies_error(spec, extras, cutoff, exc) from exc
    return parse(spec, path)


def normalized_dependencies(dependencies: tuple[str, ...]) -> tuple[str, ...]:
    """A script's dependencies as one canonical, sorted set: `Pandas >= 1.0` and `pandas>=1.0`
    are one lock."""
    normal = set()
    for text in dependencies:
        requirement = Requirement(text)
        requirement.name = canonicalize_name(requirement.name)
        normal.add(str(requirement))
    return tuple(sorted(normal))


def dependencies_filename(spec: LockSpec, dependencies: tuple[str, ...]) -> str:
    """`tf2.7.0-py3.9-cpu+deps-<hash8>.txt`: the release's lock name and a short hash of the
    script's (normalized) dependencies, so that each set has a lock, and an environment, of its own."""
    normal = normalized_dependencies(dependencies)
    digest = hashlib.sha256("\n".join(normal).encode("utf-8")).hexdigest()[:8]
    return f"{spec.filename.removesuffix('.txt')}+deps-{digest}.txt"


def load_with_dependencies(spec: LockSpec, dependencies: tuple[str, ...]) -> Lock:
    """The lock of the release plus a script's dependencies, resolved earlier into the user's
    cache; LockError when there is none yet."""
    path = written_locks_dir() / dependencies_filename(spec, dependencies)
    if not path.is_file():
        raise LockError(
            f"There is no lock for TF {spec.tf_version} on Python {spec.python} with the script's "
            f"dependencies ({', '.join(normalized_dependencies(dependencies))}): {path} does not exist.",
            "let tfbisect resolve locks on the fly (it does by default; needs the package index).",
        )
    return parse(spec, path)


def dependencies_error(
    spec: LockSpec, dependencies: tuple[str, ...], cutoff: str, exc: LockError
) -> LockError:
    """Which of a script's dependencies cannot be installed with this release, and uv's reason:
    those uv's answer names (all of them when it names none)."""
    reason = exc.what.partition("\n")[2] or exc.what
    said = reason.lower().replace("_", "-")
    named = [d for d in dependencies if canonicalize_name(Requirement(d).name) in said] or list(dependencies)
    return LockError(
        f"The script's dependency {', '.join(named)} cannot be installed with TF {spec.tf_version} "
        f"on Python {spec.python} as of {cutoff}:\n{reason}",
        "loosen or drop it in the script's `# /// script` block, or bisect releases it exists for.",
    )


def set_lock_path(cuda_set: CudaSet) -> Path:
    return _found(cuda_set.lock_filename)


def set_lock(cuda_set: CudaSet, *, index_url: str | None = None) -> Path:
    """The lock of a CUDA set's NVIDIA wheels (hashed, resolved as of the set's date): the
    committed one, else resolved now (needs the index).  The wheels are pure `py3-none`, so
    one lock serves every Python."""
    path = set_lock_path(cuda_set)
    if not path.is_file():  # not committed: the user's cache's, written now
        header = [f"# cuda-set: {cuda_set.name}", f"# cuda: {cuda_set.cuda}", f"# cudnn: {cuda_set.cudnn}"]
        write_lock(path, list(cuda_set.requirements), cuda_set.exclude_newer, header, "3.9", None, index_url)
    return path


def write_lock(
    path: Path,
    requirements: list[str],
    cutoff: str,
    header_fields: list[str],
    python_version: str,
    interpreter: str | None,
    index_url: str | None,
    *,
    prerelease: bool = False,
    listed: list[str] | None = None,
) -> None:
    """Resolve `requirements` with uv as of `cutoff` and write the hashed lock atomically;
    `prerelease`: TF itself is a pre-release (see PRERELEASE_STRATEGY); `listed`: what its
    `requirements` header line names, when not all of them (a script's dependencies have a line of their own)."""
    command = [
        uv_binary(),
        "pip",
        "compile",
        "-",
        "--quiet",
        "--no-header",
        "--generate-hashes",
        "--python-platform",
        PLATFORM,
        "--exclude-newer",
        cutoff,
    ]
    # Old dependencies ship sdists whose metadata only builds on the Python they target,
    # so resolve with that interpreter when this machine has it.
    command += ["--python", interpreter] if interpreter else ["--python-version", python_version]
    if index_url:
        command += ["--index-url", index_url]
    if prerelease:
        command += ["--prerelease", PRERELEASE_STRATEGY]
    env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
    done = subprocess.run(
        command, input="\n".join(requirements) + "\n", capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-12:])
        raise LockError(
            f"uv could not resolve {' '.join(requirements)} for Python {python_version} as of {cutoff}:\n{tail}",
            "check the network; if a dependency has no wheel for this Python, lock another Python with --python.",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    header = [
        f"{HEADER} (generated by `tfbisect lock`; regenerate rather than edit)",
        *header_fields,
        f"# requirements: {' '.join(requirements if listed is None else listed)}",
        f"# exclude-newer: {cutoff}",
        f"# platform: {PLATFORM}",
    ]
    write_text_atomic(path, "\n".join(header) + "\n" + done.stdout)


_UV_LOCK = threading.Lock()
_UV: list[str] = []


def uv_binary() -> str:
    """The uv that the uv wheel ships, found once: `find_uv_bin` reads sysconfig, whose first
    use is not thread-safe, and bisections install from several threads."""
    with _UV_LOCK:
        if not _UV:
            try:
                from uv import find_uv_bin

                _UV.append(str(find_uv_bin()))
            except (ImportError, FileNotFoundError):
                _UV.append("uv")
        return _UV[0]
