"""Membership rates from membership-score distributions (the Min-K%++ mixture arm).

Scores follow the official Min-K%++ sign (higher = more member-like; Zhang et al. 2024,
arXiv 2404.02936). Two estimators of the fraction of a category's sample that was trained on:

* :func:`membership_rate_gmm` -- the published tool's recipe: a 2-component 1-D Gaussian
  mixture, rate = weight of the higher-mean component. It separates *distributions*, not
  memberships: with overlapping or non-Gaussian member / non-member scores it is biased
  (and it returns a "rate" even when nothing is a member; mixture.md section 1.2).
* :func:`membership_rate_calibrated` -- uses a reference set of KNOWN non-members of the same
  category: conformal p-values of the target scores against the reference (Bates, Candes,
  Lei, Romano & Sesia 2023, "Testing for outliers with conformal p-values", Ann. Stat.),
  then Storey's estimator of the null proportion (Storey 2002, "A direct approach to false
  discovery rates", JRSS-B): ``pi0(lambda) = #{p > lambda} / (m (1 - lambda))`` and
  rate = ``1 - pi0``. Non-members have (super-)uniform p-values, so they fill the interval
  ``(lambda, 1]`` at density 1; members, scoring above the reference, rarely land there.
  It is conservative: members that score below the reference's ``(1 - lambda)``-quantile
  are counted as non-members, so the rate is under- rather than over-estimated.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np


def _scores(x: np.ndarray, name: str, min_n: int = 2) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size < min_n or not np.all(np.isfinite(x)):
        raise ValueError(f"{name} must hold at least {min_n} finite scores")
    return x


def _interval(samples: np.ndarray, ci: float) -> tuple[float, float]:
    a = (1.0 - ci) / 2.0
    lo, hi = np.quantile(samples, [a, 1.0 - a])
    return float(lo), float(hi)


def fit_gmm2(scores: np.ndarray, seed: int = 0, n_init: int = 5) -> dict[str, float]:
    """Fit a 2-component 1-D Gaussian mixture; the "member" component has the higher mean.

    ``sklearn.mixture.GaussianMixture`` (EM; Dempster, Laird & Rubin 1977) with a fixed
    ``random_state`` and ``n_init`` k-means initialisations, keeping the best likelihood.
    """
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    x = _scores(scores, "scores", 2)
    if np.ptp(x) == 0:  # one point mass: no second component to find
        return {"rate": 0.0, "mean_member": float(x[0]), "mean_nonmember": float(x[0]),
                "std_member": 0.0, "std_nonmember": 0.0}
    gm = GaussianMixture(2, covariance_type="full", n_init=n_init, random_state=seed,
                         reg_covar=1e-6 * float(np.var(x)) + 1e-12)
    # one thread: the k-means init of a 1-D fit is tiny, and OpenMP threads on a busy
    # 2-core machine made one fit of 4000 scores 10-40x slower (0.07 s vs 0.7-3 s)
    with threadpool_limits(1):
        gm.fit(x[:, None])
    means = gm.means_.ravel()
    hi, lo = (1, 0) if means[1] > means[0] else (0, 1)
    std = np.sqrt(gm.covariances_.ravel())
    return {"rate": float(gm.weights_[hi]), "mean_member": float(means[hi]),
            "mean_nonmember": float(means[lo]), "std_member": float(std[hi]),
            "std_nonmember": float(std[lo])}


def membership_rate_gmm(scores: np.ndarray, seed: int = 0, n_boot: int = 200,
                        ci: float = 0.90, n_init: int = 5) -> dict[str, float]:
    """Weight of the higher-mean component of a 2-component GMM, with a bootstrap CI.

    Returns ``{point, mean, ci_lo, ci_hi, n, gmm_means: [member, non-member], ...}``;
    the interval is the percentile interval of ``n_boot`` refits on resampled scores
    (each refit uses the same ``random_state``; resampling draws from ``seed``).
    """
    x = _scores(scores, "scores", 2)
    fit = fit_gmm2(x, seed, n_init)
    rng = np.random.default_rng(seed)
    boot = np.array([fit_gmm2(x[rng.integers(0, x.size, x.size)], seed, n_init)["rate"]
                     for _ in range(n_boot)]) if n_boot > 0 else np.array([fit["rate"]])
    lo, hi = _interval(boot, ci)
    return {"point": fit["rate"], "mean": float(boot.mean()), "ci_lo": lo, "ci_hi": hi,
            "n": int(x.size), "gmm_means": [fit["mean_member"], fit["mean_nonmember"]],
            "gmm_stds": [fit["std_member"], fit["std_nonmember"]]}


def conformal_pvalues(scores: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``p_i = (1 + #{ref >= s_i}) / (n_ref + 1)``: small when ``s_i`` beats the reference.

    For a score exchangeable with the reference (a non-member) ``P(p <= t) <= t``
    (Bates et al. 2023). Ties count as ``>=`` (conservative).
    """
    ref = np.sort(np.asarray(reference, dtype=np.float64).ravel())
    s = np.asarray(scores, dtype=np.float64).ravel()
    n_ge = ref.size - np.searchsorted(ref, s, side="left")
    return (1.0 + n_ge) / (ref.size + 1.0)


