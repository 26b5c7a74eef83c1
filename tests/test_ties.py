"""tests/ties.py, the tie-aware comparisons: on synthetic logits whose ties are placed by hand
(a divergence at a large gap fails, at a tiny gap passes, a difference before the tie fails),
and on a tiny random OLMo against a naive greedy loop."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.test_lm import tiny_olmo
from tests.ties import (
    TIE_GAP_REL,
    Divergence,
    NearTieWarning,
    assert_greedy_equal_up_to_a_tie,
    assert_match_fraction_agrees,
    assert_ranking_equal_up_to_ties,
    greedy_reference_logits,
    tie_gap,
)

N, V = 12, 50


def synthetic(seed: int = 0, scale: float = 3.0) -> tuple[np.ndarray, np.ndarray]:
    """Logits [N, V] with every top-two gap > 0.05, and the greedy tokens they give."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=scale, size=(N, V))
    top = logits.argmax(1)
    for t in range(N):  # clear every accidental near-tie
        second = np.sort(logits[t])[-2]
        logits[t, top[t]] = max(logits[t, top[t]], second + 0.05)
    return logits, top


def tie_at(logits: np.ndarray, ref: np.ndarray, p: int, gap: float) -> int:
    """Make the runner-up of position ``p`` trail the reference's token by ``gap``; return it."""
    other = int(np.argsort(logits[p])[-2])
    logits[p, other] = logits[p, ref[p]] - gap
    return other


def test_equal_decodes_pass():
    logits, ref = synthetic()
    assert assert_greedy_equal_up_to_a_tie(ref.copy(), ref, logits) is None


def test_divergence_at_a_tiny_gap_passes_and_the_rest_is_not_compared():
    logits, ref = synthetic(1)
    got = ref.copy()
    got[5] = tie_at(logits, ref, 5, 1e-5)
    got[6:] = (ref[6:] + 7) % V  # the decodes follow different texts after a flip
    with pytest.warns(NearTieWarning, match="position 5 of 12"):
        d = assert_greedy_equal_up_to_a_tie(got, ref, logits, what="row 3: ")
    assert isinstance(d, Divergence) and (d.position, d.length) == (5, N)
    assert d.gap == pytest.approx(1e-5) and d.allowed == tie_gap(logits[5].max())
    # the other side of the tie: the recomputed logits may favour got's token by a hair
    logits[5, got[5]] = logits[5, ref[5]] + 1e-5
    with pytest.warns(NearTieWarning):
        assert assert_greedy_equal_up_to_a_tie(got, ref, logits).position == 5


def test_divergence_at_a_large_gap_fails():
    logits, ref = synthetic(2)
    got = ref.copy()
    got[4] = tie_at(logits, ref, 4, 0.5)  # the runner-up, but half a logit behind
    with pytest.raises(AssertionError, match=r"differ at position 4 of 12 .* no tie"):
        assert_greedy_equal_up_to_a_tie(got, ref, logits)
    # a token far from the top, with a genuine tie between two other tokens there
    logits, ref = synthetic(3)
    tie_at(logits, ref, 4, 1e-6)
    got = ref.copy()
    got[4] = int(np.argmin(logits[4]))
    with pytest.raises(AssertionError, match="no tie"):
        assert_greedy_equal_up_to_a_tie(got, ref, logits)


def test_a_difference_before_the_tie_fails():
    logits, ref = synthetic(4)
    got = ref.copy()
    got[7] = tie_at(logits, ref, 7, 1e-6)  # an acceptable tie later ...
    got[2] = (ref[2] + 1) % V  # ... does not excuse a clear difference before it
    with pytest.raises(AssertionError, match="position 2 of 12"):
        assert_greedy_equal_up_to_a_tie(got, ref, logits)


def test_the_gap_is_relative_to_the_top_logit():
    assert tie_gap(0.3) == TIE_GAP_REL and tie_gap(-50.0) == 50 * TIE_GAP_REL
    for scale, ok in ((100.0, True), (0.5, False)):  # top logits ~250 and ~1.3
        logits, ref = synthetic(5, scale)
        got = ref.copy()
        got[3] = tie_at(logits, ref, 3, 0.01)  # 0.01 < 250 * 2^-10, > 1.3 * 2^-10
        if ok:
            with pytest.warns(NearTieWarning):
                assert assert_greedy_equal_up_to_a_tie(got, ref, logits).position == 3
        else:
            with pytest.raises(AssertionError, match="no tie"):
                assert_greedy_equal_up_to_a_tie(got, ref, logits)


