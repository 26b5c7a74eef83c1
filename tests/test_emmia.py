"""anatomy.mia.emmia: the cached ReCaLL matrix against recomputation, and EM-MIA on a
synthetic matrix whose labels are recoverable.

Independent computations: ``recall_matrix_naive`` (prefix + target run from scratch,
batched) and, for a few pairs, an unbatched, unpadded pass of the concatenation with the
mean log-probability of x_1..x_{n-1} taken by hand; prefix scores against
``metrics.auroc`` (itself checked against sklearn).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anatomy import lm, metrics
from anatomy.mia import emmia
from tests.test_lm import random_seqs, tiny_olmo


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return tiny_olmo(seed=3)


def direct_recall(model, prefix, target):
    with torch.no_grad():
        cond = torch.log_softmax(model(torch.tensor([prefix + target])).logits[0].double(), -1)
        plain = torch.log_softmax(model(torch.tensor([target])).logits[0].double(), -1)
    p = len(prefix)
    ll_cond = np.mean([cond[p + t - 1, target[t]].item() for t in range(1, len(target))])
    ll = np.mean([plain[t - 1, target[t]].item() for t in range(1, len(target))])
    return ll_cond / ll


def test_cached_recall_matrix_equals_recomputation(model):
    prefixes = random_seqs([4, 11, 1, 7], seed=11)
    targets = random_seqs([6, 15, 2, 9, 9, 20, 3], seed=12)
    fast = emmia.recall_matrix(model, prefixes, targets, batch_size=3, progress=False)
    naive = emmia.recall_matrix_naive(model, prefixes, targets, batch_size=2, progress=False)
    assert fast.shape == (4, 7)
    np.testing.assert_allclose(fast, naive, atol=1e-4, rtol=0)
    for p_i, t_i in [(0, 0), (1, 5), (2, 3), (3, 6)]:
        assert fast[p_i, t_i] == pytest.approx(direct_recall(model, prefixes[p_i],
                                                             targets[t_i]), abs=1e-4)
    # one target per batch: the prefix cache is reused 7 times and must stay untouched
    one = emmia.recall_matrix(model, prefixes, targets, batch_size=1, progress=False)
    np.testing.assert_allclose(one, fast, atol=1e-5)
    # a given unconditional LL is used as the denominator
    ll = np.array([s.logprob.mean() for s in lm.token_stats(model, targets, progress=False)])
    np.testing.assert_allclose(
        emmia.recall_matrix(model, prefixes, targets, progress=False, target_ll=ll), fast,
        atol=1e-5)
    with pytest.raises(ValueError, match="at least 2 tokens"):
        emmia.recall_matrix(model, prefixes, [[5]], progress=False)


def synthetic(n=200, seed=0):
    """Non-member prefixes' rows rank members high; member prefixes' rows are noise."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) < n // 2
    rng.shuffle(labels)
    signal = labels[None, :] * 1.0 + rng.normal(scale=0.7, size=(n, n))
    noise = rng.normal(size=(n, n))
    recall = np.where(labels[:, None], noise, signal)
    weak = labels + rng.normal(scale=2.5, size=n)  # AUROC ~0.6
    return recall, weak, labels


def test_em_mia_recovers_labels_from_weak_init():
    recall, weak, labels = synthetic()
    start = metrics.auroc(weak, labels)
    assert 0.52 < start < 0.75
    final, history = emmia.em_mia(recall, weak, n_iter=10, return_history=True)
    assert len(history) == 11
    assert metrics.auroc(final, labels) > 0.99
    # the update really is f = -AUROC(row, f > median(f))
    f1 = -np.array([metrics.auroc(row, weak > np.median(weak)) for row in recall])
    np.testing.assert_allclose(history[1], f1, atol=1e-12)


def test_em_mia_input_checks_and_nan_init():
    recall, weak, labels = synthetic(n=40, seed=1)
    weak[:3] = np.nan  # em-mia sets NaN scores to 0
    assert np.isfinite(emmia.em_mia(recall, weak, n_iter=2)).all()
    with pytest.raises(ValueError, match="square"):
        emmia.em_mia(recall[:10], weak)
    with pytest.raises(ValueError, match="initial scores"):
        emmia.em_mia(recall, weak[:5])


def _em_mia_load_scores(v: np.ndarray) -> np.ndarray:
    """em-mia's data_utils.load_scores (lines 74-76), transcribed: one score file's cleaning."""
    v = np.array(v, dtype=np.float64)
    v[np.isposinf(v)] = v[~np.isposinf(v)].max() + 1e-6
    v[np.isneginf(v)] = v[~np.isneginf(v)].min() - 1e-6
    v[np.isnan(v)] = 0
    return v


def test_one_nan_column_no_longer_zeroes_em_mia():
    """One NaN target column used to make every prefix row's AUROC NaN, so every EM-MIA score
    was 0 (AUROC 0.5, chance). Now the matrix is cleaned row by row as em-mia loads each
    prefix's score file (transcribed above), and the result equals EM-MIA on the matrix
    cleaned by the transcription."""
    recall, weak, labels = synthetic(n=40, seed=2)
    clean_final = emmia.em_mia(recall, weak)
    assert metrics.auroc(clean_final, labels) > 0.95
    bad = recall.copy()
    bad[:, 7] = np.nan  # one target's ReCaLL scores all undefined
    bad[3, 5] = np.inf
    bad[4, 6] = -np.inf
    by_hand = np.stack([_em_mia_load_scores(r) for r in bad])
    assert by_hand[3, 5] == 0.0  # the row's NaN makes em-mia's max NaN, then 0
    assert by_hand[4, 6] == 0.0 and by_hand[0, 7] == 0.0
    assert np.isfinite(by_hand).all()
    got = emmia.em_mia(bad, weak)
    np.testing.assert_array_equal(got, emmia.em_mia(by_hand, weak))
    assert metrics.auroc(got, labels) > 0.9  # not chance
    np.testing.assert_array_equal(emmia.clean_scores(bad), by_hand)


def test_clean_scores_infinities_against_em_mia():
    v = np.array([0.5, np.inf, -2.0, -np.inf, 1.5])
    np.testing.assert_array_equal(emmia.clean_scores(v), _em_mia_load_scores(v))
    assert emmia.clean_scores(v)[1] == 1.5 + 1e-6 and emmia.clean_scores(v)[3] == -2.0 - 1e-6
    np.testing.assert_array_equal(emmia.clean_scores(np.array([np.inf, np.inf])), [0.0, 0.0])


def test_trajectory_flags_an_inverted_fixed_point():
    """The published update's mirror image: pseudo-labels swapped turn every prefix score r
    into 1 - r, so the fully inverted labelling is a fixed point whenever the true one is
    (checked: one update from the inverted labels gives the negated scores); a run ending
    there ranks against its start, which the stability line flags."""
    recall, weak, labels = synthetic(n=40, seed=3)
    f_true = labels.astype(float)
    step_true = -emmia.prefix_scores(recall, f_true)
    step_inv = -emmia.prefix_scores(recall, -f_true)
    np.testing.assert_allclose(step_inv, -1 - step_true, atol=1e-12)  # r -> 1 - r
    rep = emmia.trajectory([weak, -weak], labels, "weak")
    assert rep["inverted"] and rep["spearman_final_vs_init"] == pytest.approx(-1.0)
    assert rep["auroc"][1] == pytest.approx(1 - rep["auroc"][0], abs=1e-12)
    assert not emmia.trajectory([weak, 2 * weak], labels, "weak")["inverted"]
