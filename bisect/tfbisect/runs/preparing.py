"""Preparing environments, one preparation of an environment at a time, the runs' own before
the work ahead (core/priority.py): a run waits for a prefetch of the same environment instead
of building it twice, and hurries it; no prefetch starts while a run prepares its own.

`Runner` prepares through `own` (a run's) and `ahead` (a prefetch's); this module only keeps
the locks, the foreground and the urgencies of what is prepared ahead."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

from tfbisect.core import priority

T = TypeVar("T")


class Preparing:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._building: dict[str, threading.Lock] = {}  # one build of an environment at a time
        self._ahead: dict[str, priority.Urgency] = {}  # the environments a prefetch is preparing
        self.foreground = priority.Foreground()  # a prefetch waits while the runs prepare their own

    def _building_lock(self, key: str) -> threading.Lock:
        with self._lock:
            return self._building.setdefault(key, threading.Lock())

    def own(self, key: str, prepare: Callable[[], T]) -> T:
        """A run's own preparation of environment `key`: the foreground's while it lasts (or
        waits); a prefetch of the same environment in progress is hurried and waited for."""
        building = self._building_lock(key)
        with self.foreground.preparing():
            if not building.acquire(blocking=False):
                with self._lock:
                    awaited = self._ahead.get(key)
                if awaited is not None:
                    awaited.hurry()  # the search now waits for it: no longer low priority
                building.acquire()
            try:
                return prepare()
            finally:
                building.release()

    def ahead(self, key: str, prepare: Callable[[], T]) -> T:
        """A prefetch's preparation of environment `key`, under the prefetch's urgency (one of
        its own when the caller has none), which a run waiting for it hurries."""
        urgency = priority.current() or priority.Urgency()
        with self._lock:
            self._ahead[key] = urgency
        try:
            with priority.ahead(urgency), self._building_lock(key):
                forget = priority.unnice_on_hurry(urgency)
                try:
                    return prepare()
                finally:
                    forget()
        finally:
            with self._lock:
                if self._ahead.get(key) is urgency:
                    del self._ahead[key]

    def urgency(self, key: str) -> priority.Urgency | None:
        """The urgency of a prefetch of `key` in progress, or None."""
        with self._lock:
            return self._ahead.get(key)
