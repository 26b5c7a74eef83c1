"""EM-MIA: ReCaLL scores for every (prefix, target) pair, refined by expectation-maximisation.

Kim et al., "Detecting Training Data of Large Language Models via Expectation
Maximization" (arXiv 2410.07582), as implemented in em-mia's ``run.py`` ("ReCaLL-all") and
``emmia.py`` ("NegPref" update, the default).

ReCaLL (Xie et al. 2024): ReCaLL_p(x) = LL(x | p) / LL(x), with LL the mean token
log-likelihood. Both LLs are negative, so a ratio above 1 means the prefix p made x *less*
likely. ReCaLL's observation: a non-member prefix lowers the likelihood of members more
than that of non-members, so for a non-member prefix the row ReCaLL_p(.) ranks members
high; for a member prefix the row carries little signal.

Scored tokens: LL(x | p) is taken over the same tokens as LL(x), x_1..x_{n-1} (x_0 gets
context from the prefix but is not scored), exactly as em-mia's ``modeling_utils.infer``
(``logits[:, prefix_len:-1]`` against ``target[:, 1:]``), so the ratio compares like with
like. Prefix and target are concatenated as token ids, nothing in between.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from anatomy.lm import _model_device, _padded, _progress, length_batches, resolve_device
from anatomy.metrics import auroc_rows


def _target_lls(model, token_ids, batch_size, dev, progress) -> np.ndarray:
    from anatomy.lm import token_stats

    stats = token_stats(model, token_ids, batch_size=batch_size, device=dev, progress=progress)
    return np.array([s.logprob.astype(np.float64).mean() if len(s) else np.nan for s in stats])


def _mean_target_ll(logits, ids, lengths, offset: int):
    """Mean log p(x_t) over t = 1..n-1 for each row; ``logits[:, offset + t - 1]`` predicts
    x_t (``offset`` = number of positions before x_0 in ``logits``).
    """
    import torch

    out = []
    for r, n in enumerate(lengths):
        z = logits[r, offset:offset + n - 1].float()
        lp = torch.log_softmax(z, dim=-1).gather(-1, ids[r, 1:n, None]).squeeze(-1)
        out.append(lp.double().mean())
    return torch.stack(out).cpu().numpy()


def _check_inputs(prefix_ids, target_ids):
    if any(len(p) == 0 for p in prefix_ids):
        raise ValueError("empty prefix")
    if any(len(t) < 2 for t in target_ids):
        raise ValueError("every target needs at least 2 tokens (the first is never scored)")


def recall_matrix(model, prefix_ids: Sequence[Sequence[int]], target_ids: Sequence[Sequence[int]],
                  batch_size: int = 16, device=None, progress: bool = True,
                  target_ll: np.ndarray | None = None) -> np.ndarray:
    """ReCaLL scores ``[n_prefix, n_target]``: LL(x | p) / LL(x), float64.

    :func:`conditional_lls` divided by ``target_ll`` (the unconditional mean LLs, e.g. from
    ``token_stats``), which is computed when not given.
    """
    _check_inputs(prefix_ids, target_ids)
    dev = _model_device(model) if device is None else resolve_device(str(device))
    if target_ll is None:
        target_ll = _target_lls(model, target_ids, batch_size, dev, progress=False)
    lls = conditional_lls(model, prefix_ids, target_ids, batch_size, dev, progress)
    return lls / np.asarray(target_ll, dtype=np.float64)[None, :]


def conditional_lls(model, prefix_ids: Sequence[Sequence[int]],
                    target_ids: Sequence[Sequence[int]], batch_size: int = 16, device=None,
                    progress: bool = True) -> np.ndarray:
    """Mean LL(x | p) ``[n_prefix, n_target]``, float64: ReCaLL's numerator.

    Each prefix is run once; its KV cache is copied into every target batch (an expanded
    view, copied on the first concatenation, so the cached prefix is never mutated).
    Targets are length-sorted once and right-padded with an attention mask. A row depends
    only on its prefix, so any block of prefixes gives the same rows (the unit of a sharded
    ReCaLL matrix).
    """
    import torch
    from transformers import DynamicCache

    _check_inputs(prefix_ids, target_ids)
    dev = _model_device(model) if device is None else resolve_device(str(device))
    batches = length_batches([len(t) for t in target_ids], batch_size)
    padded = [(_padded([target_ids[i] for i in idx], dev), idx) for idx in batches]
    out = np.zeros((len(prefix_ids), len(target_ids)), dtype=np.float64)
    with torch.inference_mode():
        for p_i in _progress(range(len(prefix_ids)), "recall", "prefix", len(prefix_ids),
                             progress):
            pre = torch.as_tensor(list(prefix_ids[p_i]), dtype=torch.long, device=dev)[None]
            plen = pre.shape[1]
            cache = model(input_ids=pre, use_cache=True).past_key_values
            kv = [(layer.keys, layer.values) for layer in cache.layers]
            for (ids, mask), idx in padded:
                b = ids.shape[0]
                batch_cache = DynamicCache(
                    [(k.expand(b, -1, -1, -1), v.expand(b, -1, -1, -1)) for k, v in kv],
                    config=model.config)
                full_mask = torch.cat([mask.new_ones((b, plen)), mask], dim=1)
                pos = torch.arange(plen, plen + ids.shape[1], device=dev)[None].expand(b, -1)
                logits = model(input_ids=ids, attention_mask=full_mask, position_ids=pos,
                               past_key_values=batch_cache, use_cache=True).logits
                lls = _mean_target_ll(logits, ids, [len(target_ids[i]) for i in idx], 0)
                out[p_i, idx] = lls
    return out


def recall_matrix_naive(model, prefix_ids: Sequence[Sequence[int]],
                        target_ids: Sequence[Sequence[int]], batch_size: int = 16, device=None,
                        progress: bool = True, target_ll: np.ndarray | None = None
                        ) -> np.ndarray:
    """:func:`recall_matrix` recomputing prefix + target from scratch for every pair."""
    import torch

    _check_inputs(prefix_ids, target_ids)
    dev = _model_device(model) if device is None else resolve_device(str(device))
    if target_ll is None:
        target_ll = _target_lls(model, target_ids, batch_size, dev, progress=False)
    out = np.zeros((len(prefix_ids), len(target_ids)), dtype=np.float64)
    with torch.inference_mode():
        for p_i in _progress(range(len(prefix_ids)), "recall", "prefix", len(prefix_ids),
                             progress):
            pre = list(prefix_ids[p_i])
            for a in range(0, len(target_ids), batch_size):
                idx = list(range(a, min(a + batch_size, len(target_ids))))
                ids, mask = _padded([pre + list(target_ids[i]) for i in idx], dev)
                logits = model(input_ids=ids, attention_mask=mask, use_cache=False).logits
                tgt = ids[:, len(pre):]
                lls = _mean_target_ll(logits, tgt, [len(target_ids[i]) for i in idx], len(pre))
                out[p_i, idx] = lls
    return out / np.asarray(target_ll, dtype=np.float64)[None, :]


def clean_scores(scores: np.ndarray) -> np.ndarray:
    """Non-finite scores made comparable as em-mia's ``data_utils.load_scores`` does
    (lines 74-76), for each score vector (each row of a matrix: em-mia loads a ReCaLL row per
    prefix file): +inf -> the vector's largest other value + 1e-6, -inf -> its smallest other
    value - 1e-6, NaN -> 0. A vector with no other value keeps 0 for its infinities (em-mia
    would fail on the empty max). float64 copy."""
    a = np.array(scores, dtype=np.float64, copy=True)
    rows = a.reshape(-1, a.shape[-1]) if a.ndim else a.reshape(1, 1)
    for r in rows:  # views into ``a``
        pos, neg = np.isposinf(r), np.isneginf(r)
        if pos.any():  # (a NaN elsewhere makes the max NaN, so then 0, as in em-mia)
            rest = r[~pos]
            r[pos] = rest.max() + 1e-6 if rest.size else 0.0
        if neg.any():
            rest = r[~neg]
            r[neg] = rest.min() - 1e-6 if rest.size else 0.0
        r[np.isnan(r)] = 0.0
    return a


def prefix_scores(recall: np.ndarray, membership: np.ndarray) -> np.ndarray:
    """r(p): AUROC of each row ReCaLL_p(.) against pseudo-labels ``membership > median``.

    A high r(p) means p, used as a prefix, separates the currently-believed members from
    non-members well: the signature of a non-member prefix (see the module docstring).
    """
    f = np.asarray(membership, dtype=np.float64)
    pseudo = f > np.median(f)
    return auroc_rows(recall, pseudo)


def em_mia(recall: np.ndarray, init_scores: np.ndarray, n_iter: int = 10,
           return_history: bool = False) -> np.ndarray | tuple[np.ndarray, list[np.ndarray]]:
    """EM-MIA membership scores (higher = member) from a ReCaLL matrix and an initial score.

    The prefix set and the target set are the same texts (row i and column i are text i),
    so ``recall`` is square. Starting from f = ``init_scores`` (any baseline oriented
    higher = member, e.g. Min-K%++; both cleaned as em-mia loads them, :func:`clean_scores`),
    repeat ``n_iter`` times:

    1. E-like step: pseudo-labels y = f > median(f) (the current belief about membership);
    2. M-like step: prefix score r(p) = AUROC(ReCaLL_p(.), y), how well p works as a
       ReCaLL prefix under the current labels;
    3. update f(p) = -r(p): a good prefix is a non-member, so membership is the negated
       prefix score (em-mia's "NegPref"); NaN -> 0.

    Returns the final f, and with ``return_history`` also the list of f after each step
    (init first).
    """
    m = np.asarray(recall, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"EM-MIA needs a square ReCaLL matrix (prefixes = targets), got "
                         f"{m.shape}")
    # em-mia cleans every loaded score file: one NaN must not blank a whole prefix row
    m, f = clean_scores(m), clean_scores(np.asarray(init_scores, dtype=np.float64))
    if f.shape != (m.shape[1],):
        raise ValueError(f"{f.size} initial scores for {m.shape[1]} targets")
    history = [f]
    for _ in range(n_iter):
        f = np.nan_to_num(-prefix_scores(m, f), nan=0.0)
        history.append(f)
    return (f, history) if return_history else f


def trajectory(history: Sequence[np.ndarray], labels: np.ndarray | None, init: str
               ) -> dict[str, object]:
    """What an EM-MIA run went through: each iteration's scores (init first), their AUROC
    against ``labels`` (when given) and the stability line — Spearman's rho between the
    final and the initial scores, ``inverted`` when negative. The published update has two
    mirror-image fixed points (swapping the pseudo-labels turns every prefix's AUROC r into
    1 - r), so a run can converge to the labelling opposite to its start; a negative rho is
    its signature."""
    from scipy.stats import spearmanr

    h = [np.asarray(x, dtype=np.float64) for x in history]
    with np.errstate(invalid="ignore"):
        rho = spearmanr(h[0], h[-1]).statistic if np.ptp(h[0]) and np.ptp(h[-1]) else np.nan
    out: dict[str, object] = {"init": init, "iterations": len(h) - 1,
                              "spearman_final_vs_init": float(rho),
                              "inverted": bool(rho < 0),
                              "scores": [[float(v) for v in x] for x in h]}
    if labels is not None:
        out["auroc"] = [float(auroc_rows(x[None, :], np.asarray(labels).astype(bool))[0])
                        for x in h]
    return out