def test_a_reference_that_is_not_greedy_on_its_logits_fails():
    """E.g. ``generate(min_new_tokens=...)``, which forbids the eos token: its token is then
    the runner-up of its own logits, whatever the decode under test did."""
    logits, ref = synthetic(6)
    forbidden = ref.copy()
    forbidden[3] = int(np.argsort(logits[3])[-2])
    with pytest.raises(AssertionError, match="not a plain greedy decode"):
        assert_greedy_equal_up_to_a_tie(ref, forbidden, logits)
    with pytest.raises(AssertionError, match="not a plain greedy decode"):  # shifted rows
        assert_greedy_equal_up_to_a_tie(ref[1:], ref[1:], logits[:-1])
    with pytest.raises(ValueError, match="logits of shape"):
        assert_greedy_equal_up_to_a_tie(ref, ref, logits[:-1])


def test_match_fraction_under_the_tie_rule():
    truth = np.arange(8)
    ref = truth.copy()
    ref[6] = 99  # the reference reproduces 7 of 8
    assert_match_fraction_agrees(7 / 8, ref, truth, None)
    with pytest.raises(AssertionError, match="reference's"):
        assert_match_fraction_agrees(6 / 8, ref, truth, None)
    # a tie at position 2: two known matches before it, 0-6 more after
    d = Divergence(position=2, gap=1e-6, allowed=1e-3, length=8)
    for score in (2 / 8, 5 / 8, 1.0):
        assert_match_fraction_agrees(score, ref, truth, d)
    with pytest.raises(AssertionError, match="outside"):
        assert_match_fraction_agrees(1 / 8, ref, truth, d)


def test_rankings_up_to_near_ties():
    s = np.array([[0.9, 0.5, 0.5 + 4e-6, 0.1, 0.7],
                  [0.2, 0.2, 0.8, 0.3, 0.3]])  # row 1: exact ties (identical rows)
    want = np.array([[0, 4, 2, 1], [2, 3, 4, 0]])
    assert assert_ranking_equal_up_to_ties(want, want, s) == 0
    with pytest.warns(NearTieWarning, match="2 rank"):
        assert assert_ranking_equal_up_to_ties([[0, 4, 1, 2], [2, 3, 4, 0]], want, s) == 2
    with pytest.raises(AssertionError, match="more than"):
        assert_ranking_equal_up_to_ties([[4, 0, 2, 1], [2, 3, 4, 0]], want, s)
    with pytest.raises(AssertionError, match="exact tie not broken by the lower index"):
        assert_ranking_equal_up_to_ties([[0, 4, 2, 1], [2, 4, 3, 0]], want, s)
    with pytest.raises(AssertionError, match="repeats"):
        assert_ranking_equal_up_to_ties([[0, 4, 2, 2], [2, 3, 4, 0]], want, s)
    # argmaxes ([n] ids): 2 for 1 accepted at a near-tie, 0 for 2 not
    a = np.array([[0.1, 0.6, 0.6 - 3e-6], [0.1, 0.2, 0.9]])
    with pytest.warns(NearTieWarning):
        assert assert_ranking_equal_up_to_ties([2, 2], [1, 2], a) == 1
    with pytest.raises(AssertionError, match="row 1, rank 0"):
        assert_ranking_equal_up_to_ties([1, 0], [1, 2], a)


def naive_greedy(model, prompt: list[int], n: int) -> list[int]:
    """A full uncached forward pass per generated token, one row: the plainest decode."""
    seq = list(prompt)
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return seq[len(prompt):]


def test_batched_greedy_equals_a_naive_loop_up_to_a_tie():
    """anatomy.lm.greedy_continuations (batched, KV cache) against a one-row loop without a
    cache, under the rule; the reference logits line up with the loop's choices."""
    from anatomy.lm import greedy_continuations

    torch.set_num_threads(1)
    model = tiny_olmo(seed=4)
    with torch.no_grad():  # logits spread like a trained model's (std ~2, not ~0.1)
        model.lm_head.weight.mul_(20)
    rng = np.random.default_rng(0)
    prompts = [rng.integers(2, 100, size=7).tolist() for _ in range(5)]
    got = greedy_continuations(model, prompts, 10, batch_size=5)
    for i, p in enumerate(prompts):
        ref = naive_greedy(model, p, 10)
        logits = greedy_reference_logits(model, p, ref)
        assert logits.shape == (10, 100) and logits.dtype == np.float32
        # row t predicts ref[t]: the loop is greedy on these logits (up to the gap)
        assert assert_greedy_equal_up_to_a_tie(ref, ref, logits) is None
        assert_greedy_equal_up_to_a_tie(got[i], ref, logits, what=f"prompt {i}: ")
    # a decode shifted by one token is a real mismatch, found
    ref = naive_greedy(model, prompts[0], 11)
    with pytest.raises(AssertionError):
        assert_greedy_equal_up_to_a_tie(ref[1:], ref[:-1],
                                        greedy_reference_logits(model, prompts[0], ref[:-1]))
