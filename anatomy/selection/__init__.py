"""Pipeline D: dataset selection (DsDm and its baselines) computed on any candidate pool.

``get_indices(method, n, target, pool, seed)`` (:mod:`anatomy.selection.select`) and
``get_candidate_dataset(path_or_name)`` (:mod:`anatomy.selection.pool`) are the two entry
points DsDm's README names; the rest is one module per method and stage.
"""

from __future__ import annotations

from typing import Any


def get_indices(*args: Any, **kwargs: Any):
    from anatomy.selection.select import get_indices as _get

    return _get(*args, **kwargs)


def get_candidate_dataset(*args: Any, **kwargs: Any):
    from anatomy.selection.pool import get_candidate_dataset as _get

    return _get(*args, **kwargs)


get_indices.__doc__ = "See :func:`anatomy.selection.select.get_indices`."
get_candidate_dataset.__doc__ = "See :func:`anatomy.selection.pool.get_candidate_dataset`."
