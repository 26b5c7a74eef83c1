"""anatomy.scores against pure-Python re-computations and em-mia's torch formulas.

Independent computations: plain-Python loops over sorted lists (Min-K%, Min-K%++, loss,
zlib), and em-mia's ``run.py`` recipe re-typed in torch (full-vocabulary softmax in float64,
``topk(int(len * k / 100), largest=False).mean()``) on a tiny OLMo model.
"""

from __future__ import annotations

import math
import zlib

import numpy as np
import pytest
import torch

from anatomy import lm, scores
from tests.test_lm import random_seqs, tiny_olmo


def py_min_k(values, k):
    c = max(1, int(len(values) * k / 100))
    return sum(sorted(values)[:c]) / c


def py_scores(lp, mu, var, text, ks):
    ll = sum(lp) / len(lp)
    z = [(a - m) / math.sqrt(max(v, scores._MIN_VAR)) for a, m, v in zip(lp, mu, var, strict=True)]
    out = {"loss": ll, "zlib": ll / len(zlib.compress(text.encode("utf-8")))}
    out |= {f"mink_{k}": py_min_k(list(lp), k) for k in ks}
    out |= {f"minkpp_{k}": py_min_k(z, k) for k in ks}
    return out


@pytest.mark.parametrize("n", [1, 2, 7, 10, 33, 128])
def test_all_scores_match_pure_python(n):
    rng = np.random.default_rng(n)
    # rounded values: ties among the lowest tokens must not matter
    lp = np.round(-rng.gamma(2.0, 1.5, n), 1).astype(np.float32)
    mu = (-rng.gamma(2.0, 1.0, n)).astype(np.float32)
    var = rng.gamma(2.0, 1.0, n).astype(np.float32)
    var[0] = 0.0  # a one-hot distribution: the sigma floor applies
    text = "Pürée, naïve café " * n
    got = scores.all_scores(lm.TokenStats(lp, mu, var), text)
    want = py_scores(lp.tolist(), mu.tolist(), var.tolist(), text, scores.DEFAULT_KS)
    assert list(got) == ["loss", "zlib"] + [f"mink_{k}" for k in (10, 20, 30, 40, 50)] + \
        [f"minkpp_{k}" for k in (10, 20, 30, 40, 50)]
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
    assert scores.min_k(lp, 20) == pytest.approx(want["mink_20"])
    assert scores.min_k_plus_plus(lp, mu, var, 30) == pytest.approx(want["minkpp_30"])
    assert scores.loss(lp) == pytest.approx(want["loss"])


def test_empty_text_scores_are_nan():
    e = np.zeros(0, dtype=np.float32)
    got = scores.all_scores(lm.TokenStats(e, e, e), "a")
    assert all(math.isnan(v) for v in got.values())


def test_fractional_k_names_and_reference():
    lp = np.array([-1.0, -2.0, -3.0, -4.0], dtype=np.float32)
    got = scores.all_scores(lm.TokenStats(lp, lp, lp + 5), "t", ks=(2.5, 50))
    assert "mink_2.5" in got and got["mink_50"] == pytest.approx(-3.5)
    assert got["mink_2.5"] == pytest.approx(-4.0)  # int(4 * 2.5 / 100) = 0 -> at least 1
    np.testing.assert_allclose(scores.reference(np.array([-2.0, -3.0]), np.array([-2.5, -2.0])),
                               [0.5, -1.0])


def test_pipeline_matches_em_mia_recipe():
    torch.set_num_threads(1)
    model = tiny_olmo(seed=2)
    # ids >= 2: the pad id 1 has a zero embedding in a fresh model -> an exactly uniform
    # next-token distribution (sigma = 0) whose z-score is fp32 noise (see scores._MIN_VAR)
    seqs = [[t for t in s if t > 1] for s in random_seqs([40, 25, 60], seed=7)]
    stats = lm.token_stats(model, seqs, batch_size=2, progress=False)
    for seq, st in zip(seqs, stats, strict=True):
        with torch.no_grad():
            logits = model(torch.tensor([seq])).logits[0, :-1].double()
        labels = torch.tensor(seq[1:])
        probs, logprobs = torch.softmax(logits, -1), torch.log_softmax(logits, -1)
        tok = logprobs.gather(-1, labels[:, None]).squeeze(-1)
        mu = (probs * logprobs).sum(-1)
        sigma2 = (probs * logprobs ** 2).sum(-1) - mu ** 2
        norm = (tok - mu) / sigma2.sqrt()
        got = scores.all_scores(st, "text")
        assert got["loss"] == pytest.approx(tok.mean().item(), abs=1e-5)
        for k in scores.DEFAULT_KS:
            c = int(len(logits) * k / 100)
            assert got[f"mink_{k}"] == pytest.approx(
                tok.topk(c, largest=False)[0].mean().item(), abs=1e-5)
            # sigma ~ 0.1 on this near-uniform random model: a 1e-6 error in mu becomes 1e-5
            assert got[f"minkpp_{k}"] == pytest.approx(
                norm.topk(c, largest=False)[0].mean().item(), abs=1e-4)
