"""anatomy.metrics against sklearn.metrics (roc_curve, roc_auc_score) and em-mia's eval.py
formulas written on top of sklearn's curve, on random data with many ties."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

from anatomy import metrics


def random_case(seed: int, n: int = 300, levels: int | None = 7):
    rng = np.random.default_rng(seed)
    labels = rng.random(n) < 0.4
    scores = rng.normal(size=n) + 0.8 * labels
    if levels is not None:  # coarse values -> ties within and across classes
        scores = np.round(scores * levels / 4) / levels
    return scores, labels.astype(int)


CASES = [(seed, n, levels) for seed in range(6) for n, levels in
         [(300, 7), (50, 2), (1000, None), (7, 1)]]


@pytest.mark.parametrize(("seed", "n", "levels"), CASES)
def test_roc_curve_and_auroc_match_sklearn(seed, n, levels):
    s, y = random_case(seed, n, levels)
    if y.min() == y.max():
        y[0] = 1 - y[0]
    for drop in (True, False):
        got = metrics.roc_curve(s, y, drop_intermediate=drop)
        want = sk_roc_curve(y, s, drop_intermediate=drop)
        for g, w in zip(got, want, strict=True):
            np.testing.assert_array_equal(g, w)
    assert metrics.auroc(s, y) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


@pytest.mark.parametrize("seed", range(6))
def test_tpr_at_fpr_and_balanced_accuracy_match_em_mia(seed):
    s, y = random_case(seed, 400, 9)
    fpr, tpr, _ = sk_roc_curve(y, s)  # em-mia eval.py: sklearn curve, then these formulas
    for c in (0.1, 1, 5, 10, 20):
        want = tpr[np.where(fpr < c / 100.0)[0][-1]]
        assert metrics.tpr_at_fpr(s, y, c / 100) == want
    assert metrics.balanced_accuracy(s, y) == pytest.approx(np.max(1 - (fpr + (1 - tpr)) / 2))
    summ = metrics.summarize(s, y)
    assert list(summ) == ["auroc", "tpr@0.1%", "tpr@1%", "tpr@5%", "bal_acc"]
    assert summ["auroc"] == pytest.approx(roc_auc_score(y, s))


def test_auroc_rows_equals_rowwise_auroc():
    rng = np.random.default_rng(0)
    y = rng.random(60) < 0.5
    m = np.round(rng.normal(size=(9, 60)) + y * rng.normal(size=(9, 1)), 1)
    np.testing.assert_allclose(metrics.auroc_rows(m, y),
                               [roc_auc_score(y, row) for row in m], atol=1e-12)


def test_worked_example_and_degenerate_inputs():
    fpr, tpr, thr = metrics.roc_curve([3, 2, 2, 1], [1, 1, 0, 0])
    np.testing.assert_array_equal(fpr, [0, 0, 0.5, 1])
    np.testing.assert_array_equal(tpr, [0, 0.5, 1, 1])
    np.testing.assert_array_equal(thr, [np.inf, 3, 2, 1])
    assert metrics.auroc([1, 2, 3], [0, 1, 1]) == 1.0
    assert metrics.auroc([3, 2, 1], [0, 1, 1]) == 0.0
    assert math.isnan(metrics.auroc([1, 2, 3], [1, 1, 1]))
    summ = metrics.summarize([1, 2], [0, 0])
    assert math.isnan(summ["auroc"]) and math.isnan(summ["bal_acc"])
    assert summ["tpr@5%"] is None  # 2 non-members: no FPR below 50% is measurable
    assert np.isnan(metrics.auroc_rows(np.ones((2, 3)), [1, 1, 1])).all()
    with pytest.raises(ValueError, match="labels"):
        metrics.auroc([1, 2, 3], [0, 1])
    with pytest.raises(ValueError, match="NaN"):
        metrics.auroc([1, float("nan")], [0, 1])


def test_tpr_only_where_the_split_has_enough_nonmembers():
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(50), np.zeros(50)]
    s = rng.normal(size=100) + y
    summ = metrics.summarize(s, y)
    # 50 non-members: one false positive is FPR 2%, so TPR@0.1% and @1% are undefined
    assert summ["tpr@0.1%"] is None and summ["tpr@1%"] is None
    assert summ["tpr@5%"] == metrics.tpr_at_fpr(s, y, 0.05)
    y2 = np.r_[np.ones(10), np.zeros(1000)]
    s2 = rng.normal(size=1010) + 2 * y2
    assert all(v is not None for v in metrics.summarize(s2, y2).values())
    assert metrics.measurable_fpr(100, 0.01) and not metrics.measurable_fpr(99, 0.01)
