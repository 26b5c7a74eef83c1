"""TRAK (Park et al. 2023, "TRAK: Attributing Model Behavior at Scale", ICML), in our own torch.

For each model m (a proxy or a checkpoint): per-example gradients of a model output f,
projected by a seeded Gaussian matrix P_m and divided by sqrt(#params) (traker's
``normalize_factor``), give the features Φ_m (train rows) and φ_m(z) (targets); with
Q_m = diag(∂ℓ/∂f) over the train rows (TRAK Sec. 3, Eq. (14)-(16)),

    τ(z) = [ (1/M) Σ_m Φ_m (Φ_mᵀ Φ_m + λ I)⁻¹ φ_m(z) ] ⊙ [ (1/M) Σ_m Q_m ]

— a product of averages, as ``traker`` 0.3.2 computes it (``TRAKer.finalize_scores``); the
paper's soft-thresholding is not applied, as in the library. Scores are linear in φ(z), so the
mean over targets is taken before the product (:func:`trak_scores` takes one query vector per
model): the cost does not grow with the number of targets.

``compat=True`` reproduces traker's arithmetic exactly: the kernel inverse in float32,
rescaled by its mean absolute value (``inv /= inv.abs().mean()``, a per-model reweighting of
the ensemble), Φ·inv then · φ. The default solves in float64 without the rescale (the same
scores up to one positive factor per model when M = 1).

The projection is traker's ``BasicProjector`` scheme (``trak/projectors.py``): column blocks of
100, block i drawn with ``torch.Generator().manual_seed(seed + 1000 i + 100000 model_id)``,
``normal_`` (or Rademacher), so our features equal traker's given the same gradients. Unlike
``BasicProjector``, which regenerates every block for every batch (5.7 examples/s at 1M
parameters and k = 1024 on 2 cores, shared/reference/selection.md Sec. 4.4), the matrix is
generated once per model and kept when it fits ``max_bytes``.

Causal-LM output (the reference's Sec. 4.3): the summed log-odds margin over the scored
tokens, f = Σ_t [z_t(y_t) − logsumexp_{v≠y_t} z_t(v)], and Q = mean_t (1 − p_t(y_t)).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from anatomy.io import InputError

BLOCK = 100  # traker's BasicProjector block_size


@dataclass(frozen=True)
class Projection:
    """A seeded ``(grad_dim, proj_dim)`` JL matrix, traker's ``BasicProjector`` layout."""

    grad_dim: int
    proj_dim: int
    seed: int = 0
    model_id: int = 0
    kind: str = "normal"
    block: int = BLOCK

    def __post_init__(self) -> None:
        if self.proj_dim < 1 or self.grad_dim < 1:
            raise InputError(None, f"projection dimensions must be positive ({self.grad_dim} "
                                   f"x {self.proj_dim})")
        if self.kind not in ("normal", "rademacher"):
            raise InputError(None, f"unknown projection {self.kind!r} (normal, rademacher)")

    @property
    def n_blocks(self) -> int:
        return math.ceil(self.proj_dim / min(self.block, self.proj_dim))

    def block_matrix(self, i: int):
        """Columns ``[i*b, (i+1)*b)`` (the last block cut to ``proj_dim``)."""
        import torch

        b = min(self.block, self.proj_dim)
        g = torch.Generator(device="cpu")
        g.manual_seed(self.seed + 1000 * i + 100000 * self.model_id)
        m = torch.empty(self.grad_dim, b, dtype=torch.float32)
        if self.kind == "normal":
            m.normal_(generator=g)
        else:
            m.bernoulli_(p=0.5, generator=g)
            m.mul_(2.0).sub_(1.0)
        return m[:, : min(b, self.proj_dim - i * b)]

    def matrix(self):
        """The whole matrix, filled block by block (one block's memory on top of it, not a
        second copy as concatenating the blocks would)."""
        import torch

        out = torch.empty(self.grad_dim, self.proj_dim, dtype=torch.float32)
        b = min(self.block, self.proj_dim)
        for i in range(self.n_blocks):
            m = self.block_matrix(i)
            out[:, i * b: i * b + m.shape[1]] = m
            del m
        return out


