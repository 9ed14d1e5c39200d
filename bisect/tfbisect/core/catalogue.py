"""The catalogue of TensorFlow builds: when each shipped and which CPython wheels it has.

Releases and their release candidates come from `tensorflow` (and `tensorflow-cpu`), the
daily builds of master from `tf-nightly`; a narrowing bisects the candidates and nightlies
that lie between two releases.  Read from the package index's JSON simple API (PEP 691) with
upload times (PEP 700), and kept as a committed snapshot (`data/catalogue.json`) so that
everything works offline.
"""

from __future__ import annotations

import datetime as dt
import difflib
import enum
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.version import Version

from tfbisect.core import jsonread
from tfbisect.core.errors import CatalogueError, UnknownVersionError
from tfbisect.core.fsio import write_text_atomic
from tfbisect.core.packagedata import data_file
from tfbisect.core.versions import is_nightly, minor_line, parse, python_sort_key

DEFAULT_INDEX = "https://pypi.org/simple"
# The distributions a TF run can install; tf-keras is the Keras 2 that TF 2.16+ can use
# with TF_USE_LEGACY_KERAS=1; tf-nightly is master built daily (there is no tf-nightly-cpu
# any more: its one wheel per Python serves CPU and GPU).
NIGHTLY_PROJECT = "tf-nightly"
PROJECTS = ("tensorflow", "tensorflow-cpu", "tf-keras", NIGHTLY_PROJECT)
# Mirrors of the index often carry releases only: without these pages the catalogue still
# works (there are just no nightlies to narrow with), so a 404 there is not an error.
OPTIONAL_PROJECTS = frozenset({NIGHTLY_PROJECT})
# How many alternatives an unknown version's message lists.
NEAREST = 6
_NIGHTLY_DAY = re.compile(r"nightly:(?P<day>[0-9]{4}-[0-9]{2}-[0-9]{2})", re.ASCII)
# Only linux x86_64 wheels count: that is what the venvs here and the images run.
_WHEEL = re.compile(
    r"^(?P<name>[^-]+)-(?P<version>[^-]+)(-\d[^-]*)?-(?P<py>[^-]+)-(?P<abi>[^-]+)-(?P<plat>[^-]+)\.whl$"
)


@dataclass(frozen=True)
class Dist:
    """One version of one distribution on the index."""

    project: str
    version: str
    uploaded: str  # ISO 8601 time of the first file's upload (PEP 700)
    pythons: tuple[str, ...]  # CPython versions with a linux x86_64 wheel; ("any",) for pure wheels
    yanked: bool = False

    @property
    def prerelease(self) -> bool:
        return Version(self.version).is_prerelease

    @property
    def date(self) -> str:
        return self.uploaded[:10]


class ReleaseKind(enum.StrEnum):
    RELEASE = "release"  # a final release of `tensorflow` (post releases included)
    RC = "rc"  # any other pre-release of `tensorflow`: release candidates (alphas and betas too)
    NIGHTLY = "nightly"  # a PEP 440 dev release of tf-nightly: one build of master a day


@dataclass(frozen=True)
class Release:
    """A TensorFlow build one can install: a release or RC (the union of what `tensorflow`
    and `tensorflow-cpu` offer) or a nightly (`tf-nightly`)."""

    version: str
    uploaded: str
    pythons: tuple[str, ...]
    cpu_project: str  # `tensorflow-cpu` where it exists for this version, else `tensorflow`; `tf-nightly`
    prerelease: bool  # true for RCs and nightlies
    kind: ReleaseKind

    @property
    def date(self) -> str:
        return self.uploaded[:10]

    @property
    def line(self) -> str:
        return minor_line(self.version)

    @property
    def cpython3(self) -> list[str]:
        """The CPython 3 versions it has linux wheels for ("3.8" …), as the catalogue lists them."""
        return [p for p in self.pythons if p.startswith("3.")]


