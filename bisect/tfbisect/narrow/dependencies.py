"""What else changed in the environment: the packages whose pinned versions differ between two locks."""

from __future__ import annotations

from collections.abc import Iterable

from packaging.utils import canonicalize_name

from tfbisect.envs.wheelhouse import pins
from tfbisect.search.narrowlog import DependencyChange

# The distributions that are the TF build itself: what is bisected, not a dependency that changed.
TF_DISTRIBUTIONS = frozenset(
    {"tensorflow", "tensorflow-cpu", "tensorflow-gpu", "tf-nightly", "tf-nightly-cpu"}
)


def dependency_changes(old_lock: str, new_lock: str, imported: Iterable[str] = ()) -> list[DependencyChange]:
    """The packages whose pinned versions differ between two locks (the TF build itself left out),
    the ones the probe imported first, then by name."""
    old = {canonicalize_name(p.name): p.version for p in pins(old_lock)}
    new = {canonicalize_name(p.name): p.version for p in pins(new_lock)}
    used = {canonicalize_name(name) for name in imported}
    changes = [
        DependencyChange(name, old.get(name), new.get(name), name in used)
        for name in sorted(set(old) | set(new))
        if name not in TF_DISTRIBUTIONS and old.get(name) != new.get(name)
    ]
    return sorted(changes, key=lambda c: (not c.imported, c.name))
