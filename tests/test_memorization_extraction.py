"""Perplexity columns (anatomy.memorization.extraction.perplexities), against a transcription
of ``calculate_perplexity`` in EleutherAI/semantic-memorization's inference.py (84ab8c0,
lines 70-126): a per-token float64 softmax loop over logits, written in torch, independent of
the module's vectorised numpy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anatomy.memorization.extraction import perplexities


def _published_perplexity(logits: torch.Tensor, labels: torch.Tensor):
    try:
        token_probs = []
        num_special = len(labels[labels == 0])
        num_normal = len(labels) - num_special
        for t in range(num_normal - 1):
            probs = torch.softmax(logits[t], dim=0, dtype=torch.float64)
            token_probs.append(probs[labels[t + 1]].detach())
        mid = len(token_probs) // 2
        ll = torch.log(torch.stack(token_probs[:mid])).sum()
        prompt = torch.exp(-ll / len(token_probs)).item()
        ll = torch.log(torch.stack(token_probs[mid:])).sum()
        gen = torch.exp(-ll / len(token_probs)).item()
        ll = torch.log(torch.stack(token_probs)).sum()
        seq = torch.exp(-ll / len(token_probs)).item()
        return prompt, gen, seq
    except Exception:  # the published try block: any failure gives -1, -1, -1
        return -1, -1, -1


@pytest.mark.parametrize("n_special", [0, 1, 3, 17, 62, 63])
def test_published_normalisation_matches_inference_py(n_special):
    """Samples of 64 tokens holding ``n_special`` id-0 tokens at random places: the module's
    published columns equal the transcription's, -1 where fewer than 2 predictions remain
    (62 and 63 special tokens)."""
    rng = np.random.default_rng(n_special)
    k, n, vocab = 4, 64, 50
    labels = rng.integers(1, vocab, (k, n))
    for row in labels:
        row[rng.choice(n, n_special, replace=False)] = 0
    logits = torch.as_tensor(rng.normal(0, 2, (k, n, vocab)))
    lp = torch.log_softmax(logits[:, :-1], -1).gather(
        -1, torch.as_tensor(labels[:, 1:, None])).squeeze(-1).numpy()
    got = perplexities(lp, 32, published_normalisation=True,
                       special_counts=(labels == 0).sum(1))
    for i in range(k):
        want = _published_perplexity(logits[i], torch.as_tensor(labels[i]))
        have = (got["prompt_perplexity"][i], got["generation_perplexity"][i],
                got["sequence_perplexity"][i])
        assert have == pytest.approx(want, rel=1e-12), (i, have, want)
    if n_special == 0:  # 63 predictions split 31 / 32 as the prompt's own tokens, all / 63
        own = perplexities(lp, 32)
        assert np.allclose(got["prompt_perplexity"] * got["generation_perplexity"],
                           got["sequence_perplexity"])
        assert np.allclose(got["sequence_perplexity"], own["sequence_perplexity"])
        assert np.allclose(np.log(got["prompt_perplexity"]) * 63 / 31,
                           np.log(own["prompt_perplexity"]))


def test_special_tokens_change_only_the_published_columns():
    """Hand check: without the published switch the special counts are ignored, and the
    published columns move once a sample holds an id-0 token."""
    lp = np.log(np.full((2, 63), 0.5))
    lp[:, -1] = np.log(0.01)  # the last prediction, dropped when a special token is present
    plain = perplexities(lp, 32)
    assert perplexities(lp, 32, special_counts=np.array([0, 1]))["loss"].tolist() == \
        plain["loss"].tolist()
    pub = perplexities(lp, 32, published_normalisation=True, special_counts=np.array([0, 1]))
    assert pub["sequence_perplexity"][1] == pytest.approx(2.0)  # 62 predictions of p = 1/2
    assert pub["sequence_perplexity"][0] > 2.0
