"""Membership-attack metrics, as em-mia's ``eval.py`` computes them (numpy only).

- ``roc_curve``: sklearn's definition (scores sorted descending, tied scores form one
  threshold, collinear intermediate points dropped by default, first point (0, 0) at
  threshold +inf);
- ``auroc``: trapezoidal area under that curve (= Mann-Whitney U with ties counted 1/2);
- ``tpr_at_fpr``: TPR at the last ROC point whose FPR is strictly below the target;
- ``balanced_accuracy``: max over thresholds of 1 - (FPR + FNR) / 2.

Scores are oriented higher = member, labels are 1 = member, 0 = non-member. A metric that
needs both classes is NaN when one is missing.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

DEFAULT_FPRS = (0.001, 0.01, 0.05)


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels).ravel().astype(bool)
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if np.isnan(s).any():
        raise ValueError("scores contain NaN")
    return s, y


def roc_curve(scores, labels, drop_intermediate: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` exactly as ``sklearn.metrics.roc_curve``.

    Example: scores [3, 2, 2, 1], labels [1, 1, 0, 0] -> thresholds [inf, 3, 2, 1],
    fpr [0, 0, .5, 1], tpr [0, .5, 1, 1] (the tie at 2 moves both rates at once).
    """
    s, y = _check(scores, labels)
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each tied score
    tps = np.cumsum(y)[last].astype(np.float64)
    fps = (last + 1) - tps
    thresholds = s[last]
    if drop_intermediate and fps.size > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)),
                                    True])
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    fps, tps = np.r_[0.0, fps], np.r_[0.0, tps]
    thresholds = np.r_[np.inf, thresholds]
    with np.errstate(invalid="ignore", divide="ignore"):
        fpr = fps / fps[-1] if fps[-1] > 0 else np.full_like(fps, np.nan)
        tpr = tps / tps[-1] if tps[-1] > 0 else np.full_like(tps, np.nan)
    return fpr, tpr, thresholds


def auroc(scores, labels) -> float:
    """Area under the ROC curve; NaN if only one class is present."""
    s, y = _check(scores, labels)
    if y.all() or not y.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(s, y)
    return float(np.trapezoid(tpr, fpr))


def auroc_rows(matrix: np.ndarray, labels) -> np.ndarray:
    """AUROC of every row of ``matrix`` against one label vector, vectorised.

    Uses the rank form AUROC = (sum of member ranks - P(P+1)/2) / (P N), average ranks for
    ties, which equals the trapezoidal area of :func:`auroc`.
    """
    from scipy.stats import rankdata

    m = np.asarray(matrix, dtype=np.float64)
    y = np.asarray(labels).astype(bool)
    if m.ndim != 2 or m.shape[1] != y.size:
        raise ValueError(f"matrix {m.shape} does not match {y.size} labels")
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return np.full(m.shape[0], np.nan)
    ranks = rankdata(m, axis=1)
    return (ranks[:, y].sum(1) - pos * (pos + 1) / 2) / (pos * neg)


def tpr_at_fpr(scores, labels, fpr: float) -> float:
    """TPR at the last ROC point with FPR strictly below ``fpr`` (a fraction: 0.01 = 1%)."""
    f, t, _ = roc_curve(scores, labels)
    if np.isnan(f).any() or np.isnan(t).any():
        return float("nan")
    return float(t[np.flatnonzero(f < fpr)[-1]])


def balanced_accuracy(scores, labels) -> float:
    """Best balanced accuracy over thresholds: max 1 - (FPR + FNR) / 2."""
    f, t, _ = roc_curve(scores, labels)
    if np.isnan(f).any() or np.isnan(t).any():
        return float("nan")
    return float(np.max(1 - (f + (1 - t)) / 2))


def measurable_fpr(n_nonmembers: int, fpr: float) -> bool:
    """Whether TPR at ``fpr`` means anything: at least ``1 / fpr`` non-members, so that one
    false positive is an FPR of at most ``fpr`` (with 50 non-members the smallest non-zero
    FPR is 2%, and "TPR@0.1%FPR" is TPR at zero false positives)."""
    return n_nonmembers * fpr >= 1 - 1e-9


def summarize(scores, labels, fprs: Sequence[float] = DEFAULT_FPRS
              ) -> dict[str, float | None]:
    """``{"auroc", "tpr@0.1%", "tpr@1%", "tpr@5%", "bal_acc"}`` (fractions, not percent).

    A TPR@x is None where the labels hold fewer than ``1/x`` non-members
    (:func:`measurable_fpr`).
    """
    out: dict[str, float | None] = {"auroc": auroc(scores, labels)}
    n_non = int(np.sum(np.asarray(labels) == 0))
    for f in fprs:
        out[f"tpr@{f * 100:g}%"] = tpr_at_fpr(scores, labels, f) if measurable_fpr(n_non, f) \
            else None
    out["bal_acc"] = balanced_accuracy(scores, labels)
    return out
