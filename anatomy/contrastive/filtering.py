"""Consistency filtering of (query, document) pairs (pipeline E, step 2).

Mirrors nomic contrastors' v1 ``scripts/text/index_filtering.py`` (b0e94ca; E5's
consistency filter, which keeps a pair when its passage ranks in the query's top 2 among
about 1M random passages), as the contrastive reference §1.2 reads it, without its bugs:

- rows are processed in consecutive blocks of ``index_size`` rows and each block is its own
  exact inner-product index of its documents (published); the last block keeps every row
  (published: rounded down to a multiple of batch size x world size, the rest dropped);
- a block's index holds each distinct document **once** (by
  :func:`~anatomy.contrastive.pairs.normalize_text`), so copies of a document never tie with
  each other and push their own pairs out (published: one entry per row position;
  ``by_position=True`` reproduces that for comparison);
- a pair is kept when its document's rank among the block's entries is at most ``k``
  (published: ``--k`` parsed, 2 hard-coded); ranks are exact (ties by lower entry), so one
  search gives the keep decision for every k and the rank of each dropped pair.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anatomy.contrastive.index import SearchBlock
from anatomy.contrastive.pairs import normalize_text


@dataclass
class BlockPlan:
    """Rows ``[start, stop)`` of the input and their index entries."""

    start: int
    stop: int
    entries: int  # distinct documents (or rows, by position) in this block's index
    block: SearchBlock


def plan_blocks(documents: list[str], query_rows: np.ndarray, doc_rows: np.ndarray,
                index_size: int, by_position: bool = False) -> list[BlockPlan]:
    """Consecutive blocks of ``index_size`` rows (the last one shorter, never dropped)."""
    n = len(documents)
    if index_size < 1:
        raise ValueError(f"index_size must be >= 1, got {index_size}")
    plans = []
    for s in range(0, n, index_size):
        e = min(n, s + index_size)
        if by_position:
            index_rows = doc_rows[s:e]
            targets = np.arange(e - s, dtype=np.int64)
        else:
            pos: dict[str, int] = {}
            targets = np.empty(e - s, np.int64)
            first: list[int] = []
            for j, i in enumerate(range(s, e)):
                key = normalize_text(documents[i])
                t = pos.get(key)
                if t is None:
                    t = pos[key] = len(first)
                    first.append(i)
                targets[j] = t
            index_rows = doc_rows[np.asarray(first, np.int64)]
        plans.append(BlockPlan(s, e, len(index_rows),
                               SearchBlock(query_rows[s:e], index_rows, targets)))
    return plans


def keep_mask(ranks: np.ndarray, k: int) -> np.ndarray:
    """Kept pairs: their document ranks in the query's top ``k``."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return (ranks >= 1) & (ranks <= k)


def rank_histogram(ranks: np.ndarray, edges: tuple[int, ...] = (1, 2, 3, 6, 11, 101, 1001)
                   ) -> dict[str, int]:
    """Counts of ranks in [1], [2], [3-5], [6-10], [11-100], [101-1000], [1001+]."""
    out = {}
    for a, b in zip(edges, (*edges[1:], None), strict=True):
        label = str(a) if b == a + 1 else (f"{a}+" if b is None else f"{a}-{b - 1}")
        sel = ranks >= a if b is None else (ranks >= a) & (ranks < b)
        out[label] = int(sel.sum())
    return out
