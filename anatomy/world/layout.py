"""Lay a document stream out as OLMo training data: token files, data order, truth tables.

The training stream is built in *training order*: documents joined by the separator (EOS)
id, with planted documents inserted at chosen steps, cut into instances of ``seq_len``
tokens. Slot ``t = step * B + b`` trains stream instance ``t``. The data order is OLMo's:
``global_indices = PCG64(seed).permutation(n_instances)`` (OLMo ``iterable_dataset.py``
shuffles ``arange(len(dataset))`` the same way), and the stream instance of slot ``t`` is
stored as instance number ``global_indices[t]`` in the token files, so reading
``global_indices[step * B + b]`` from the files returns exactly what was trained. Token
files are raw little-endian uint16 with no header (OLMo's ``memmap_dtype``), instances
numbered across files in list order; each file ends with a tail shorter than one instance,
which readers must drop, as OLMo's ``MemMapDataset`` does.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np

# Filling the gap before an aligned plant: how many regular documents from the head of the
# queue it may choose from (on the tiny preset 64 left 3.9 tokens of padding per aligned
# plant, 128 left 3.2, 512 left 1.9)
LOOKAHEAD = 128


@dataclass
class Occurrence:
    """One document placed in the training stream, always whole."""

    doc: int  # index into the builder's document table
    kind: str  # regular | mia | mia_control | mem_dense | mem_spread | mem_late | template
    offset: int = -1  # first token in the stream
    length: int = 0  # tokens, without the separator
    aligned: bool = False  # placed at an instance's first token


@dataclass
class Stream:
    tokens: np.ndarray  # uint16, training order
    categories: np.ndarray  # uint8 per token (index into CATEGORIES)
    occurrences: list[Occurrence] = field(default_factory=list)
    # (offset, n): runs of n extra separators (empty documents) that close a gap before an
    # aligned plant where no choice of whole documents fills it exactly
    padding: list[tuple[int, int]] = field(default_factory=list)


def fill_gap(sizes: list[int], gap: int) -> tuple[list[int], int]:
    """Which candidates fill ``gap`` tokens, whole: ``(chosen, padding)``.

    ``sizes`` are the candidates' stream sizes (tokens + separator), in queue order. The
    chosen ones (indices, ascending) sum to the largest total ``<= gap``, leaving ``padding =
    gap - total``; among the subsets with that total, the lexicographically first (the
    earliest candidates taken first), which keeps the queue's order where it can. Exact
    subset sums: ``reach[i]`` is the bit set of the totals candidates ``i..`` reach.
    """
    mask = (1 << (gap + 1)) - 1
    reach = [0] * len(sizes) + [1]
    for i in range(len(sizes) - 1, -1, -1):
        reach[i] = (reach[i + 1] | (reach[i + 1] << sizes[i])) & mask
    total = reach[0].bit_length() - 1
    padding = gap - total
    chosen = []
    for i, s in enumerate(sizes):
        if s <= total and reach[i + 1] >> (total - s) & 1:
            chosen.append(i)
            total -= s
    return chosen, padding


def build_stream(regular: list[int], plants: list[tuple], doc_tokens: list[np.ndarray],
                 doc_category: list[int], eos_id: int, n_tokens: int,
                 seq_len: int | None = None, lookahead: int = LOOKAHEAD) -> Stream:
    """Merge regular documents (in order) with plants ``(doc, kind, target_offset[, aligned])``.

    A plant goes in at the first document boundary at or after its target offset, so its
    position is within one document length of the target. An aligned plant must also start
    an instance (a training sequence's first token, where the memorization test of Biderman
    et al. 2023 takes its prompt) and goes in at the next multiple of ``seq_len``; no document
    is cut to get there. The gap is filled with whole regular documents chosen from the next
    ``lookahead`` in the queue (:func:`fill_gap`: the fullest fit, earliest documents first;
    those passed over keep their order at the head of the queue), and what they leave is
    closed with extra separators, empty documents that a reader splitting on the separator
    skips (``Stream.padding``; their category is the preceding document's, as a separator's
    is). The plant is not moved to a later boundary instead: that would take more regular
    tokens and, where plants crowd (the dense memorization window), push the plants queued
    behind it past the end of their window. Regular documents are consumed until the stream
    holds ``n_tokens`` tokens; the stream is then cut to exactly that.
    """
    plants = sorted(((p[0], p[1], p[2], bool(p[3]) if len(p) > 3 else False) for p in plants),
                    key=lambda p: (p[2], p[0]))
    if seq_len is None and any(p[3] for p in plants):
        raise ValueError("aligned plants need seq_len")
    pieces: list[np.ndarray] = []
    cats: list[np.ndarray] = []
    occ: list[Occurrence] = []
    padding: list[tuple[int, int]] = []
    cursor = 0
    pi = 0

    def put(doc: int, kind: str, aligned: bool = False) -> None:
        nonlocal cursor
        toks = doc_tokens[doc]
        occ.append(Occurrence(doc, kind, cursor, len(toks), aligned))
        pieces.append(toks)
        pieces.append(np.array([eos_id], dtype=np.uint16))
        cats.append(np.full(len(toks) + 1, doc_category[doc], dtype=np.uint8))
        cursor += len(toks) + 1

    def pad(n: int) -> None:  # a gap follows a document: cats[-1] exists
        nonlocal cursor
        padding.append((cursor, n))
        pieces.append(np.full(n, eos_id, dtype=np.uint16))
        cats.append(np.full(n, cats[-1][-1], dtype=np.uint8))
        cursor += n

    queue = deque(regular)
    while True:
        while pi < len(plants) and plants[pi][2] <= cursor:
            p_doc, p_kind, _, p_aligned = plants[pi]
            if p_aligned and cursor % seq_len:
                head = [queue.popleft() for _ in range(min(lookahead, len(queue)))]
                chosen, n_pad = fill_gap([len(doc_tokens[d]) + 1 for d in head],
                                         -cursor % seq_len)
                keep = set(chosen)
                queue.extendleft(reversed([d for i, d in enumerate(head) if i not in keep]))
                for i in chosen:
                    put(head[i], "regular")
                if n_pad:
                    pad(n_pad)
            put(p_doc, p_kind, p_aligned)
            pi += 1
        if cursor >= n_tokens:
            break
        if not queue:
            raise RuntimeError(f"corpus too small: stream has {cursor} of {n_tokens} tokens")
        put(queue.popleft(), "regular")
    tokens = np.concatenate(pieces)[:n_tokens]
    categories = np.concatenate(cats)[:n_tokens]
    return Stream(tokens, categories, [o for o in occ if o.offset < n_tokens],
                  [(o, n) for o, n in padding if o < n_tokens])


def data_order(n_instances: int, seed: int) -> np.ndarray:
    """OLMo's data order: a PCG64-seeded permutation of the instance numbers, uint32."""
    rng = np.random.Generator(np.random.PCG64(seed))
    return rng.permutation(n_instances).astype(np.uint32)


def storage_layout(stream_instances: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rows in storage order: stored instance ``order[t]`` holds stream instance ``t``."""
    storage = np.empty_like(stream_instances)
    storage[order] = stream_instances
    return storage


def split_files(n_instances: int, n_files: int) -> list[tuple[int, int]]:
    """Contiguous [start, end) instance ranges, one per token file."""
    bounds = np.linspace(0, n_instances, n_files + 1).round().astype(int)
    return [(int(bounds[i]), int(bounds[i + 1])) for i in range(n_files)]