class Projector:
    """Applies a :class:`Projection`; the matrix is built once and kept when it fits
    ``max_bytes``, else regenerated block by block for every batch (traker's way)."""

    def __init__(self, projection: Projection, max_bytes: int = 4 << 30):
        self.p = projection
        self.cached = projection.grad_dim * projection.proj_dim * 4 <= max_bytes
        self._m = None
        self._lock = threading.Lock()

    def __call__(self, grads):
        import torch

        # generated on the CPU (the same matrix on every device), used where the grads are
        if self.cached:
            with self._lock:
                if self._m is None or self._m.device != grads.device:
                    self._m = self.p.matrix().to(grads.device)
            return grads.float() @ self._m
        out = torch.empty(grads.shape[0], self.p.proj_dim, dtype=torch.float32,
                          device=grads.device)
        b = min(self.p.block, self.p.proj_dim)
        for i in range(self.p.n_blocks):
            m = self.p.block_matrix(i).to(grads.device)
            out[:, i * b: i * b + m.shape[1]] = grads.float() @ m
        return out


# ---------------------------------------------------------------------------------------
# model outputs and per-example gradients


def lm_margin_output(model) -> Callable:
    """``f(params, buffers, ids, mask)`` for one example: the summed log-odds of the next
    tokens where ``mask`` (length L-1) is 1. Right padding needs no attention mask: a causal
    model's real positions never see the padding after them. vmap-safe (no one_hot, no
    0-d indexing; the label mask is ``arange(V) == y``)."""
    import torch
    from torch.func import functional_call

    def f(params, buffers, ids, mask):
        logits = functional_call(model, (params, buffers), (ids.unsqueeze(0),)).logits[0, :-1]
        logits = logits.float()
        y = ids[1:]
        is_y = torch.arange(logits.shape[-1], device=logits.device) == y.unsqueeze(-1)
        z_y = (logits * is_y).sum(-1)
        others = torch.logsumexp(logits.masked_fill(is_y, float("-inf")), dim=-1)
        return ((z_y - others) * mask).sum()

    return f


def lm_out_to_loss(model, ids, mask) -> np.ndarray:
    """Q per example: mean over the scored tokens of 1 − p(y_t) (TRAK's LM choice)."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=ids).logits[:, :-1].float()
        p = torch.softmax(logits, -1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
        q = ((1 - p) * mask).sum(1) / mask.sum(1).clamp_min(1)
    return q.cpu().numpy().astype(np.float32)


def named_params(model, grad_wrt: Sequence[str] | None = None) -> dict:
    """The parameters gradients are taken for, in ``named_parameters`` order (traker's
    vectorisation order); tied weights appear once."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    if grad_wrt is not None:
        missing = [k for k in grad_wrt if k not in params]
        if missing:
            raise InputError(None, f"no parameters named {', '.join(missing)}")
        params = {k: v for k, v in params.items() if k in set(grad_wrt)}
    return params


def per_example_grads(output: Callable, params: Mapping, buffers: Mapping, *batch):
    """``(B, grad_dim)`` float32: ``vmap(grad(output))`` over the batch's first dimension,
    flattened in ``params`` order (``torch.func``; TRAK's FunctionalGradientComputer)."""
    import torch
    from torch.func import grad, vmap

    g = vmap(grad(output), in_dims=(None, None, *([0] * len(batch))),
             randomness="different")(dict(params), dict(buffers), *batch)
    return torch.cat([g[k].reshape(g[k].shape[0], -1).float() for k in params], dim=1)


