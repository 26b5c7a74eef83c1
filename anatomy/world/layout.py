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

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Occurrence:
    """One document placed in the training stream."""

    doc: int  # index into the builder's document table
    kind: str  # regular | filler | mia | mem_dense | mem_spread | mem_late | template
    offset: int = -1  # first token in the stream
    length: int = 0  # tokens, without the separator
    aligned: bool = False  # placed at an instance's first token


@dataclass
class Stream:
    tokens: np.ndarray  # uint16, training order
    categories: np.ndarray  # uint8 per token (index into CATEGORIES)
    occurrences: list[Occurrence] = field(default_factory=list)


def build_stream(regular: list[int], plants: list[tuple], doc_tokens: list[np.ndarray],
                 doc_category: list[int], eos_id: int, n_tokens: int,
                 seq_len: int | None = None) -> Stream:
    """Merge regular documents (in order) with plants ``(doc, kind, target_offset[, aligned])``.

    A plant goes in at the first document boundary at or after its target offset, so its
    position is within one document length of the target. An aligned plant must also start
    an instance (a training sequence's first token, where the memorization test of Biderman
    et al. 2023 takes its prompt): the gap to the next multiple of ``seq_len`` is filled with
    the head of the next regular document, cut short and closed by the separator (kind
    ``filler``), as a data loader's chunking cuts documents anyway. Regular documents are
    consumed until the stream holds ``n_tokens`` tokens; the stream is then cut to exactly that.
    """
    plants = sorted(((p[0], p[1], p[2], bool(p[3]) if len(p) > 3 else False) for p in plants),
                    key=lambda p: (p[2], p[0]))
    if seq_len is None and any(p[3] for p in plants):
        raise ValueError("aligned plants need seq_len")
    pieces: list[np.ndarray] = []
    cats: list[np.ndarray] = []
    occ: list[Occurrence] = []
    cursor = 0
    pi = 0

    def put(doc: int, kind: str, aligned: bool = False, keep: int | None = None) -> None:
        nonlocal cursor
        toks = doc_tokens[doc][:keep]
        occ.append(Occurrence(doc, kind, cursor, len(toks), aligned))
        pieces.append(toks)
        pieces.append(np.array([eos_id], dtype=np.uint16))
        cats.append(np.full(len(toks) + 1, doc_category[doc], dtype=np.uint8))
        cursor += len(toks) + 1

    docs = iter(regular)
    for doc in docs:
        while pi < len(plants) and plants[pi][2] <= cursor:
            p_doc, p_kind, _, p_aligned = plants[pi]
            while p_aligned and cursor % seq_len:
                gap = -cursor % seq_len
                filler = next(docs, None)
                if filler is None:
                    raise RuntimeError("corpus too small to align a plant")
                if len(doc_tokens[filler]) < gap - 1:  # whole, and the gap shrinks
                    put(filler, "regular")
                else:
                    put(filler, "filler", keep=gap - 1)
            put(p_doc, p_kind, p_aligned)
            pi += 1
        if cursor >= n_tokens:
            break
        put(doc, "regular")
    if cursor < n_tokens:
        raise RuntimeError(f"corpus too small: stream has {cursor} of {n_tokens} tokens")
    tokens = np.concatenate(pieces)[:n_tokens]
    categories = np.concatenate(cats)[:n_tokens]
    return Stream(tokens, categories, [o for o in occ if o.offset < n_tokens])


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
