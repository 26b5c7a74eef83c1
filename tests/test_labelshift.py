"""Label-shift prior estimators on synthetic data whose true target priors are known.

Setup: K = 5 isotropic Gaussian classes in 4-D, a multinomial logistic regression trained on
balanced data (so its posteriors are close to calibrated for uniform priors), a labelled
validation set of 2000 per class, and a target set of m = 20000 drawn with the very
different priors TRUE_Q. Tolerance: with m = 20000 a class frequency has sampling sd at most
sqrt(0.25 / 20000) = 0.0035; the adjustment inflates it by about cond(C) (2-4 here) and adds
validation noise, so a typical L1 error over 5 classes is about 0.02 (measured: 0.005-0.03).
L1 < 0.05 leaves a margin of more than 2 sd while p-bar's bias, |C q - q|_1 ~ 0.3, is far out.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import check_grad, minimize
from scipy.special import softmax
from sklearn.linear_model import LogisticRegression

from anatomy import classifiers
from anatomy.mixture import labelshift as ls

K, D = 5, 4
TRUE_Q = np.array([0.5, 0.2, 0.15, 0.1, 0.05])


def _draw(means: np.ndarray, counts, rng: np.random.Generator):
    X = np.concatenate([rng.normal(means[j], 1.0, (n, means.shape[1]))
                        for j, n in enumerate(counts)])
    return X, np.repeat(np.arange(len(counts)), counts)


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    means = rng.normal(0.0, 1.6, (K, D))
    Xtr, ytr = _draw(means, [2000] * K, rng)
    clf = LogisticRegression(max_iter=2000).fit(Xtr, ytr)
    Xv, yv = _draw(means, [2000] * K, rng)
    Xt, yt = _draw(means, rng.multinomial(20000, TRUE_Q), rng)
    return {"clf": clf, "means": means, "Zv": clf.decision_function(Xv), "yv": yv,
            "Zt": clf.decision_function(Xt), "yt": yt}


def _l1(a, b) -> float:
    return float(np.abs(np.asarray(a) - np.asarray(b)).sum())


@pytest.mark.parametrize("method", ["em_bcts", "em_ts", "em", "bbse_hard", "bbse_soft", "cls"])
def test_estimators_recover_known_priors(world, method):
    est = ls.estimate_priors(method, world["Zv"], world["yv"], world["Zt"])
    assert est.priors.shape == (K,)
    assert est.priors.min() >= 0 and est.priors.sum() == pytest.approx(1.0)
    assert _l1(est.priors, TRUE_Q) < 0.05, (method, est.priors)
    assert 1.0 <= est.diagnostics["condition_number"] < 10


def test_pbar_is_biased_toward_training_priors(world):
    pbar = ls.estimate_priors("pbar", world["Zv"], world["yv"], world["Zt"]).priors
    em = ls.estimate_priors("em_bcts", world["Zv"], world["yv"], world["Zt"]).priors
    # the predicted bias is C_soft q - q (mixture.md section 2); p-bar sits near it
    C = ls.confusion_matrix(softmax(world["Zv"], axis=1), world["yv"], soft=True)
    assert _l1(pbar, C @ TRUE_Q) < 0.03
    assert _l1(pbar, TRUE_Q) > 0.15 > 3 * _l1(em, TRUE_Q)


def test_em_matches_direct_likelihood_maximisation(world):
    """Independent check: maximise sum_n log(sum_k P_nk q_k / p_k) over the simplex (SLSQP)."""
    P = softmax(world["Zt"], axis=1)
    p = np.full(K, 1.0 / K)
    em = ls.em_priors(P, p, tol=1e-12, n_iter=5000)
    assert em.converged

    def negll(q):
        return -np.mean(np.log(P @ (q / p)))

    res = minimize(negll, p, method="SLSQP", bounds=[(1e-9, 1)] * K,
                   constraints=[{"type": "eq", "fun": lambda q: q.sum() - 1}],
                   options={"ftol": 1e-14, "maxiter": 500})
    np.testing.assert_allclose(em.priors, res.x, atol=2e-4)
    assert negll(em.priors) <= res.fun + 1e-9


def test_bbse_matches_linalg_solve_and_lipton_joint_form(world):
    """Independent: build the hard confusion from counts, then numpy.linalg.solve."""
    yv, Pv, Pt = world["yv"], softmax(world["Zv"], axis=1), softmax(world["Zt"], axis=1)
    counts = np.zeros((K, K))
    np.add.at(counts, (Pv.argmax(1), yv), 1.0)
    C = counts / counts.sum(axis=0, keepdims=True)
    mu = np.bincount(Pt.argmax(1), minlength=K) / len(Pt)
    np.testing.assert_allclose(ls.confusion_matrix(Pv, yv, soft=False), C)
    p_val = np.bincount(yv) / len(yv)
    res = ls.bbse(Pt, C, soft=False, p_val=p_val)
    np.testing.assert_allclose(res.raw, np.linalg.solve(C, mu), atol=1e-12)
    # Lipton et al.: joint C_ij = P(pred=i, y=j), w = C_joint^-1 mu, q = w * p_val
    w = np.linalg.solve(C * p_val[None, :], mu)
    np.testing.assert_allclose(res.weights, w, atol=1e-10)
    np.testing.assert_allclose(w * p_val, res.raw, atol=1e-10)
    assert res.condition_number == pytest.approx(np.linalg.cond(C))


def test_soft_mu_needs_soft_confusion(world):
    """Mixing soft p-bar with a hard C (the published tool) is biased; consistent pairs are not."""
    Pv, Pt = softmax(world["Zv"], axis=1), softmax(world["Zt"], axis=1)
    C_hard = ls.confusion_matrix(Pv, world["yv"], soft=False)
    C_soft = ls.confusion_matrix(Pv, world["yv"], soft=True)
    np.testing.assert_allclose(C_soft.sum(axis=0), 1.0)
    mixed = ls.clip_renormalise(np.linalg.solve(C_hard, Pt.mean(axis=0)))
    consistent = ls.bbse(Pt, C_soft, soft=True).priors
    assert _l1(mixed, TRUE_Q) > 2 * _l1(consistent, TRUE_Q)


def test_constrained_ls_matches_slsqp_and_stays_on_simplex():
    """Independent: SLSQP on the same QP. The case is built so the unconstrained solution
    leaves the simplex (so clip + renormalise and the constrained optimum differ)."""
    rng = np.random.default_rng(3)
    C = np.array([[0.5, 0.3, 0.2], [0.3, 0.5, 0.3], [0.2, 0.2, 0.5]])
    # target predictions whose mean lies outside C's image of the simplex
    Pt = rng.dirichlet([8.0, 1.0, 0.3], size=4000)
    mu = Pt.mean(axis=0)
    assert np.linalg.solve(C, mu).min() < 0
    q = ls.constrained_ls(Pt, C, soft=True)
    res = minimize(lambda x: np.sum((C @ x - mu) ** 2), np.full(3, 1 / 3), method="SLSQP",
                   bounds=[(0, 1)] * 3, constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1}],
                   options={"ftol": 1e-15, "maxiter": 1000})
    assert q.min() >= 0 and q.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(q, res.x, atol=1e-5)
    assert np.sum((C @ q - mu) ** 2) <= res.fun + 1e-12


def test_cls_equals_bbse_when_solution_is_inside_simplex(world):
    Pv, Pt = softmax(world["Zv"], axis=1), softmax(world["Zt"], axis=1)
    C = ls.confusion_matrix(Pv, world["yv"], soft=True)
    raw = ls.bbse(Pt, C, soft=True).raw
    assert raw.min() > 0
    np.testing.assert_allclose(ls.constrained_ls(Pt, C, soft=True), raw, atol=1e-7)


def test_overconfident_classifier_needs_calibration(world):
    Zv, Zt, yv = 3 * world["Zv"], 3 * world["Zt"], world["yv"]
    err = {m: _l1(ls.estimate_priors(m, Zv, yv, Zt).priors, TRUE_Q)
           for m in ("em", "em_bcts")}
    assert err["em"] > 0.08 and err["em"] > 2.5 * err["em_bcts"], err
    cal = classifiers.bcts_fit(Zv, yv)
    assert cal.temperature == pytest.approx(3.0, rel=0.1)  # undoes the x3


def test_bcts_recovers_known_temperature_and_bias():
    """Labels drawn from softmax(z / T0 + b0): the NLL fit must find T0, b0 (up to a shift)."""
    rng = np.random.default_rng(1)
    Z = rng.normal(0, 2.0, (40000, 4))
    T0, b0 = 1.7, np.array([0.4, -0.3, 0.1, -0.2])
    P = softmax(Z / T0 + b0, axis=1)
    y = (P.cumsum(axis=1) > rng.random((len(Z), 1))).argmax(axis=1)
    cal = classifiers.bcts_fit(Z, y)
    assert cal.temperature == pytest.approx(T0, rel=0.03)
    np.testing.assert_allclose(cal.bias, b0 - b0.mean(), atol=0.04)
    ts = classifiers.temperature_fit(Z, y)
    np.testing.assert_allclose(ts.bias, 0.0)
    # the analytic gradient agrees with finite differences
    onehot = np.eye(4)[y[:2000]]
    x = np.array([0.2, 0.1, -0.1, 0.3, 0.0])
    for wb in (True, False):
        xx = x if wb else x[:1]
        f = lambda v, wb=wb: classifiers._nll_and_grad(v, Z[:2000], onehot, wb)[0]
        g = lambda v, wb=wb: classifiers._nll_and_grad(v, Z[:2000], onehot, wb)[1]
        assert check_grad(f, g, xx) < 1e-5


def test_bootstrap_ci_covers_truth_and_is_deterministic():
    """Coverage study in miniature: 10 independent validation + target draws (400 per class,
    m = 4000), 90% intervals from 40 rounds each. Pooled over the 50 class intervals the
    coverage must be near nominal: >= 0.75 is about 3.5 binomial sd below 0.90. (Offline, 40
    replicates with 100 rounds gave per-class coverage 0.875-0.925.)"""
    rng = np.random.default_rng(7)
    means = rng.normal(0.0, 1.6, (K, D))
    Xtr, ytr = _draw(means, [1000] * K, rng)
    clf = LogisticRegression(max_iter=2000).fit(Xtr, ytr)
    covered = []
    for r in range(10):
        Xv, yv = _draw(means, [400] * K, rng)
        Xt, _ = _draw(means, rng.multinomial(4000, TRUE_Q), rng)
        Zv, Zt = clf.decision_function(Xv), clf.decision_function(Xt)
        b = ls.bootstrap_priors("em_bcts", Zv, yv, Zt, n_boot=40, seed=r, ci=0.90)
        covered.extend((b.ci_lo <= TRUE_Q) & (b.ci_hi >= TRUE_Q))
        assert np.all(b.ci_hi - b.ci_lo < 0.08)
    assert np.mean(covered) >= 0.75, np.mean(covered)
    # determinism by seed, on the last draw
    np.testing.assert_allclose(b.samples.sum(axis=1), 1.0)
    again = ls.bootstrap_priors("em_bcts", Zv, yv, Zt, n_boot=40, seed=9, ci=0.90)
    np.testing.assert_array_equal(b.samples, again.samples)
    np.testing.assert_array_equal(b.ci_lo, again.ci_lo)
    other = ls.bootstrap_priors("em_bcts", Zv, yv, Zt, n_boot=10, seed=10)
    assert not np.array_equal(other.samples, b.samples[:10])
    d = b.by_category(["a", "b", "c", "d", "e"])
    assert d["a"]["point"] == pytest.approx(b.point[0])
    assert set(d["e"]) == {"point", "mean", "ci_lo", "ci_hi"}


def test_project_simplex_examples():
    np.testing.assert_allclose(ls.project_simplex([0.6, 0.6, -0.2]), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(ls.project_simplex([0.2, 0.3, 0.5]), [0.2, 0.3, 0.5])
    np.testing.assert_allclose(ls.clip_renormalise([0.6, 0.2, -0.2]), [0.75, 0.25, 0.0])


def test_bad_inputs_raise():
    Z = np.zeros((6, 3))
    with pytest.raises(ValueError, match="no validation examples"):
        ls.estimate_priors("em", Z, np.array([0, 0, 1, 1, 0, 1]), Z)
    with pytest.raises(ValueError, match="unknown method"):
        ls.estimate_priors("magic", Z, np.array([0, 1, 2, 0, 1, 2]), Z)
    with pytest.raises(ValueError, match="different numbers of classes"):
        ls.estimate_priors("em", Z, np.array([0, 1, 2, 0, 1, 2]), np.zeros((4, 2)))