@dataclass(frozen=True)
class Catalogue:
    dists: tuple[Dist, ...]
    fetched_at: str
    index_url: str = DEFAULT_INDEX
    _by_key: dict[tuple[str, str], Dist] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._by_key.update({(d.project, d.version): d for d in self.dists})

    def dist(self, project: str, version: str) -> Dist | None:
        return self._by_key.get((project, version))

    def releases(self, *, pre: bool = False, nightly: bool = False) -> list[Release]:
        """TF releases with at least one linux x86_64 wheel, oldest first (PEP 440), 2.0 onwards;
        with `pre` their release candidates too, with `nightly` the tf-nightly builds too.

        Nightlies only come when asked by name: lines, tox envs, sweeps and bisections over
        releases are about what TF shipped, and a year of daily builds would drown them."""
        out = self.nightlies() if nightly else []
        for dist in self.dists:
            if dist.project != "tensorflow" or dist.yanked or not dist.pythons:
                continue
            parsed = Version(dist.version)
            if parsed < Version("2.0.0rc0") or (dist.prerelease and not pre):
                continue
            cpu = self.dist("tensorflow-cpu", dist.version)
            pythons = set(dist.pythons) | (set(cpu.pythons) if cpu and not cpu.yanked else set())
            out.append(
                Release(
                    version=dist.version,
                    uploaded=dist.uploaded,
                    pythons=tuple(sorted(pythons, key=python_sort_key)),
                    cpu_project="tensorflow-cpu" if cpu and cpu.pythons and not cpu.yanked else "tensorflow",
                    prerelease=dist.prerelease,
                    kind=ReleaseKind.RC if dist.prerelease else ReleaseKind.RELEASE,
                )
            )
        return sorted(out, key=lambda r: Version(r.version))

    def nightlies(self) -> list[Release]:
        """The tf-nightly builds with a linux x86_64 wheel, oldest first."""
        out = [
            Release(
                version=dist.version,
                uploaded=dist.uploaded,
                pythons=dist.pythons,
                cpu_project=NIGHTLY_PROJECT,
                prerelease=True,
                kind=ReleaseKind.NIGHTLY,
            )
            for dist in self.dists
            if dist.project == NIGHTLY_PROJECT
            and not dist.yanked
            and is_nightly(dist.version)
            and any(p.startswith("3.") for p in dist.pythons)
        ]
        return sorted(out, key=lambda r: Version(r.version))

    def between(self, low: str, high: str) -> list[Release]:
        """Every RC and nightly strictly between two versions in PEP 440 order, oldest first:
        what a narrowing can bisect once a bisection ended at releases `low` and `high`.

        Final releases between them are left out (the bisection judged those already); so are
        builds without a linux x86_64 CPython wheel and yanked ones.  The ends may come in
        either order; a string that is no PEP 440 version raises InvalidVersion (a ValueError)."""
        lo, hi = sorted((Version(low), Version(high)))
        return [
            r
            for r in self.releases(pre=True, nightly=True)
            if r.kind is not ReleaseKind.RELEASE and r.cpython3 and lo < Version(r.version) < hi
        ]

    def nightly_window(self) -> tuple[str, str] | None:
        """The upload dates (YYYY-MM-DD) of the oldest and newest nightly one can run; None
        without nightlies.  The index keeps only the last months of tf-nightly."""
        dates = sorted(r.date for r in self.nightlies())
        return (dates[0], dates[-1]) if dates else None

    def oldest_rc(self) -> Release | None:
        """The oldest release candidate in the catalogue: the index deleted older ones (it has
        none of TF 2.0-2.5), so a narrowing must tell 'no RCs published' from 'no RCs kept'."""
        rcs = [r for r in self.releases(pre=True) if r.kind is ReleaseKind.RC]
        return rcs[0] if rcs else None

    def lines(self) -> list[str]:
        seen: dict[str, None] = {}
        for release in self.releases():
            seen.setdefault(release.line, None)
        return list(seen)

    def resolve(self, text: str, *, pre: bool = False) -> Release:
        """`2.10` -> newest 2.10.x; `2.10.0` -> exactly that.  Unknown: say which exist, nearest first.

        Nightlies: an exact version (`2.23.0.dev20261012`) whatever `pre` says, `nightly` -> the
        newest, `nightly:2026-10-12` -> the newest uploaded that day (UTC).  A line never
        resolves to a nightly."""
        if text.startswith("nightly"):
            return self._resolve_nightly(text)
        if text[:1] in "vV" and text[1:2].isdigit():
            text = text[1:]  # a git tag's spelling (v2.3.0) names the release of that number
        releases = self.releases(pre=True)
        exact = [r for r in releases if r.version == text]
        if exact:
            return exact[0]
        if is_nightly(text) or "dev" in text.lower():
            parsed = parse(text)  # `2.23.0dev20261012` is the same version, spelled loosely
            for nightly in self.nightlies():
                if parsed is not None and Version(nightly.version) == parsed:
                    return nightly
            nearest = [r.version for r in self.nearest_nightlies(text)]
            raise UnknownVersionError(
                f"tf-nightly {text!r} is not in the catalogue with a linux x86_64 wheel "
                f"(snapshot of {self.fetched_at[:10]}{self._window_note()}).",
                (f"pick one of these, nearest first: {', '.join(nearest)}; or " if nearest else "")
                + "refresh the catalogue with `tfbisect versions --refresh`.",
            )
        in_line = [r for r in releases if r.line == text and (pre or not r.prerelease)]
        if in_line:
            return in_line[-1]
        raise self._unknown(text, releases)

    def _unknown(self, text: str, releases: Sequence[Release]) -> UnknownVersionError:
        return misspelled(text, releases) or UnknownVersionError(
            f"TensorFlow {text!r} is not in the catalogue (snapshot of {self.fetched_at[:10]}).",
            "pick one of these, nearest first: "
            + ", ".join(self.nearest(text, releases))
            + "; or refresh the catalogue with `tfbisect versions --refresh`.",
        )

    def _resolve_nightly(self, text: str) -> Release:
        nightlies = self.nightlies()
        if not nightlies:
            raise UnknownVersionError(
                f"The catalogue (snapshot of {self.fetched_at[:10]}) has no tf-nightly build with a linux x86_64 wheel.",
                "refresh it with `tfbisect versions --refresh --save` (the index keeps the last months of nightlies).",
            )
        if text == "nightly":
            return nightlies[-1]
        match = _NIGHTLY_DAY.fullmatch(text)
        day = _date(match["day"]) if match else None
        if day is None:
            raise UnknownVersionError(
                f"{text[:40]!r} is no nightly this understands.",
                "write `nightly` (the newest), `nightly:YYYY-MM-DD` (the newest uploaded that day, UTC) "
                "or an exact version such as " + nightlies[-1].version + ".",
            )
        that_day = [r for r in nightlies if r.date == day.isoformat()]
        if that_day:
            return that_day[-1]
        nearest = sorted(nightlies, key=lambda r: (abs((_date(r.date) or day) - day), r.date))[:NEAREST]
        # None of that day's builds is runnable; say so when the index has one, so that the user
        # does not think the build is missing.
        unrunnable = [
            d.version for d in self.dists if d.project == NIGHTLY_PROJECT and d.date == day.isoformat()
        ]
        why = f" (its build {', '.join(unrunnable)} has no linux x86_64 wheel)" if unrunnable else ""
        raise UnknownVersionError(
            f"No tf-nightly with a linux x86_64 wheel was uploaded on {day.isoformat()}{why}"
            f"{self._window_note()}.",
            "pick a nearby day: "
            + ", ".join(f"nightly:{r.date} ({r.version})" for r in nearest)
            + "; or refresh the catalogue with `tfbisect versions --refresh`.",
        )

    def _window_note(self) -> str:
        window = self.nightly_window()
        return f"; its nightlies run from {window[0]} to {window[1]}" if window else "; it has no nightlies"

    def nearest_nightlies(self, text: str, count: int = NEAREST) -> list[Release]:
        """The nightlies nearest a version that is not in the catalogue: by the day its dev
        number names when it names one (`.dev20261011`), else the newest that share its prefix."""
        nightlies = self.nightlies()
        prefix = re.match(r"[0-9a-z.]*", text.lower())
        shared = [r for r in nightlies if prefix and prefix.group() and r.version.startswith(prefix.group())]
        parsed = parse(text)
        day = _date(str(parsed.dev)) if parsed is not None and parsed.dev is not None else None
        if day is None:
            return list(reversed(shared or nightlies))[:count]

        def distance(release: Release) -> tuple[dt.timedelta, str]:
            built = _nightly_day(release) or day
            return abs(built - day), release.version

        return sorted(nightlies, key=distance)[:count]

    def nearest(self, text: str, releases: Sequence[Release], count: int = NEAREST) -> list[str]:
        parsed = parse(text)
        names = [r.version for r in releases if not r.prerelease]
        if parsed is None:
            return difflib.get_close_matches(text, names, n=count, cutoff=0.0)

        def distance(name: str) -> tuple[int, int, int]:
            other = Version(name)
            major = (*parsed.release, 0, 0)[:3]
            them = (*other.release, 0, 0)[:3]
            return (abs(them[0] - major[0]), abs(them[1] - major[1]), abs(them[2] - major[2]))

        return sorted(names, key=distance)[:count]

    def tf_keras_for(self, release: Release) -> Dist | None:
        """The tf-keras matching a TF 2.16+ release (same minor line), newest patch."""
        if release.kind is ReleaseKind.NIGHTLY:
            return None  # a nightly's Keras 2 would be tf-keras-nightly, which is not catalogued
        candidates = [
            d
            for d in self.dists
            if d.project == "tf-keras"
            and not d.yanked
            and not d.prerelease
            and minor_line(d.version) == release.line
        ]
        return max(candidates, key=lambda d: Version(d.version)) if candidates else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": 1,
            "fetched_at": self.fetched_at,
            "index_url": self.index_url,
            "dists": [
                {
                    "project": d.project,
                    "version": d.version,
                    "uploaded": d.uploaded,
                    "pythons": list(d.pythons),
                }
                | ({"yanked": True} if d.yanked else {})
                for d in self.dists
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Catalogue:
        return cls(
            dists=tuple(
                Dist(
                    project=d["project"],
                    version=d["version"],
                    uploaded=d["uploaded"],
                    pythons=tuple(d["pythons"]),
                    yanked=bool(d.get("yanked", False)),
                )
                for d in data["dists"]
            ),
            fetched_at=data["fetched_at"],
            index_url=data.get("index_url", DEFAULT_INDEX),
        )


def _date(text: str) -> dt.date | None:
    """`2026-10-12` or `20261012` as a date; None for anything else (user input, dev numbers)."""
    if not re.fullmatch(r"[0-9]{4}-?[0-9]{2}-?[0-9]{2}", text, re.ASCII):
        return None
    try:
        return dt.date.fromisoformat(text if "-" in text else f"{text[:4]}-{text[4:6]}-{text[6:]}")
    except ValueError:
        return None


def _nightly_day(release: Release) -> dt.date | None:
    """The day a nightly's dev number names (`.dev20261012`), else the day it was uploaded."""
    dev = Version(release.version).dev
    return (_date(str(dev)) if dev is not None else None) or _date(release.date)


def dists_from_simple_json(project: str, document: object) -> list[Dist]:
    """Fold a PEP 691 project page into one `Dist` per version.  The page is an index's answer,
    not trusted: an entry of the wrong shape is skipped, a page with no list of files refused."""
    files = document.get("files") if isinstance(document, Mapping) else None
    if not isinstance(files, list):
        raise CatalogueError(
            f"The index's page for {project} has no list of files (PEP 691).",
            "use an index that serves PEP 691 JSON pages (PyPI does), or keep the committed snapshot.",
        )
    uploaded: dict[str, str] = {}
    pythons: dict[str, set[str]] = {}
    yanked: dict[str, bool] = {}
    for entry in files:
        filename = entry.get("filename") if isinstance(entry, Mapping) else None
        if not isinstance(filename, str):
            continue
        version = _version_of(project, filename)
        if version is None or parse(version) is None:
            continue
        time = entry.get("upload-time")
        if not time or not isinstance(time, str):
            raise CatalogueError(
                f"The index's page for {project} has no upload times (PEP 700).",
                "use an index that serves PEP 700 metadata (PyPI does), or keep the committed snapshot.",
            )
        uploaded[version] = min(uploaded.get(version, time), time)
        yanked[version] = yanked.get(version, True) and bool(entry.get("yanked", False))
        bucket = pythons.setdefault(version, set())
        match = _WHEEL.match(filename)
        if match is None:
            continue
        plat, tag = match.group("plat"), match.group("py")
        if tag.startswith("py3") and plat == "any":
            bucket.add("any")
        elif "linux" in plat and "x86_64" in plat:
            bucket.update(_cpython_versions(tag))
    return [
        Dist(
            project=project,
            version=version,
            uploaded=uploaded[version],
            pythons=tuple(
                sorted(pythons[version], key=lambda p: (p != "any", p != "any" and python_sort_key(p)))
            ),
            yanked=yanked[version],
        )
        for version in sorted(uploaded, key=Version)
    ]


def _version_of(project: str, filename: str) -> str | None:
    stem = project.replace("-", "_")
    for prefix in (stem + "-", project + "-"):
        if filename.startswith(prefix):
            rest = filename[len(prefix) :]
            for suffix in (".tar.gz", ".zip"):
                if rest.endswith(suffix):
                    return rest[: -len(suffix)]
            if rest.endswith(".whl"):
                return rest.split("-", 1)[0]
    return None


def _cpython_versions(tag: str) -> Iterable[str]:
    for part in tag.split("."):
        if part.startswith("cp") and part[2:].isdigit() and len(part) >= 4:
            yield f"{part[2]}.{part[3:]}"


SNAPSHOT = "catalogue.json"


def load_snapshot(path: Path | None = None) -> Catalogue:
    try:
        if path is None:
            text = data_file(SNAPSHOT).read_text(encoding="utf-8")
        else:
            text = path.read_text(encoding="utf-8")
        return Catalogue.from_dict(jsonread.loads(text))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        where = path or f"the package's data/{SNAPSHOT}"
        raise CatalogueError(
            f"The catalogue snapshot at {where} cannot be read: {exc}.",
            "restore it from git (`git checkout -- bisect/tfbisect/data/catalogue.json`) or rebuild it with "
            "`tfbisect versions --refresh --save`.",
        ) from exc


def save_snapshot(catalogue: Catalogue, path: Path) -> None:
    write_text_atomic(path, json.dumps(catalogue.to_dict(), indent=1) + "\n")


def default_snapshot_path() -> Path:
    return Path(str(data_file(SNAPSHOT)))


def misspelled(text: str, releases: Sequence[Release]) -> UnknownVersionError | None:
    """Why `text` names no release when a nearest release would mislead: TF 1.x is out of scope
    (2.15 is no answer to 1.15); a comma for a dot is a typo of the release it spells."""
    parsed = parse(text)
    if parsed is not None and parsed.release[0] < 2:
        oldest = f"; the oldest release it knows is {releases[0].version}" if releases else ""
        return UnknownVersionError(
            f"TensorFlow {text!r} is a TF {parsed.release[0]}.x release: TF {parsed.release[0]}.x is not "
            f"supported (tfbisect covers TF 2.0 and later{oldest}).",
            "give a 2.x version (--good 2.0 for the oldest; `tfbisect versions` lists the releases).",
        )
    dotted = text.replace(",", ".")
    if dotted != text and any(r.version == dotted or r.line == dotted for r in releases):
        return UnknownVersionError(
            f"TensorFlow {text!r} is not a version (versions are written with dots).",
            f"did you mean {dotted}? Write it with dots ({dotted}), as `tfbisect versions` lists them.",
        )
    return None
