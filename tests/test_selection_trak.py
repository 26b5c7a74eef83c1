"""TRAK (anatomy.selection.trak): the arithmetic against closed forms and against traker 0.3.2.

Independent checks: (1) on a two-parameter linear regression, TRAK's score times 1/(1 - h_ii)
equals the exact leave-one-out change of the target prediction, recomputed here by refitting
without each row (numpy lstsq); (2) our projection equals traker's BasicProjector matrix; (3)
on a tiny causal LM our features, Q and ensemble scores equal traker's TRAKer end to end, with
the model output written a second way here (log p - log(1 - p))."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anatomy.io import InputError
from anatomy.selection.trak import (
    Projection,
    Projector,
    ensemble_reliability,
    lds_chance_band,
    linear_datamodeling_score,
    lm_features,
    per_example_grads,
    trak_scores,
)


def test_linear_regression_leave_one_out():
    rng = np.random.default_rng(0)
    N = 40
    X = rng.normal(size=(N, 2))
    y = X @ np.array([1.5, -0.7]) + rng.normal(scale=0.3, size=N)
    theta, *_ = np.linalg.lstsq(X, y, rcond=None)
    xz = np.array([0.4, 1.1])

    # per-example gradients of f(x) = w . x through the torch.func path: the rows of X
    w = {"w": torch.tensor(theta, dtype=torch.float64)}

    def f(params, buffers, x):
        return (params["w"] * x).sum()

    G = per_example_grads(f, w, {}, torch.tensor(X)).double().numpy()
    np.testing.assert_allclose(G, X, rtol=1e-6)

    r = y - X @ theta  # Q = -dloss/df for the squared loss
    P = Projection(2, 2, seed=3).matrix().double().numpy()  # invertible: scores invariant
    tau = trak_scores([X @ P], [xz @ P], [r], scale_inverse=False)
    # traker's default divides the kernel inverse by its mean |value|: one positive factor
    scale = np.abs(np.linalg.inv((X @ P).T @ (X @ P))).mean()
    np.testing.assert_allclose(trak_scores([X @ P], [xz @ P], [r]), tau / scale, rtol=1e-9)
    h = np.einsum("ij,jk,ik->i", X, np.linalg.inv(X.T @ X), X)
    loo = []
    for i in range(N):
        keep = np.arange(N) != i
        th_i, *_ = np.linalg.lstsq(X[keep], y[keep], rcond=None)
        loo.append(xz @ theta - xz @ th_i)  # what including row i adds to f(z)
    np.testing.assert_allclose(tau / (1 - h), np.array(loo), rtol=1e-8, atol=1e-12)


def test_projection_is_trakers_basic_projector():
    from trak.projectors import BasicProjector, ProjectionType

    ours = Projection(grad_dim=50, proj_dim=230, seed=7, model_id=2)
    theirs = BasicProjector(grad_dim=50, proj_dim=230, seed=7, proj_type=ProjectionType.normal,
                            device="cpu", model_id=2)
    g = torch.randn(4, 50)
    np.testing.assert_array_equal(Projector(ours)(g).numpy(), theirs.project(g, 2).numpy())
    # regenerated block by block (a matrix too big to keep) gives the same bytes
    assert not Projector(ours, max_bytes=0).cached
    np.testing.assert_array_equal(Projector(ours, max_bytes=0)(g).numpy(),
                                  Projector(ours)(g).numpy())


def _tiny_lm(seed: int):
    from anatomy.selection.training import Arch, make_lm

    return make_lm(Arch(d_model=16, n_layers=1, n_heads=2), vocab_size=48, seq_len=12,
                   eos_id=0, pad_id=0, seed=seed).eval()


def test_parity_with_traker(tmp_path):
    from torch.func import functional_call
    from trak import TRAKer
    from trak.modelout_functions import AbstractModelOutput

    class LMOutput(AbstractModelOutput):
        """The log-odds margin written a second way: log p - log(1 - p)."""

        def __init__(self):
            super().__init__()

        def get_output(self, model, weights, buffers, ids, mask):
            logits = functional_call(model, (weights, buffers), (ids.unsqueeze(0),)).logits[0]
            logp = torch.log_softmax(logits[:-1].float(), -1)
            onehot = (torch.arange(logp.shape[-1]) == ids[1:].unsqueeze(-1)).float()
            lp = (logp * onehot).sum(-1)
            return ((lp - torch.log1p(-lp.exp())) * mask).sum()

        def get_out_to_loss_grad(self, model, weights, buffers, batch):
            ids, mask = batch
            logits = functional_call(model, (weights, buffers), (ids,)).logits[:, :-1]
            p = torch.softmax(logits.float(), -1).gather(-1, ids[:, 1:, None])[..., 0]
            return (((1 - p) * mask).sum(1) / mask.sum(1)).unsqueeze(1)

    rng = np.random.default_rng(1)
    N, T, L = 200, 3, 12  # N > proj_dim: an invertible kernel at lambda = 0
    train = torch.as_tensor(rng.integers(1, 48, size=(N, L)))
    tmask = torch.ones(N, L - 1)
    targets = torch.as_tensor(rng.integers(1, 48, size=(T, L)))
    models = [_tiny_lm(s) for s in (0, 1)]
    # traker loads every checkpoint into its own model object: give it a separate one
    tr = TRAKer(model=_tiny_lm(0), task=LMOutput(), train_set_size=N, save_dir=str(tmp_path),
                device="cpu", proj_dim=128, use_half_precision=False, projector_seed=5,
                lambda_reg=0.0)
    for m, model in enumerate(models):
        tr.load_checkpoint(model.state_dict(), model_id=m)
        for a in range(0, N, 40):
            tr.featurize(batch=(train[a:a + 40], tmask[a:a + 40]), num_samples=40)
    tr.finalize_features()
    for m, model in enumerate(models):
        tr.start_scoring_checkpoint(exp_name="t", checkpoint=model.state_dict(), model_id=m,
                                    num_targets=T)
        tr.score(batch=(targets, torch.ones(T, L - 1)), num_samples=T)
    theirs = np.asarray(tr.finalize_scores(exp_name="t"))

    F, Q, G = [], [], []
    for m, model in enumerate(models):
        n_params = sum(p.numel() for p in model.parameters())
        proj = Projector(Projection(n_params, 128, seed=5, model_id=m))
        f, q = lm_features(model, list(train.numpy()), proj)
        g, _ = lm_features(model, list(targets.numpy()), proj)
        F.append(f)
        Q.append(q)
        G.append(g)
    ours = trak_scores(F, G, Q, compat=True)
    assert ours.shape == theirs.shape == (N, T)
    rel = np.abs(ours - theirs).max() / np.abs(theirs).max()
    assert rel < 1e-5, rel
    # the mean over targets first (one query vector) = the mean of the per-target scores
    mean_first = trak_scores(F, [g.mean(0) for g in G], Q, compat=True)
    np.testing.assert_allclose(mean_first, ours.mean(1), rtol=1e-4, atol=1e-7)
    # the float64 default is traker's arithmetic, scaling included, up to float32 rounding
    default = trak_scores(F, [g.mean(0) for g in G], Q)
    rel = np.abs(default - theirs.mean(1)).max() / np.abs(theirs.mean(1)).max()
    assert rel < 1e-5, rel
    # without the per-model scaling the ensemble weighs the two proxies differently: another
    # score vector, not a rescaled one (a per-model positive factor would not matter for one)
    plain = trak_scores(F, [g.mean(0) for g in G], Q, scale_inverse=False)
    scales = [np.abs(np.linalg.inv(f.astype(np.float64).T @ f)).mean() for f in F]
    assert abs(scales[0] / scales[1] - 1) > 1e-3
    assert np.abs(plain / np.linalg.norm(plain) - default / np.linalg.norm(default)).max() > 1e-4


def test_padding_never_changes_features():
    model = _tiny_lm(0)
    n_params = sum(p.numel() for p in model.parameters())
    proj = Projector(Projection(n_params, 32, seed=0))
    short, long_ = np.array([3, 9, 4, 7, 1]), np.arange(1, 12)
    alone, q1 = lm_features(model, [short], proj)
    both, q2 = lm_features(model, [short, long_], proj)
    np.testing.assert_allclose(alone[0], both[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(q1[0], q2[0], rtol=1e-5)


def test_lds_and_errors():
    rng = np.random.default_rng(0)
    masks = rng.random((30, 50)) < 0.5
    scores = rng.normal(size=50)
    lds, rho = linear_datamodeling_score(masks, scores, masks @ scores * 2 + 1)
    assert lds == pytest.approx(1.0) and rho.shape == (1,)
    lds, _ = linear_datamodeling_score(masks, scores, -(masks @ scores))
    assert lds == pytest.approx(-1.0)
    with pytest.raises(InputError):
        trak_scores([], [], [])
    with pytest.raises(InputError):
        trak_scores([np.zeros((5, 3))], [np.ones(3)], [np.ones(5)])  # singular kernel


def test_lds_chance_band_is_the_spearman_null():
    """The band against two independent computations: the exact null of Spearman's rho for 6
    subsets (all 720 permutations enumerated) and, for 40, the normal approximation
    1.96 / sqrt(n - 1) (Kendall & Stuart)."""
    import itertools

    r = np.arange(6.0)
    rc = r - r.mean()
    rho = sorted(abs(float(np.dot(np.array(p) - r.mean(), rc) / np.dot(rc, rc)))
                 for p in itertools.permutations(range(6)))
    exact = np.quantile(rho, 0.95)
    atoms = sorted(set(round(x, 9) for x in rho))
    band = lds_chance_band(6)
    # the simulated quantile lands on the exact one's atom or its neighbour
    assert abs(atoms.index(round(band, 9)) - atoms.index(round(exact, 9))) <= 1
    assert lds_chance_band(40) == pytest.approx(1.96 / np.sqrt(39), abs=0.02)
    assert np.isnan(lds_chance_band(2))


def test_ensemble_reliability_against_scipy():
    """Mean pairwise Spearman against scipy.stats.spearmanr pair by pair; the Spearman-Brown
    prophecy by hand; identical members are perfectly reliable."""
    from scipy.stats import spearmanr

    rng = np.random.default_rng(3)
    signal = rng.normal(size=300)
    members = [signal + rng.normal(scale=1.5, size=300) for _ in range(4)]
    members[2][5] = np.nan  # a row one member cannot score is left out of every pair
    out = ensemble_reliability(members)
    keep = np.ones(300, bool)
    keep[5] = False
    pairs = [spearmanr(members[a][keep], members[b][keep]).statistic
             for a in range(4) for b in range(a + 1, 4)]
    r = np.mean(pairs)
    assert out["mean_pairwise_spearman"] == pytest.approx(r, abs=1e-12)
    assert out["reliability"] == pytest.approx(4 * r / (1 + 3 * r), abs=1e-12)
    assert out["models"] == 4 and 0 < r < out["reliability"] < 1
    same = ensemble_reliability([signal, signal])
    assert same["mean_pairwise_spearman"] == pytest.approx(1) and same["reliability"] == \
        pytest.approx(1)
    assert np.isnan(ensemble_reliability([signal])["reliability"])


def test_datamodel_lds_is_spearman_of_summed_scores():
    """datamodel_lds against scipy.stats.spearmanr on hand-summed scores; the halves are
    seeded draws of half the selectable rows."""
    from scipy.stats import spearmanr

    from anatomy.selection.evaluate import datamodel_lds, lds_halves

    rng = np.random.default_rng(1)
    ok = np.setdiff1d(np.arange(40), [3, 17])  # two empty rows are never in a half
    halves = lds_halves(40, 12, 0, ok)
    assert all(len(h) == 19 and len(np.unique(h)) == 19 and not np.isin([3, 17], h).any()
               for h in halves)
    assert all((a == b).all() for a, b in zip(halves, lds_halves(40, 12, 0, ok), strict=True))
    assert any((a != b).any() for a, b in zip(halves, lds_halves(40, 12, 1, ok), strict=True))
    scores = rng.normal(size=40).astype(np.float32)
    scores[3] = np.nan
    losses = rng.normal(size=12)
    summed = [float(np.nansum(scores[h].astype(np.float64))) for h in halves]
    want = spearmanr(summed, -losses).statistic
    assert datamodel_lds(scores, halves, losses) == pytest.approx(want, abs=1e-12)
    # a perfect datamodel: loss falls exactly as the summed score rises
    assert datamodel_lds(scores, halves, -np.array(summed)) == pytest.approx(1.0)
