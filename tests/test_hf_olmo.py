"""OLMo-7B's checkpoint path: ai2-olmo's hf_olmo format loaded as transformers' Olmo, and
its revisions named offline from the training config.

Independent computation: a tiny randomly initialised checkpoint written in hf_olmo's layout
(fused ``att_proj``, fused SwiGLU ``ff_proj``, OLMo's module names) is scored by our loader
and by a numpy forward pass written from OLMo's own block (``olmo/model.py``:
``OLMoSequentialBlock``: non-parametric LayerNorm, rotary q/k, causal attention,
``x, gate = ff_proj(x).chunk(2); silu(gate) * x``); the per-token log-probs agree.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from anatomy import lm
from anatomy.io import InputError

D, HEADS, LAYERS, HIDDEN, VOCAB, EMB, CTX = 32, 4, 2, 128, 90, 96, 64


def _hf_olmo_checkpoint(folder, seed=0, **extra):
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(seed)
    w = lambda *shape: (torch.randn(*shape, generator=g) * 0.2)  # noqa: E731
    weights = {"model.transformer.wte.weight": w(EMB, D),
               "model.transformer.ff_out.weight": w(EMB, D)}
    for i in range(LAYERS):
        b = f"model.transformer.blocks.{i}."
        weights[b + "att_proj.weight"] = w(3 * D, D)
        weights[b + "attn_out.weight"] = w(D, D)
        weights[b + "ff_proj.weight"] = w(HIDDEN, D)
        weights[b + "ff_out.weight"] = w(D, HIDDEN // 2)
    folder.mkdir(parents=True)
    save_file(weights, str(folder / "model.safetensors"))
    config = {"model_type": "hf_olmo", "architectures": ["OLMoForCausalLM"], "d_model": D,
              "n_heads": HEADS, "n_layers": LAYERS, "mlp_hidden_size": HIDDEN,
              "mlp_ratio": 4, "max_sequence_length": CTX, "vocab_size": VOCAB,
              "embedding_size": EMB, "weight_tying": False, "rope": True,
              "rope_theta": 10000, "activation_type": "swiglu", "block_type": "sequential",
              "layer_norm_type": "default", "layer_norm_with_affine": False,
              "include_bias": False, "alibi": False, "attention_layer_norm": False,
              "eos_token_id": 0, "pad_token_id": 1, **extra}
    (folder / "config.json").write_text(json.dumps(config))
    return {k: v.numpy().astype(np.float64) for k, v in weights.items()}


def _olmo_logprobs(W, ids):
    """OLMo's forward pass in numpy, straight from the fused hf_olmo weights."""
    def norm(x):
        mu = x.mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + 1e-5)

    def rope(x):  # [heads, T, hd]; OLMo's RotaryEmbedding, rotate_half convention
        hd = x.shape[-1]
        inv = 1.0 / (10000 ** (np.arange(0, hd, 2) / hd))
        f = np.outer(np.arange(x.shape[1]), inv)
        pos = np.concatenate([f, f], -1)
        half = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], -1)
        return x * np.cos(pos) + half * np.sin(pos)

    T, hd = len(ids), D // HEADS
    x = W["model.transformer.wte.weight"][ids]
    for i in range(LAYERS):
        b = f"model.transformer.blocks.{i}."
        q, k, v = np.split(norm(x) @ W[b + "att_proj.weight"].T, 3, axis=-1)
        q, k, v = (a.reshape(T, HEADS, hd).transpose(1, 0, 2) for a in (q, k, v))
        q, k = rope(q), rope(k)
        s = q @ k.transpose(0, 2, 1) / np.sqrt(hd) + np.triu(np.full((T, T), -1e30), 1)
        p = np.exp(s - s.max(-1, keepdims=True))
        att = (p / p.sum(-1, keepdims=True)) @ v
        x = x + att.transpose(1, 0, 2).reshape(T, D) @ W[b + "attn_out.weight"].T
        h, gate = np.split(norm(x) @ W[b + "ff_proj.weight"].T, 2, axis=-1)
        x = x + (gate / (1 + np.exp(-gate)) * h) @ W[b + "ff_out.weight"].T
    logits = norm(x) @ W["model.transformer.ff_out.weight"].T
    logp = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1,
                                                                            keepdims=True)) \
        - logits.max(-1, keepdims=True)
    return logp[np.arange(T - 1), ids[1:]]


def test_hf_olmo_checkpoint_scores_as_olmo_computes_it(tmp_path):
    W = _hf_olmo_checkpoint(tmp_path / "ckpt")
    model = lm.load_causal_lm(tmp_path / "ckpt", device="cpu")
    assert type(model).__name__ == "OlmoForCausalLM"
    ids = [5, 17, 3, 44, 8, 61, 2, 30, 11, 89]
    got = lm.token_stats(model, [ids], progress=False)[0].logprob
    np.testing.assert_allclose(got, _olmo_logprobs(W, np.array(ids)), atol=1e-5)


def test_what_the_olmo_classes_lack_is_one_error(tmp_path):
    _hf_olmo_checkpoint(tmp_path / "alibi", alibi=True, layer_norm_type="rms")
    with pytest.raises(InputError, match=r"alibi=True, .*layer_norm_type='rms'.*ai2-olmo"):
        lm.load_causal_lm(tmp_path / "alibi", device="cpu")


def test_olmo7b_revisions_resolve_offline_from_the_config(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # the four OLMoMIA targets, as the config names them; any other step by OLMo's rule
    # step * 2160 * 2048 tokens, in billions
    assert lm.resolve_revision("allenai/OLMo-7B", step=100000) == "step100000-tokens442B"
    assert lm.resolve_revision("allenai/OLMo-7B", step=400000) == "step400000-tokens1769B"
    assert lm.resolve_revision("allenai/OLMo-7B", step=250000) == "step250000-tokens1106B"
    assert pytest.approx(1105.92) == 250000 * 2160 * 2048 / 1e9
    with pytest.raises(InputError, match="cannot list the revisions"):
        lm.resolve_revision("someone/unknown-model", step=5)
