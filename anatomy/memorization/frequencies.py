"""Corpus token frequencies over the trained stream, and each sample's frequency statistics.

EleutherAI's ``calculate_token_frequencies.cpp`` counts every token id over all 146.4M x
2049 training tokens; ``filters/token_frequency_statistics_filter.py`` gives each sample's
``max_frequency``, ``avg_frequency`` (mean), ``min_frequency``, ``median_frequency``,
``p25_frequency`` and ``p75_frequency`` over its tokens (Prashanth et al. 2024 §3: rare tokens
constrain recollection). Counting here is ``np.bincount`` per storage block, summed (see
:mod:`anatomy.memorization.corpus`). The median is Spark's ``F.median`` (exact, linear
interpolation, as numpy's); p25 and p75 are numpy's linear interpolation by default, while the
published ones came from ``F.percentile_approx``, which on 64 values is exact and a nearest
rank (the smallest value at or above a fraction q of the values: sorted[ceil(q n) - 1]);
``published_percentiles=True`` gives those.
"""

from __future__ import annotations

import numpy as np

STATS = ("max_frequency", "avg_frequency", "min_frequency", "median_frequency",
         "p25_frequency", "p75_frequency")


def token_counts(rows: np.ndarray, vocab_size: int = 0) -> np.ndarray:
    """Occurrences of every token id in ``rows`` (int64, length >= ``vocab_size``)."""
    flat = np.asarray(rows).ravel()
    return np.bincount(flat, minlength=vocab_size).astype(np.int64)


def nearest_rank(values: np.ndarray, q: float) -> np.ndarray:
    """Spark's ``percentile_approx(col, q)`` per row when its summary is exact (up to the
    default accuracy 10,000 values): the smallest value v with #{x <= v} >= q n, i.e. the
    sorted row's element ``ceil(q n) - 1`` (Spark ``QuantileSummaries.query``)."""
    v = np.sort(np.asarray(values, dtype=np.float64), axis=1)
    n = v.shape[1]
    k = max(int(np.ceil(q * n)) - 1, 0)
    return v[:, k]


def frequency_stats(samples: np.ndarray, counts: np.ndarray,
                    published_percentiles: bool = False) -> dict[str, np.ndarray]:
    """Per sample (row of token ids) the six statistics of its tokens' corpus counts;
    ``published_percentiles``: p25 and p75 by Spark's nearest rank (:func:`nearest_rank`)."""
    samples = np.asarray(samples, dtype=np.int64)
    if samples.size and samples.max() >= len(counts):
        raise ValueError(f"token id {int(samples.max())} beyond the counts' vocabulary "
                         f"({len(counts)})")
    f = counts[samples].astype(np.float64)
    q25, q50, q75 = np.percentile(f, [25, 50, 75], axis=1)
    if published_percentiles:
        q25, q75 = nearest_rank(f, 0.25), nearest_rank(f, 0.75)
    return {"max_frequency": f.max(1).astype(np.int64), "avg_frequency": f.mean(1),
            "min_frequency": f.min(1).astype(np.int64), "median_frequency": q50,
            "p25_frequency": q25, "p75_frequency": q75}
