"""Consistency filtering of (query, document) pairs (pipeline E, step 2).

Mirrors nomic contrastors' v1 ``scripts/text/index_filtering.py`` (b0e94ca; E5's
consistency filter, which keeps a pair when its passage ranks in the query's top 2 among
about 1M random passages), as the contrastive reference §1.2 reads it, without its bugs:

- rows are processed in consecutive blocks of ``index_size`` rows and each block is its own
  exact inner-product index of its documents (published); the last block is the remainder,
  kept whole. Published (:func:`published_bounds`, ``--published_blocks``): floor(N /
  index_size) blocks, each rounded up to whole batches on every GPU, the last one absorbing
  the remainder rounded down to a multiple of batch size x world size (the rest dropped);
- a block's index holds each distinct document **once** (by
  :func:`~anatomy.contrastive.pairs.normalize_text`), so copies of a document never tie with
  each other and push their own pairs out (published: one entry per row position;
  ``by_position=True`` reproduces that for comparison);
- a pair is kept when its document's rank among the block's entries is at most ``k``
  (published: ``--k`` parsed, 2 hard-coded); ranks are exact (ties by lower entry, copies of
  a vector tie exactly), so one search gives the keep decision for every k and the rank of
  each dropped pair; the embeddings are fp32 by default (published: fp16), and below fp32
  the ranks' disagreement with fp32 is measured on a sample (:func:`precision_check`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anatomy.contrastive.index import EmbedOptions, SearchBlock
from anatomy.contrastive.pairs import normalize_text


@dataclass(frozen=True)
class PublishedBlocking:
    """contrastors' blocking, which depends on its GPUs and per-GPU batch size."""

    world_size: int = 8  # GPUs (torchrun ranks); the row counts quoted for it assume 8
    batch_size: int = 256  # index_filtering.py --batch_size (its default)


