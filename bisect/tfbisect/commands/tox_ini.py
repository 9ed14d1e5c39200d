"""`tfbisect tox-ini`: the catalogue tox.ini's generated per-line block is written from (the
block itself is words, rendered by `tfbisect.toxini` at the command line)."""

from __future__ import annotations

from dataclasses import dataclass

from tfbisect.commands.common import DONE
from tfbisect.core import catalogue
from tfbisect.core.catalogue import Catalogue
from tfbisect.core.errors import ExitCode
from tfbisect.core.progress import Progress


@dataclass(frozen=True)
class ToxIniOptions:
    pass


@dataclass(frozen=True)
class ToxIniResult:
    catalogue: Catalogue
    exit_code: ExitCode = DONE


def tox_ini(options: ToxIniOptions, progress: Progress) -> ToxIniResult:
    return ToxIniResult(catalogue.load_snapshot())