def lm_features(model, rows: Sequence[np.ndarray], projector: Projector,
                grad_wrt: Sequence[str] | None = None, normalize: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
    """Projected margin gradients and Q of token sequences (one batch; padded right).

    Returns ``(features (B, k) float32, q (B,) float32)``; features divided by
    sqrt(grad_dim) as traker does (``normalize``)."""
    import torch

    L = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), L, dtype=torch.long)
    mask = torch.zeros(len(rows), L - 1, dtype=torch.float32)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.as_tensor(np.asarray(r, dtype=np.int64))
        mask[i, : len(r) - 1] = 1
    dev = next(model.parameters()).device
    ids, mask = ids.to(dev), mask.to(dev)
    params = named_params(model, grad_wrt)
    frozen = {k: v.detach() for k, v in model.named_parameters() if k not in params}
    buffers = {**{k: v for k, v in model.named_buffers()}, **frozen}
    g = per_example_grads(lm_margin_output(model), params, buffers, ids, mask)
    feats = projector(g)
    if normalize:
        feats = feats / math.sqrt(g.shape[1])
    return feats.cpu().numpy().astype(np.float32), lm_out_to_loss(model, ids, mask)


def grad_dim(model, grad_wrt: Sequence[str] | None = None) -> int:
    return sum(v.numel() for v in named_params(model, grad_wrt).values())


# ---------------------------------------------------------------------------------------
# scores


def model_scores(features: np.ndarray, query: np.ndarray, lambda_reg: float = 0.0,
                 compat: bool = False, scale_inverse: bool = True) -> np.ndarray:
    """One model's ``Φ (ΦᵀΦ + λI)⁻¹ qᵀ / mean|(ΦᵀΦ + λI)⁻¹|``: ``(N,)`` for a query vector
    ``(k,)``, ``(N, T)`` for ``(T, k)``.

    The division by the inverse's mean absolute value is traker's (``BasicScoreComputer.
    get_x_xtx_inv``, ``trak/score_computers.py``, "to avoid numerical issues when going to
    float16"): it rescales each model's scores by its own factor, so it reweights the models
    of an ensemble, and traker applies it always. ``scale_inverse=False`` leaves it out (each
    model's plain ridge solution). ``compat``: traker's float32 arithmetic as well (an
    explicit float32 inverse); the default solves in float64."""
    X = np.asarray(features)
    if X.ndim != 2 or not len(X):
        raise InputError(None, f"features must be a non-empty (N, k) array, got {X.shape}")
    q = np.asarray(query)
    if compat:
        import torch

        Xt = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        xtx = Xt.T @ Xt
        inv = torch.linalg.inv(xtx + lambda_reg * torch.eye(xtx.shape[0]))
        if scale_inverse:
            inv /= inv.abs().mean()
        qt = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))
        out = (Xt @ inv) @ (qt.T if qt.ndim == 2 else qt)
        return out.numpy()
    X64 = X.astype(np.float64)
    K = X64.T @ X64 + lambda_reg * np.eye(X.shape[1])
    try:
        inv = np.linalg.inv(K)
    except np.linalg.LinAlgError:
        raise InputError(None, "the TRAK kernel ΦᵀΦ is singular: give --lambda_reg > 0 or "
                               "a smaller --proj_dim") from None
    if scale_inverse:
        inv /= np.abs(inv).mean()
    return X64 @ (inv @ q.astype(np.float64).T)


def trak_scores(features: Sequence[np.ndarray], queries: Sequence[np.ndarray],
                out_to_loss: Sequence[np.ndarray], lambda_reg: float = 0.0,
                compat: bool = False, scale_inverse: bool = True,
                per_model: list | None = None) -> np.ndarray:
    """The ensemble: ``mean_m(model_scores_m) ⊙ mean_m(Q_m)`` (traker's product of averages).

    ``features[m]``: ``(N, k)`` train features of model m; ``queries[m]``: its target query
    (the mean target feature, ``(k,)``, or ``(T, k)``); ``out_to_loss[m]``: ``(N,)``.
    ``per_model``: a list that receives each model's own ``model_scores``."""
    if not (len(features) == len(queries) == len(out_to_loss)) or not features:
        raise InputError(None, "TRAK needs features, queries and Q for each of >= 1 models")
    acc = None
    for X, q in zip(features, queries, strict=True):
        s = model_scores(X, q, lambda_reg, compat, scale_inverse)
        if per_model is not None:
            per_model.append(s)
        acc = s if acc is None else acc + s
    M = len(features)
    Q = np.mean(np.stack([np.asarray(x, dtype=np.float64) for x in out_to_loss]), axis=0)
    s = acc / M
    return s * (Q[:, None] if s.ndim == 2 else Q)


