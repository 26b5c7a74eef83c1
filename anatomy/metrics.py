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


# ---------------------------------------------------------------------------------------
# uncertainty: bootstrap intervals over a split's texts, and the chance band of the split


def _auroc_matrix(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """AUROC of each row of scores ``s (B, n)`` against labels ``y (B, n)`` (rank form,
    ties 1/2): :func:`auroc` row by row, vectorised."""
    from scipy.stats import rankdata

    r = rankdata(s, axis=1)
    pos = y.sum(1)
    neg = y.shape[1] - pos
    with np.errstate(invalid="ignore", divide="ignore"):
        return ((r * y).sum(1) - pos * (pos + 1) / 2) / (pos * neg)


def _tpr_matrix(s: np.ndarray, y: np.ndarray, fpr: float) -> np.ndarray:
    """TPR at the last ROC point with FPR < ``fpr``, each row: the largest TPR over the
    thresholds (distinct scores) whose FPR is below it. Equals :func:`tpr_at_fpr` where no
    tied scores mix members and non-members (bootstrap copies of one text tie with
    themselves only)."""
    order = np.argsort(-s, axis=1, kind="mergesort")
    ss = np.take_along_axis(s, order, 1)
    yy = np.take_along_axis(y, order, 1).astype(np.float64)
    tp, fp = np.cumsum(yy, 1), np.cumsum(1 - yy, 1)
    end = np.ones_like(ss, bool)
    end[:, :-1] = ss[:, 1:] != ss[:, :-1]  # the last index of each tied score
    P, N = tp[:, -1:], fp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = end & (fp / N < fpr)
        t = np.where(ok, tp / P, 0.0).max(1)
    return np.where((P[:, 0] > 0) & (N[:, 0] > 0), t, np.nan)


def _metric_rows(s: np.ndarray, y: np.ndarray, fprs: Sequence[float]) -> dict[str, np.ndarray]:
    out = {"auroc": _auroc_matrix(s, y)}
    for f in fprs:
        out[f"tpr@{f * 100:g}%"] = _tpr_matrix(s, y, f)
    return out


def bootstrap_intervals(scores, labels, n_boot: int = 1000, seed: int = 0,
                        ci: float = 0.95, fprs: Sequence[float] = DEFAULT_FPRS
                        ) -> dict[str, list[float] | None]:
    """``{"auroc": [lo, hi], "tpr@x%": [lo, hi] ...}``: the central ``ci`` interval over
    ``n_boot`` resamples of the split's texts, members and non-members each resampled with
    replacement (their counts fixed, as the split's are). None for a TPR that
    :func:`measurable_fpr` rules out."""
    s, y = _check(scores, labels)
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    if not len(pos) or not len(neg):
        return {"auroc": None, **{f"tpr@{f * 100:g}%": None for f in fprs}}
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xB0075]))
    idx = np.concatenate([rng.choice(pos, (n_boot, len(pos))),
                          rng.choice(neg, (n_boot, len(neg)))], axis=1)
    rows = _metric_rows(s[idx], y[idx], fprs)
    q = [(1 - ci) / 2, (1 + ci) / 2]
    out: dict[str, list[float] | None] = {}
    for k, v in rows.items():
        if k != "auroc" and not measurable_fpr(len(neg), float(k[4:-1]) / 100):
            out[k] = None
        else:
            out[k] = [float(x) for x in np.quantile(v[np.isfinite(v)], q)]
    return out


def null_band(n_members: int, n_nonmembers: int, n_perm: int = 2000, seed: int = 0,
              ci: float = 0.95, fprs: Sequence[float] = DEFAULT_FPRS
              ) -> dict[str, list[float] | None]:
    """The split's chance band: the central ``ci`` interval of each metric when the labels
    carry no information (a uniformly random assignment of the split's member and
    non-member counts to untied scores). It depends on the two counts alone, so one band
    serves every method on the split; a value inside it is indistinguishable from chance
    (for AUROC, the Mann-Whitney null)."""
    n = n_members + n_nonmembers
    if not n_members or not n_nonmembers:
        return {"auroc": None, **{f"tpr@{f * 100:g}%": None for f in fprs}}
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x0B4D]))
    y = np.zeros((n_perm, n), bool)
    y[:, :n_members] = True
    y = rng.permuted(y, axis=1)
    s = np.broadcast_to(np.arange(n, dtype=np.float64), (n_perm, n))
    rows = _metric_rows(np.ascontiguousarray(s), y, fprs)
    q = [(1 - ci) / 2, (1 + ci) / 2]
    return {k: (None if k != "auroc" and not measurable_fpr(n_nonmembers,
                                                             float(k[4:-1]) / 100)
                else [float(x) for x in np.quantile(v, q)]) for k, v in rows.items()}
