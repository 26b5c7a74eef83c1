"""Progress bars and the quiet switch, for the library and the scripts alike.

The scripts' ``--quiet`` calls :func:`set_quiet`; library loops call :func:`progress`, which
draws a tqdm bar on stderr unless quiet, ``TQDM_DISABLE=1``, or this process is not the
first rank (:func:`set_rank`, called by the scripts with the rank they resolved, so the
library never reads ranks from the environment).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_STATE = {"quiet": False, "rank": 0}


def set_quiet(quiet: bool) -> None:
    _STATE["quiet"] = bool(quiet)


def set_rank(rank: int) -> None:
    """Only rank 0 draws bars (several ranks' bars on one terminal are unreadable)."""
    _STATE["rank"] = int(rank)


def is_quiet() -> bool:
    return bool(_STATE["quiet"]) or os.environ.get("TQDM_DISABLE") == "1"


def progress(it: Iterable[T], desc: str, unit: str = "it", total: int | None = None,
             disable: bool | None = None) -> Iterator[T]:
    """A tqdm bar on stderr; ``disable=None`` means: off when quiet or on ranks > 0."""
    from tqdm.auto import tqdm

    if disable is None:
        disable = is_quiet() or _STATE["rank"] > 0
    return iter(tqdm(it, desc=desc, unit=unit, total=total, disable=disable, file=sys.stderr,
                     dynamic_ncols=True))