def linear_datamodeling_score(masks: np.ndarray, scores: np.ndarray, actual: np.ndarray
                              ) -> tuple[float, np.ndarray]:
    """TRAK's LDS (Park et al. 2023, Def. 2.1; traker ``tests/utils.py:eval_correlations``):
    per target, the Spearman correlation over subsets j between the predicted
    ``Σ_{i ∈ S_j} τ_i`` (``masks @ scores``) and the actual output of a model trained on S_j;
    the mean over targets. ``masks (J, N)`` bool, ``scores (N,)`` or ``(N, T)``, ``actual (J,)``
    or ``(J, T)``. Here the output is the target's mean log-probability (minus its loss), so
    a higher predicted score should mean a lower loss."""
    from scipy.stats import spearmanr

    m = np.asarray(masks, dtype=np.float64)
    s = np.asarray(scores, dtype=np.float64)
    a = np.asarray(actual, dtype=np.float64)
    pred = m @ s
    if pred.ndim == 1:
        pred, a = pred[:, None], a.reshape(-1, 1)
    rho = np.array([spearmanr(pred[:, t], a[:, t]).statistic for t in range(pred.shape[1])])
    return float(np.nanmean(rho)), rho


def lds_chance_band(n_subsets: int, ci: float = 0.95, n_perm: int = 20_000, seed: int = 0
                    ) -> float:
    """Half-width of the central ``ci`` interval of the LDS of an uninformative datamodel on
    ``n_subsets`` subsets: Spearman's rho between a fixed ranking and uniformly random
    permutations of it (the null of no relation; without ties it depends on ``n_subsets``
    alone), by seeded simulation. An LDS inside ``±band`` is indistinguishable from chance."""
    if n_subsets < 3:
        return float("nan")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x1D5]))
    r = np.arange(n_subsets, dtype=np.float64)
    perms = np.argsort(rng.random((n_perm, n_subsets)), axis=1).astype(np.float64)
    rc = r - r.mean()
    rho = ((perms - perms.mean(1, keepdims=True)) @ rc) / (rc @ rc)  # ranks: equal variances
    return float(np.quantile(np.abs(rho), ci))


def ensemble_reliability(per_model: Sequence[np.ndarray]) -> dict[str, float]:
    """How much of an ensemble's ranking is signal, from its members' agreement: the mean
    pairwise Spearman rho of the M single-model scores, and the Spearman-Brown prophecy of the
    M-model mean's reliability, M·rho / (1 + (M-1)·rho) (Brown 1910; Spearman 1910) — the
    correlation expected between this ensemble's ranking and another of M fresh proxies.
    Rows where any member is NaN are left out."""
    from scipy.stats import rankdata

    M = len(per_model)
    out = {"models": M, "mean_pairwise_spearman": float("nan"), "reliability": float("nan")}
    if M < 2:
        return out
    X = np.stack([np.asarray(s, dtype=np.float64).reshape(len(s), -1).mean(1)
                  for s in per_model], axis=1)
    X = X[~np.isnan(X).any(1)]
    rho = np.corrcoef(rankdata(X, axis=0), rowvar=False)  # Spearman: Pearson of the ranks
    r = float(np.mean(rho[np.triu_indices(M, 1)]))
    out["mean_pairwise_spearman"] = r
    out["reliability"] = float(M * r / (1 + (M - 1) * r)) if r > -1 / (M - 1) else float("nan")
    return out
