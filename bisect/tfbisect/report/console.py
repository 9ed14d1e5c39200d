"""Text for the terminal of the commands whose results are no records: what `tfbisect new` wrote
and what to run next, and `tfbisect cache`'s listing and pruning.  The command line prints it
through `printable`, which keeps it as it is here: only its fields of outside text (a path, an
origin, an issue's words, an entry's name) have anything to escape."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from tfbisect.core.fsio import minute_of
from tfbisect.core.issuetext import VersionHint
from tfbisect.envs.cache import Entry, Freed, Inventory
from tfbisect.report import github


class Written(Protocol):
    """What `tfbisect new` wrote (commands.new.NewResult)."""

    @property
    def path(self) -> Path: ...
    @property
    def origin(self) -> str | None: ...
    @property
    def marked(self) -> bool: ...
    @property
    def hint(self) -> VersionHint | None: ...
    @property
    def more_comments(self) -> bool: ...
    @property
    def next_command(self) -> str: ...


def new_text(done: Written, *, scenario: bool) -> str:
    """What was written (`scenario`: a scenario, else a plain repro script), what the issue's
    text says about versions, and what to run next."""
    what = "a scenario" if scenario else "a plain repro script"
    lines = [f"wrote {done.path}: {what}" + (f", the code from {done.origin}" if done.origin else "")]
    if done.more_comments:
        lines.append(
            f"  (only the first {github.COMMENTS_PER_PAGE * github.MAX_COMMENT_PAGES} comments were read)"
        )
    if done.hint is not None:
        for line in done.hint.evidence or ("the text names no TensorFlow version",):
            lines.append(f"  versions: {line}")
        if done.hint.good is None:
            lines.append(
                "  no good version named: the bisection starts at the oldest release here (--good V narrows it)"
            )
        if done.hint.bad in (None, "nightly"):
            lines.append("  no bad release named: the bisection ends at the newest release here (--bad V)")
    if done.marked:
        lines.append(
            "  it is a stranger's code (its first line says so): tfbisect runs it only in containers "
            "(no network, non-root, read-only root) unless you remove that line or pass --trust-script"
        )
    if done.origin is None:
        lines.append(f"  edit {'repro()' if scenario else 'the repro'} in it, then run:")
    else:
        lines.append("  read it, then run:")
    lines.append(f"  {done.next_command}")
    return "\n".join(lines)


def cache_list_text(inventory: Inventory) -> str:
    """Every entry of the cache, by kind and the latest used first; the total; the notes."""
    entries = sorted(inventory.entries, key=lambda e: (e.kind, -e.last_used))
    lines = [cache_line(entry) for entry in entries]
    unknown = sum(not e.size_known for e in inventory.entries)
    # A volume this cache folder did not fill has no size mark: counted as 0, and said so.
    more = f" (and {unknown} of unknown size)" if unknown else ""
    lines.append(f"total: {size_text(inventory.total)} in {len(inventory.entries)} entries{more}")
    return "\n".join([*lines, *inventory.notes])


def cache_prune_text(
    planned: Sequence[Entry], freed: Freed | None, notes: Sequence[str], *, dry_run: bool
) -> str:
    """What a prune removed (or, `dry_run`, would remove), what stayed in use, and the free space
    before and after."""
    verb = "would remove" if dry_run else "removed"
    done = planned if freed is None else freed.removed
    lines = [f"{verb}: {cache_line(entry)}" for entry in done]
    lines.append(f"{verb} {len(done)} entries, {size_text(sum(e.size for e in done))}")
    if freed is not None:
        lines += [
            f"kept (a container uses it; prune again once it ends): {cache_line(e)}" for e in freed.kept
        ]
        lines.append(
            f"free space where the cache lives: {size_text(freed.free_before)} -> "
            f"{size_text(freed.free_after)} (statvfs; other writers count too)"
        )
    return "\n".join([*lines, *notes])


def size_text(count: int) -> str:
    return f"{count / 1000**3:.2f} GB" if count >= 1000**3 else f"{count / 1000**2:.1f} MB"


def cache_line(entry: Entry) -> str:
    when = minute_of(entry.last_used) if entry.last_used else "-"
    state = "  (not prepared through this cache: left alone)" if entry.foreign else ""
    state = state or ("" if entry.used else "  (prepared, never run)")
    size = size_text(entry.size) if entry.size_known else "unknown"
    return f"{entry.kind:<6} {size:>10}  {when}  {entry.name}{state}"
