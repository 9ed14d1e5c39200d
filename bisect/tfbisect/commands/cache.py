"""`tfbisect cache`: what tfbisect keeps on this machine (venvs, its uv cache, wheels, resolved
locks, narrowing traces, images, site volumes) with sizes and last use; `cache prune` frees it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from tfbisect.core import argv as cmdline
from tfbisect.core.errors import ExitCode, UsageError
from tfbisect.core.progress import Progress
from tfbisect.envs import cache, locks
from tfbisect.envs.cache import default_cache_dir


@dataclass(frozen=True)
class CacheOptions:
    action: str = "list"  # or "prune"
    older_than: str | None = None  # 7d, 12h, 30m
    keep_last: int | None = None  # per kind
    all: bool = False
    dry_run: bool = False
    common: cmdline.Common = field(default_factory=cmdline.Common)


@dataclass(frozen=True)
class CacheResult:
    inventory: cache.Inventory
    planned: tuple[cache.Entry, ...] = ()  # what prune removes (or would, with --dry-run)
    freed: cache.Freed | None = None  # None: nothing removed (a listing, a dry run)
    exit_code: ExitCode = ExitCode.NOT_REPRODUCED


def cache_command(options: CacheOptions, progress: Progress) -> CacheResult:
    cache_dir = options.common.cache or default_cache_dir()
    engine, why = cache.engine_or_none(progress)
    found = cache.inventory(
        cache_dir, locks_dir=locks.written_locks_dir(), reports_dir=options.common.reports, engine=engine
    )
    if why:
        found = cache.Inventory(found.entries, (*found.notes, f"  ({why.splitlines()[0]})"))
    if options.action == "list":
        return CacheResult(found)
    if not (options.all or options.older_than or options.keep_last is not None):
        raise UsageError(
            "`tfbisect cache prune` needs to know what to remove.",
            "add --older-than 7d, --keep-last 3 or --all (and --dry-run to see the plan first).",
        )
    planned = cache.plan_prune(
        found.entries,
        now=time.time(),
        older_than=cache.parse_age(options.older_than) if options.older_than else None,
        keep_last=options.keep_last,
        everything=options.all,
    )
    if options.dry_run:
        return CacheResult(found, tuple(planned))
    freed = cache.evict(planned, cache_dir, engine=engine)
    return CacheResult(found, tuple(planned), freed)
