"""Membership scores from one forward pass (:class:`anatomy.lm.TokenStats`).

Every score is oriented so that HIGHER = MORE LIKELY A MEMBER. Definitions follow em-mia's
``run.py`` (Kim et al. 2024), which OLMoMIA reports:

- ``loss``: mean token log-likelihood LL (Yeom et al. 2018), i.e. minus the usual loss;
- ``zlib``: LL / zlib-compressed UTF-8 byte length (Carlini et al. 2021, as em-mia);
- ``mink_k``: mean of the k% lowest token log-probs, count int(n*k/100) (Shi et al. 2024);
- ``minkpp_k``: the same on (log p - mu) / sigma (Min-K%++, Zhang et al. 2024, sec. 3);
- ``reference``: LL(target) - LL(reference model) (Carlini et al. 2021).

The scored tokens are tokens 1..n-1 (no BOS is added, so the first token is never scored).
A text with no scored token gets NaN for every score.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from anatomy.lm import TokenStats

DEFAULT_KS = (10, 20, 30, 40, 50)
# sigma^2 floor. sigma -> 0 for one-hot and for uniform distributions, where log p - mu is
# 0 up to fp32 rounding (~1e-7 |mu|, so ~1e-6 at OLMo's vocabulary): below sigma = 1e-4 the
# z-score is rounding noise. No fp32 softmax is confident enough to have a real sigma that
# small (it would need 1 - p(top) < ~1e-10, which rounds to p = 1).
_MIN_VAR = 1e-8


def loss(logprob: np.ndarray) -> float:
    """Mean token log-likelihood LL (higher = member); NaN without scored tokens."""
    lp = np.asarray(logprob, dtype=np.float64)
    return float(lp.mean()) if lp.size else float("nan")


def zlib_ratio(ll: float, text: str) -> float:
    """LL / len(zlib.compress(text as UTF-8)), as em-mia's ``Zlib`` (higher = member)."""
    return float(ll) / max(1, len(zlib.compress(text.encode("utf-8"))))


def _k_count(n: int, k: float) -> int:
    """int(n * k / 100) lowest tokens, at least one: 127 scored tokens at k=20 -> 25."""
    return max(1, int(n * k / 100))


def min_k(logprob: np.ndarray, k: float) -> float:
    """Min-K%: mean of the int(n*k/100) (at least 1) lowest token log-probs."""
    lp = np.asarray(logprob, dtype=np.float64)
    if lp.size == 0:
        return float("nan")
    c = _k_count(lp.size, k)
    return float(np.partition(lp, c - 1)[:c].mean())


def normalized_logprob(logprob: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
    """(log p - mu) / sigma per token (Min-K%++ eq. in sec. 3), float64."""
    lp = np.asarray(logprob, dtype=np.float64)
    mu = np.asarray(mean, dtype=np.float64)
    sigma = np.sqrt(np.maximum(np.asarray(var, dtype=np.float64), _MIN_VAR))
    return (lp - mu) / sigma


def min_k_plus_plus(logprob: np.ndarray, mean: np.ndarray, var: np.ndarray, k: float) -> float:
    """Min-K%++: Min-K% applied to (log p - mu) / sigma."""
    return min_k(normalized_logprob(logprob, mean, var), k)


def reference(target_ll: float | np.ndarray, ref_ll: float | np.ndarray) -> float | np.ndarray:
    """Ref: LL(target) - LL(reference model) (higher = member)."""
    return np.subtract(target_ll, ref_ll)


def _min_k_many(values: np.ndarray, ks: Sequence[float]) -> list[float]:
    """Min-K% for several k with one sort."""
    if values.size == 0:
        return [float("nan")] * len(ks)
    csum = np.cumsum(np.sort(values))
    out = []
    for k in ks:
        c = _k_count(values.size, k)
        out.append(float(csum[c - 1] / c))
    return out


def all_scores(stats: TokenStats, text: str, ks: Sequence[float] = DEFAULT_KS
               ) -> dict[str, float]:
    """Every one-pass score for one text, with stable names.

    ``loss``, ``zlib``, ``mink_{k}`` and ``minkpp_{k}`` for each k (``mink_10`` ...
    ``minkpp_50`` by default); k is written with ``%g`` (20 -> "20", 2.5 -> "2.5").
    """
    ll = loss(stats.logprob)
    out = {"loss": ll, "zlib": zlib_ratio(ll, text)}
    lp = np.asarray(stats.logprob, dtype=np.float64)
    z = normalized_logprob(stats.logprob, stats.mean, stats.var)
    for k, v in zip(ks, _min_k_many(lp, ks), strict=True):
        out[f"mink_{k:g}"] = v
    for k, v in zip(ks, _min_k_many(z, ks), strict=True):
        out[f"minkpp_{k:g}"] = v
    return out
