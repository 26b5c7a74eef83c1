"""Selection rules shared by every method: from per-candidate scores to ranked indices.

The contract (``get_indices``): ``n`` unique in-range candidate indices, best first, ties
broken by the lower index; deterministic rules (top-n) are nested across ``n``, seeded ones
(Gumbel top-k, uniform, Pareto) are reproducible per seed. Scores are float32, one per
candidate row, higher = keep; NaN marks a candidate the method gives no score (ineligible).

DsDm's published ``get_indices`` (MadryLab/DsDm ``dsdm/selections.py``) draws unseeded, returns
every index for ``n = 0`` (``argsort(...)[-0:]``) and returns the DsDm top-n worst first;
here every draw takes a seed, ``0 < n <= eligible`` is checked and the order is best first.
"""

from __future__ import annotations

import numpy as np

from anatomy.io import InputError


def eligible(scores: np.ndarray) -> np.ndarray:
    """Indices of the candidates with a score (not NaN), ascending."""
    return np.flatnonzero(~np.isnan(np.asarray(scores, dtype=np.float64)))


def check_n(n: int, n_eligible: int, what: str = "candidates") -> int:
    """``n`` as an int, or one clear error unless ``0 < n <= n_eligible``."""
    if isinstance(n, bool | float) and not float(n).is_integer():
        raise InputError(None, f"n must be a whole number, got {n!r}")
    n = int(n)
    if n <= 0:
        raise InputError(None, f"n must be positive, got {n} (the published get_indices "
                               "returns every row for n=0; this one refuses)")
    if n > n_eligible:
        raise InputError(None, f"n = {n} is more than the {n_eligible} eligible {what}")
    return n


def rank_by(keys: np.ndarray, n: int) -> np.ndarray:
    """The ``n`` indices with the largest ``keys`` (NaN never chosen), best first, ties by
    index. ``O(N + n log n)``: an introselect for the boundary, a stable sort of the rest."""
    keys = np.asarray(keys, dtype=np.float64)
    ok = eligible(keys)
    n = check_n(n, len(ok))
    k = keys[ok]
    if n < len(ok):
        # the n-th largest value; everything above it is in, ties at it go by index
        kth = np.partition(k, len(k) - n)[len(k) - n]
        above = ok[k > kth]
        at = ok[k == kth][: n - len(above)]
        ok = np.concatenate([above, at])
        k = keys[ok]
    order = np.lexsort((ok, -k))  # primary: key descending; secondary: index ascending
    return ok[order].astype(np.int64)


def top_n(scores: np.ndarray, n: int) -> np.ndarray:
    """Deterministic top-n of ``scores`` (nested: ``top_n(s, m)`` is a prefix of
    ``top_n(s, n)`` for ``m < n``)."""
    return rank_by(scores, n)


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), 0x5E1EC7]))


def gumbel_top_n(log_weights: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Sample ``n`` without replacement with probability proportional to
    ``exp(log_weights)``: the Gumbel-top-k trick (Kool et al. 2019), as DSIR's ``resample``
    does (Xie et al. 2023, Sec. 3), seeded. Best first = largest perturbed key first."""
    lw = np.asarray(log_weights, dtype=np.float64)
    g = _rng(seed).gumbel(size=len(lw))
    return rank_by(lw + g, n)


def uniform(n_candidates: int, n: int, seed: int, among: np.ndarray | None = None
            ) -> np.ndarray:
    """``n`` distinct candidates uniformly at random (of ``among`` when given), seeded;
    the order is the draw order."""
    pool = np.arange(n_candidates, dtype=np.int64) if among is None else \
        np.asarray(among, dtype=np.int64)
    n = check_n(n, len(pool))
    return _rng(seed).permutation(pool)[:n]


def pareto_keep(scores: np.ndarray, n: int, seed: int, alpha: float = 9.0) -> np.ndarray:
    """GPT-3's quality-filter rule (Brown et al. 2020, App. A): keep a document when
    ``np.random.pareto(alpha) > 1 - score``, ``score`` a probability in [0, 1].

    As the DSIR paper's heuristic-classification pipeline retrieves k documents: draw one
    Pareto(α) per candidate per round and OR the kept masks until at least ``n`` are kept,
    then take ``n`` of the kept ones in a seeded random order (the published code shuffles and
    truncates). Returned best first by score among the kept, ties by index, so the result is
    a set chosen by the rule and ranked by the classifier.
    """
    s = np.asarray(scores, dtype=np.float64)
    ok = eligible(s)
    n = check_n(n, len(ok))
    rng = _rng(seed)
    kept = np.zeros(len(s), dtype=bool)
    for _ in range(10_000):
        kept[ok] |= rng.pareto(alpha, size=len(ok)) > 1.0 - s[ok]
        if kept.sum() >= n:
            break
    else:
        raise InputError(None, f"the Pareto rule kept {int(kept.sum())} < {n} candidates in "
                               "10,000 rounds (scores near 0?): use the top-n rule")
    chosen = rng.permutation(np.flatnonzero(kept))[:n]
    keys = np.full(len(s), np.nan)
    keys[chosen] = s[chosen]
    return rank_by(keys, n)