def published_bounds(n: int, index_size: int, world_size: int, batch_size: int
                     ) -> list[tuple[int, int]]:
    """The row ranges ``[start, stop)`` that contrastors' v1 ``index_filtering.py`` (b0e94ca,
    ``__main__`` lines 288-332 and ``embed`` lines 207-235) searches; rows past the last range
    get no id, so they are never kept.

    As read there: ``floor(n / index_size)`` iterations (at least 1); every GPU embeds its
    round-robin share (row ``i`` on rank ``i % world_size``) in batches of ``batch_size`` and
    stops after the first batch that brings its count to ``min(index_size // world_size,
    ceil(n / world_size))`` or more, so a block is whole batches on every GPU; the last
    iteration instead aims at ``R // W - 1`` per GPU, where ``R`` is the remaining rows rounded
    down to a multiple of ``batch_size * W``, and still embeds at least one batch. Raises
    ValueError where the published script would find no rows for an iteration (it then fails).
    """
    if min(n, index_size, world_size, batch_size) < 1:
        raise ValueError(f"n, index_size, world_size and batch_size must be >= 1, got "
                         f"{n}, {index_size}, {world_size}, {batch_size}")
    w, b = world_size, batch_size
    iterations = max(1, n // index_size)
    target = min(index_size // w, -(-n // w))  # rows per GPU per block
    bounds = []
    start = 0
    for i in range(iterations):
        if i == iterations - 1:
            remaining = n - start
            target = (remaining - remaining % (b * w)) // w - 1
        batches = max(1, -(-target // b))  # embed() checks its count after each batch
        rows = min(n - start, batches * b * w)
        if rows <= 0:
            raise ValueError(f"the published blocking has no rows left for block {i + 1} of "
                             f"{iterations} (index_size {index_size} < batch {b} x {w} GPUs "
                             "rounds the blocks up past the data): contrastors fails here")
        bounds.append((start, start + rows))
        start += rows
    return bounds


def default_bounds(n: int, index_size: int) -> list[tuple[int, int]]:
    """Consecutive blocks of ``index_size`` rows, the last one the (whole) remainder."""
    return [(s, min(n, s + index_size)) for s in range(0, n, index_size)]


@dataclass
class BlockPlan:
    """Rows ``[start, stop)`` of the input and their index entries."""

    start: int
    stop: int
    entries: int  # distinct documents (or rows, by position) in this block's index
    block: SearchBlock


def plan_blocks(documents: list[str], query_rows: np.ndarray, doc_rows: np.ndarray,
                index_size: int, by_position: bool = False,
                published: PublishedBlocking | None = None,
                empty: np.ndarray | None = None) -> list[BlockPlan]:
    """Consecutive blocks of ``index_size`` rows (the last one shorter, never dropped), or
    with ``published`` contrastors' blocks (:func:`published_bounds`; rows past them are in
    no block). Rows flagged ``empty`` (an empty or whitespace-only query or document: data
    to count and skip) put nothing in the index and get no target (rank -1, never kept)."""
    n = len(documents)
    empty = np.zeros(n, bool) if empty is None else np.asarray(empty, bool)
    if index_size < 1:
        raise ValueError(f"index_size must be >= 1, got {index_size}")
    bounds = default_bounds(n, index_size) if published is None else \
        published_bounds(n, index_size, published.world_size, published.batch_size)
    plans = []
    for s, e in bounds:
        ok = ~empty[s:e]
        if by_position:
            index_rows = doc_rows[s:e][ok]
            targets = np.where(ok, np.cumsum(ok) - 1, -1).astype(np.int64)
        else:
            pos: dict[str, int] = {}
            targets = np.full(e - s, -1, np.int64)
            first: list[int] = []
            for j, i in enumerate(range(s, e)):
                if not ok[j]:
                    continue
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


def precision_check(documents: list[str], texts: list[str], emb: np.ndarray,
                    q_rows: np.ndarray, doc_rows: np.ndarray, embed: EmbedOptions, k: int,
                    by_position: bool, sample: int, work_dir: Path, progress: bool = True,
                    seed: int = 0) -> dict[str, Any]:
    """How far ranks from low-precision embeddings (``emb``, bf16/fp16 autocast) are from
    fp32 ones, measured on a seeded sample of ``sample`` rows: the sample's queries are
    ranked among the sample's own distinct documents (by position with ``by_position``)
    with both embeddings, the fp32 ones computed here. A block holds more entries, so more
    near-ties than the sample's index: the rates are indicative, not a bound."""
    from dataclasses import replace

    from anatomy import execution
    from anatomy.contrastive.index import TextTable, embed_table
    from anatomy.neighbours import rank_search

    n = len(documents)
    if sample <= 0 or n == 0:
        return {"measured": False}
    rng = np.random.default_rng(seed)
    rows = np.arange(n) if n <= sample else np.sort(rng.choice(n, sample, replace=False))
    table = TextTable()
    q32 = table.add([texts[int(r)] for r in q_rows[rows]])
    d32 = table.add([texts[int(r)] for r in doc_rows[rows]])
    emb32, _ = embed_table(table, replace(embed, precision="fp32"), work_dir,
                           execution.Ranks(), progress=progress)
    docs = [documents[int(i)] for i in rows]
    out = {}
    for name, e, qr, dr in (("low", emb, q_rows[rows], doc_rows[rows]),
                            ("fp32", emb32, q32, d32)):
        blk = plan_blocks(docs, qr, dr, len(rows), by_position)[0].block
        res = rank_search(np.asarray(e[blk.query_rows]), np.asarray(e[blk.index_rows]),
                          blk.targets)
        out[name] = (res["ranks"], res["own"], len(blk.index_rows))
    low, full = out["low"], out["fp32"]
    return {"measured": True, "sample_rows": len(rows), "sample_entries": full[2],
            "ranks_differ": int((low[0] != full[0]).sum()),
            "max_rank_shift": int(np.abs(low[0] - full[0]).max()),
            "kept_differ": int((keep_mask(low[0], k) != keep_mask(full[0], k)).sum()),
            "kept_fp32": int(keep_mask(full[0], k).sum()),
            "max_abs_score_diff": float(np.abs(low[1] - full[1]).max())}
