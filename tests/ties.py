"""Comparisons of model outputs that allow for ties (issue 20): the one rule every test uses
when it compares two computations of the same choices.

Two computations of one model that differ in batch shape, thread count or kernel (a batched
KV-cache decode and ``transformers``' one-row ``generate``; one CPU and another) agree only
to rounding. An argmax over their logits is then the same wherever the top two logits are
further apart than that rounding, and may go either way where they are not; a greedy decode
feeds each choice back, so after such a flip the two decodes follow different texts to the
end. Exact equality of greedy decodes, or of argmaxes and rankings of scores, is therefore
asserted only where the reference is clear of a tie:

- greedy decodes (:func:`assert_greedy_equal_up_to_a_tie`): the decodes must be equal up to
  their first differing position, and differ there only if the reference's logits at that
  position put *both* chosen tokens within :data:`TIE_GAP_REL` of their maximum (so its top
  two logits are within the gap); the positions after an accepted tie are not compared, and
  the test is told with a :class:`NearTieWarning`. Scores derived from the decodes (the
  memorization score) are compared under the same rule
  (:func:`assert_match_fraction_agrees`).
- top-k ids and argmaxes of scores (:func:`assert_ranking_equal_up_to_ties`): rank by rank,
  the id found and the reference's id must have reference scores within :data:`SCORE_GAP`
  (exact ties still broken by the lower index, as the library promises).
- float results (losses, log-probs, embeddings) are compared with a stated tolerance.

The reference's logits come from :func:`greedy_reference_logits`: one plain, uncached fp32
forward pass over prompt + reference tokens, so they are the reference's own logits up to the
same rounding.

The gap, ``TIE_GAP_REL * max(1, |top logit|)`` with ``TIE_GAP_REL = 2**-10`` (about 1e-3
relative, 0.007 at the tiny world's typical top logit of 6.6): fp32 computations of one model
that differ in batch shape, threads or kernel differ by about 1e-6 relative (measured on this
project's CPU: bit-identical logits between a batch of 64 and one row and between 1 and 2
threads; up to 2e-6 in log-probs, ``anatomy/execution.py``), so the gap is several hundred
times the largest rounding an fp32 path can show, and a quarter of bf16's resolution (2^-8):
a path with bf16 arithmetic in it is not covered and must pass a wider ``rel_gap`` on
purpose. A real mismatch (a wrong or suppressed token, a misaligned cache) diverges where the
reference's top two logits are far apart: 0.6% of the tiny world's greedy positions have their
top two within the gap (8,192 positions measured; 2.2% would be within 2^-8), so a bug that
picks the runner-up slips through at most that rarely, and one that picks any other token,
never.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

TIE_GAP_REL = 2.0 ** -10
"""A greedy divergence is accepted where both tokens' reference logits are within
``TIE_GAP_REL * max(1, |top logit|)`` of the top one (see the module docstring)."""

SCORE_GAP = 1e-5
"""Top-k ids and argmaxes of cosine / inner-product scores of unit vectors may differ from the
reference where the scores are this close: the float32 rounding bound of a d-term dot product
of unit vectors is d * 2^-24 (1.4e-6 at d = 24), measured differences are ~1e-7."""


class NearTieWarning(UserWarning):
    """A comparison accepted a near-tie and did not compare what followed it."""


@dataclass(frozen=True)
class Divergence:
    """Where two greedy decodes part at an accepted near-tie."""

    position: int  # the first differing position (0-based, in the generated tokens)
    gap: float  # the reference's top-two logit gap there
    allowed: float  # the gap the rule accepts there
    length: int  # tokens per decode; positions position + 1 .. length - 1 are not compared


def tie_gap(top_logit: float, rel_gap: float = TIE_GAP_REL) -> float:
    """The accepted gap below a top logit (relative, never below ``rel_gap`` absolute)."""
    return float(rel_gap * max(1.0, abs(float(top_logit))))


def greedy_reference_logits(model, prompt: Sequence[int], tokens: Sequence[int]) -> np.ndarray:
    """fp32 logits ``[len(tokens), V]``: row ``t`` is what one plain, uncached forward pass of
    the single row ``prompt + tokens`` predicts for ``tokens[t]`` (from ``prompt +
    tokens[:t]``)."""
    import torch

    prompt, tokens = [int(t) for t in prompt], [int(t) for t in tokens]
    if not prompt:
        raise ValueError("a greedy decode starts from a non-empty prompt")
    if not tokens:
        return np.zeros((0, int(model.config.vocab_size)), np.float32)
    dev = next(model.parameters()).device
    ids = torch.tensor([prompt + tokens[:-1]], dtype=torch.long, device=dev)
    with torch.inference_mode():
        logits = model(input_ids=ids, use_cache=False).logits[0, len(prompt) - 1:]
    return logits.float().cpu().numpy()


def assert_greedy_equal_up_to_a_tie(got: Sequence[int], ref: Sequence[int],
                                    ref_logits: np.ndarray, rel_gap: float = TIE_GAP_REL,
                                    what: str = "") -> Divergence | None:
    """Assert that the greedy decode ``got`` equals the reference decode ``ref`` but for a
    near-tie; return None where they are equal, else the accepted :class:`Divergence`.

    ``ref_logits[t]`` are the reference's logits for position ``t``
    (:func:`greedy_reference_logits`). Checked, in order:

    1. the reference is greedy on its own logits: at every position its token is within the
       gap of the top logit (else the logits are not the reference's, or the reference is no
       plain greedy decode: a suppressed token, a logits processor);
    2. the decodes are equal before their first differing position ``p``;
    3. at ``p`` the token ``got`` chose is also within the gap of the reference's top logit,
       so the two tokens are tied to the gap (the reference's top two logits are within it).

    After an accepted tie nothing is compared (the decodes continue from different texts) and
    a :class:`NearTieWarning` says where.
    """
    g, r = np.asarray(got, dtype=np.int64), np.asarray(ref, dtype=np.int64)
    logits = np.asarray(ref_logits, dtype=np.float64)
    if g.ndim != 1 or g.shape != r.shape:
        raise ValueError(f"{what}decodes of shapes {g.shape} and {r.shape}")
    if logits.ndim != 2 or len(logits) != len(r):
        raise ValueError(f"{what}reference logits of shape {logits.shape} for {len(r)} tokens")
    n = len(r)
    top = logits.max(axis=1) if n else np.zeros(0)
    allowed = np.array([tie_gap(t, rel_gap) for t in top])
    rows = np.arange(n)
    short = top - logits[rows, r]
    for t in np.flatnonzero(short > allowed):
        raise AssertionError(
            f"{what}the reference's token {r[t]} at position {t} is {short[t]:.4g} below its "
            f"top logit (allowed {allowed[t]:.3g}): these logits are not the reference's, or "
            "the reference is not a plain greedy decode (a suppressed token? a logits "
            "processor?)")
    diff = np.flatnonzero(g != r)
    if not len(diff):
        return None
    p = int(diff[0])
    assert (g[:p] == r[:p]).all()  # by construction: p is the first difference
    two = np.sort(logits[p])[-2:]
    gap = float(two[1] - two[0])
    short_got = float(top[p] - logits[p, g[p]])
    if short_got > allowed[p]:
        raise AssertionError(
            f"{what}the decodes differ at position {p} of {n} (got {g[p]}, reference {r[p]}) "
            f"where the reference has no tie: got's token is {short_got:.4g} below the "
            f"reference's top logit, more than the allowed {allowed[p]:.3g} (top-two gap "
            f"{gap:.4g}); equal before it: {p} tokens")
    warnings.warn(NearTieWarning(
        f"{what}accepted a near-tie at position {p} of {n} (got {g[p]}, reference {r[p]}, "
        f"top-two logit gap {gap:.3g} <= {allowed[p]:.3g}): positions {p + 1}.. not compared"),
        stacklevel=2)
    return Divergence(p, gap, float(allowed[p]), n)


def assert_match_fraction_agrees(score: float, ref: Sequence[int], truth: Sequence[int],
                                 divergence: Divergence | None, what: str = "") -> None:
    """A score that is the fraction of positions where a greedy decode equals ``truth`` (the
    memorization score), against the reference decode ``ref``'s, under the tie rule of
    :func:`assert_greedy_equal_up_to_a_tie` (``divergence`` is what it returned).

    Without a divergence the two are equal. After an accepted tie at ``p`` only the first ``p``
    positions are known to be the reference's: the score is the reference's matches among
    them plus whatever the uncompared positions ``p..`` add (0 to ``n - p`` of ``n``).
    """
    r, c = np.asarray(ref), np.asarray(truth)
    if r.shape != c.shape or r.ndim != 1:
        raise ValueError(f"{what}decode {r.shape} vs truth {c.shape}")
    n = len(c)
    if divergence is None:
        want = float((r == c).mean())
        assert score == want, f"{what}score {score} != the reference's {want}"
        return
    p = divergence.position
    before = int((r[:p] == c[:p]).sum())
    lo, hi = before / n, (before + n - p) / n
    assert lo <= score <= hi, (
        f"{what}score {score} outside [{lo}, {hi}]: {before} matches in the {p} positions "
        f"before the near-tie, at most {n - p} after it")


def assert_ranking_equal_up_to_ties(got_ids: np.ndarray, want_ids: np.ndarray,
                                    ref_scores: np.ndarray, gap: float = SCORE_GAP,
                                    what: str = "") -> int:
    """Assert top-k ids (rows of ``got_ids`` ``[n, k]``; an argmax is ``k = 1`` and may be
    given as ``[n]``) equal the reference's ``want_ids`` but for near-ties of the reference
    scores ``ref_scores`` ``[n, N]`` (float64, computed independently).

    Rank by rank, a different id is accepted only where its reference score and the reference
    id's are within ``gap`` and not exactly equal (exact ties are broken by the lower index,
    so they must match). Each row's ids must be distinct. Returns the number of accepted
    near-ties.
    """
    g = np.asarray(got_ids, dtype=np.int64)
    w = np.asarray(want_ids, dtype=np.int64)
    s = np.asarray(ref_scores, dtype=np.float64)
    if g.ndim == 1:
        g, w = g[:, None], w.reshape(-1, 1)
    if g.shape != w.shape or s.ndim != 2 or len(s) != len(g):
        raise ValueError(f"{what}ids {g.shape}, reference ids {w.shape}, scores {s.shape}")
    accepted = 0
    for row in range(len(g)):
        if len(set(g[row].tolist())) != g.shape[1]:
            raise AssertionError(f"{what}row {row} repeats an id: {g[row].tolist()}")
        d = np.abs(s[row, g[row]] - s[row, w[row]])
        differ = g[row] != w[row]
        bad = differ & ((d > gap) | (d == 0))
        if bad.any():
            j = int(np.flatnonzero(bad)[0])
            kind = "an exact tie not broken by the lower index" if d[j] == 0 else \
                f"reference scores {d[j]:.3g} apart, more than {gap:g}"
            raise AssertionError(f"{what}row {row}, rank {j}: id {g[row, j]} where the "
                                 f"reference has {w[row, j]} ({kind})")
        accepted += int(differ.sum())
    if accepted:
        warnings.warn(NearTieWarning(f"{what}{accepted} rank(s) differ at near-ties of the "
                                     f"reference scores (within {gap:g})"), stacklevel=2)
    return accepted