def storey_member_rate(scores: np.ndarray, reference: np.ndarray, lam: float = 0.5) -> float:
    """``1 - pi0(lam)`` with Storey's ``pi0(lam) = #{p > lam} / (m (1 - lam))``, clipped to
    [0, 1]; p-values from :func:`conformal_pvalues`."""
    p = conformal_pvalues(scores, reference)
    pi0 = np.count_nonzero(p > lam) / (p.size * (1.0 - lam))
    return float(np.clip(1.0 - pi0, 0.0, 1.0))


def membership_rate_calibrated(scores: np.ndarray, reference_nonmember_scores: np.ndarray,
                               lam: float = 0.5, seed: int = 0, n_boot: int = 200,
                               ci: float = 0.90) -> dict[str, float]:
    """Member fraction of ``scores`` calibrated against KNOWN non-member scores.

    Storey's null-proportion estimate on conformal p-values (see the module docstring).
    ``lam`` trades bias for variance: larger ``lam`` counts fewer low-scoring members as
    non-members but uses fewer p-values (Storey 2002 uses 0.5 by default). The bootstrap
    resamples both the target and the reference scores.
    """
    if not 0 < lam < 1:
        raise ValueError("lam must be in (0, 1)")
    x = _scores(scores, "scores", 1)
    ref = _scores(reference_nonmember_scores, "reference_nonmember_scores", 2)
    point = storey_member_rate(x, ref, lam)
    rng = np.random.default_rng(seed)
    boot = np.array([storey_member_rate(x[rng.integers(0, x.size, x.size)],
                                        ref[rng.integers(0, ref.size, ref.size)], lam)
                     for _ in range(n_boot)]) if n_boot > 0 else np.array([point])
    lo, hi = _interval(boot, ci)
    return {"point": point, "mean": float(boot.mean()), "ci_lo": lo, "ci_hi": hi,
            "n": int(x.size), "n_reference": int(ref.size), "lambda": lam}


def normalise_mixture(rates: Mapping[str, float],
                      weights: Mapping[str, float] | None = None) -> dict[str, float]:
    """Global mixture over the sampled pool: ``n_c * rate_c / sum_c' n_c' * rate_c'``.

    ``weights`` are the category sizes (or shares) in the sampled pool; ``None`` means equal
    sizes, so the result is the rates renormalised (what the published tool reports as
    ``global_mixture_over_sampled_pool`` for balanced pools). This is the mixture of the
    members *found in the pool*, a relative quantity, not the training mixture itself.
    """
    cats = list(rates)
    if weights is None:
        weights = dict.fromkeys(cats, 1.0)
    missing = [c for c in cats if c not in weights]
    if missing:
        raise ValueError(f"no pool weight for {missing}")
    mass = {c: float(weights[c]) * float(rates[c]) for c in cats}
    if any(v < 0 or not np.isfinite(v) for v in mass.values()):
        raise ValueError("rates and weights must be finite and non-negative")
    total = sum(mass.values())
    if total <= 0:
        raise ValueError("all membership mass is zero: no global mixture")
    return {c: v / total for c, v in mass.items()}
