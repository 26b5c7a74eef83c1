"""Per-sample token-frequency statistics (anatomy.memorization.frequencies): the published
p25/p75 (Spark's percentile_approx, exact on 64 values) against a brute-force reading of its
documented definition, and the default against numpy's linear rule."""

from __future__ import annotations

import numpy as np

from anatomy.memorization.frequencies import frequency_stats, nearest_rank


def _smallest_at_or_above(row: np.ndarray, q: float) -> float:
    """Spark's documented definition by brute force: the smallest value v of the row with at
    least a fraction q of the values <= v."""
    return min(v for v in row if np.mean(row <= v) >= q)


def test_nearest_rank_against_the_definition():
    rng = np.random.default_rng(0)
    rows = rng.integers(0, 20, (300, 64)).astype(np.float64)  # many ties
    for q in (0.25, 0.5, 0.75):
        want = [_smallest_at_or_above(r, q) for r in rows]
        assert nearest_rank(rows, q).tolist() == want
    # hand value: 1..8, q = 0.25 -> the 2nd smallest; numpy's linear rule gives 2.75
    assert nearest_rank(np.arange(1, 9)[None], 0.25).tolist() == [2.0]
    assert np.percentile(np.arange(1, 9), 25) == 2.75


def test_published_percentiles_switch():
    """Counts for token ids 0..9 and samples built by hand; only p25/p75 change."""
    counts = np.array([5, 1, 9, 3, 7, 2, 8, 4, 6, 10], dtype=np.int64)
    samples = np.array([[0, 1, 2, 3, 4, 5, 6, 7], [9, 9, 9, 1, 1, 2, 2, 0]])
    ours = frequency_stats(samples, counts)
    pub = frequency_stats(samples, counts, published_percentiles=True)
    f = counts[samples].astype(float)
    assert ours["p25_frequency"].tolist() == np.percentile(f, 25, axis=1).tolist()
    assert pub["p25_frequency"].tolist() == [_smallest_at_or_above(r, 0.25) for r in f]
    assert pub["p75_frequency"].tolist() == [_smallest_at_or_above(r, 0.75) for r in f]
    for k in ("max_frequency", "avg_frequency", "min_frequency", "median_frequency"):
        assert ours[k].tolist() == pub[k].tolist()
    assert ours["p25_frequency"].tolist() != pub["p25_frequency"].tolist()
