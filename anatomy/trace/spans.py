"""Maximal matching spans of a text in the trained stream (OLMoTrace, Liu et al. 2025, §3).

A span ``[l, r)`` of the text's tokens *matches* when it occurs verbatim in the stream; it
is *maximal* when it matches and neither ``[l - 1, r)`` nor ``[l, r + 1)`` does. With
``R(l)`` the end of the longest match starting at ``l`` (non-decreasing in ``l``, since a
substring of a match matches), ``[l, R(l))`` is maximal exactly when ``R(l) > R(l - 1)``: if
``R(l - 1) >= R(l)`` the match starting at ``l - 1`` contains ``[l - 1, R(l))``. One pass of
two pointers finds every ``R(l)`` with at most ``2 n`` ``contains`` calls (OLMoTrace does
the same search with one suffix-array query per start, in parallel).

OLMoTrace then keeps only long, rare spans: each span's *unigram probability* is the product
of its tokens' unigram probabilities in the training data, and the ``K = ceil(0.05 n)``
spans with the lowest are kept (§3, step 2). :func:`unigram_filter` is that filter
(``--unigram_filter``); it is off by default here, where every maximal span of at least
``min_len`` tokens is reported (OLMoTrace's further "self-contained" rules on words and
sentence ends are specific to its display and not applied).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def maximal_spans(contains: Callable[[list[int]], bool], tokens: Sequence[int],
                  min_len: int = 8) -> list[tuple[int, int]]:
    """Every maximal matching span ``(start, end)`` of at least ``min_len`` tokens, in
    text order (spans may overlap)."""
    toks = [int(t) for t in tokens]
    n = len(toks)
    out: list[tuple[int, int]] = []
    r = prev = 0
    for left in range(n):
        r = max(r, left)
        while r < n and contains(toks[left:r + 1]):
            r += 1
        if r > prev and r - left >= min_len:
            out.append((left, r))
        prev = max(prev, r)
    return out


def span_log_unigram(tokens: Sequence[int], unigram: np.ndarray) -> float:
    """log of the product of the tokens' unigram probabilities (counts / total)."""
    total = float(unigram.sum())
    c = unigram[np.asarray(tokens, np.int64)].astype(np.float64)
    return float(np.log(np.maximum(c, 1e-300) / total).sum())


def unigram_filter(spans: Sequence[tuple[int, int]], tokens: Sequence[int],
                   unigram: np.ndarray, fraction: float = 0.05) -> list[tuple[int, int]]:
    """OLMoTrace's filter: the ``ceil(fraction * len(tokens))`` spans with the lowest unigram
    probability, in text order."""
    if not spans:
        return []
    k = max(1, math.ceil(fraction * len(tokens)))
    toks = np.asarray(tokens, np.int64)
    score = [span_log_unigram(toks[a:b], unigram) for a, b in spans]
    keep = sorted(np.argsort(score, kind="stable")[:k].tolist())
    return [spans[i] for i in keep]
