"""OLMo checkpoints in ai2-olmo's ``hf_olmo`` format, loaded as transformers' Olmo classes.

OLMo-7B's intermediate checkpoints exist only as revisions of ``allenai/OLMo-7B``
(``step100000-tokens442B`` ...) saved by ai2-olmo's ``hf_olmo`` wrapper: a ``config.json``
with OLMo's own keys (``d_model``, ``n_layers``, ``mlp_hidden_size`` ...,
``model_type: hf_olmo``) and weights named after OLMo's modules
(``model.transformer.blocks.{i}.att_proj.weight`` ...). transformers reads them only with
``trust_remote_code`` and the ai2-olmo package; ``allenai/OLMo-7B-hf`` (transformers' format)
has no intermediate revisions. Here the weights are mapped onto ``OlmoForCausalLM``, the
layout transformers' own ``convert_olmo_weights_to_hf.py`` uses:

- ``att_proj`` [d + 2 kv, d] -> ``q_proj``, ``k_proj``, ``v_proj`` (split on dim 0);
- ``attn_out`` -> ``o_proj``;
- ``ff_proj`` [2 h, d] -> ``up_proj`` (first half), ``gate_proj`` (second half): OLMo's
  SwiGLU is ``x, gate = ff_proj(x).chunk(2); silu(gate) * x``;
- ``ff_out`` (per block) -> ``down_proj``; ``wte`` -> ``embed_tokens``; the top-level
  ``ff_out`` (untied) or ``wte`` (tied) -> ``lm_head``;
- ``attn_norm`` / ``ff_norm`` / ``ln_f``: OLMo-7B's non-parametric LayerNorm, which is
  transformers' ``OlmoLayerNorm`` (no weights to map).

Features the Olmo classes lack (ALiBi, QK LayerNorm, affine or RMS norms, biases, parallel
blocks, non-SwiGLU activations) are one clear error rather than a silently different model.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from anatomy.io import InputError

FORMAT_KEYS = ("d_model", "n_layers", "n_heads")  # OLMo's ModelConfig, not transformers'


def is_hf_olmo(config: Mapping[str, Any]) -> bool:
    """Whether a ``config.json`` is ai2-olmo's (``hf_olmo``) rather than transformers'."""
    return config.get("model_type") in ("hf_olmo", "olmo") and all(k in config
                                                                   for k in FORMAT_KEYS)


def _require(config: Mapping[str, Any], where: str) -> None:
    unsupported = {
        "alibi": lambda v: bool(v), "attention_layer_norm": lambda v: bool(v),
        "layer_norm_with_affine": lambda v: bool(v), "include_bias": lambda v: bool(v),
        "activation_type": lambda v: v not in (None, "swiglu"),
        "block_type": lambda v: v not in (None, "sequential"),
        "layer_norm_type": lambda v: v not in (None, "default"),
        "rope": lambda v: v is False,
    }
    bad = [f"{k}={config[k]!r}" for k, test in unsupported.items() if k in config
           and test(config[k])]
    if bad:
        raise InputError(where, "this hf_olmo checkpoint uses what transformers' Olmo classes "
                                f"do not have ({', '.join(bad)}); load it with ai2-olmo "
                                "(pip install ai2-olmo) and trust_remote_code")


def olmo_config(config: Mapping[str, Any], where: str = "config.json"):
    """transformers' ``OlmoConfig`` for an ``hf_olmo`` ``config.json``."""
    from transformers import OlmoConfig

    _require(config, where)
    d, heads = int(config["d_model"]), int(config["n_heads"])
    if config.get("multi_query_attention"):
        kv = 1
    else:
        kv = int(config.get("n_kv_heads") or heads)
    hidden = config.get("mlp_hidden_size") or int(config.get("mlp_ratio", 4)) * d
    return OlmoConfig(
        vocab_size=int(config.get("embedding_size") or config["vocab_size"]),
        hidden_size=d, intermediate_size=int(hidden) // 2,
        num_hidden_layers=int(config["n_layers"]), num_attention_heads=heads,
        num_key_value_heads=kv, max_position_embeddings=int(config["max_sequence_length"]),
        rope_theta=float(config.get("rope_theta", 10000.0)),
        attention_bias=False, clip_qkv=config.get("clip_qkv"),
        pad_token_id=config.get("pad_token_id"), eos_token_id=config.get("eos_token_id"),
        bos_token_id=None, tie_word_embeddings=bool(config.get("weight_tying", False)))


def olmo_state_dict(weights: Mapping[str, Any], cfg, where: str = "weights") -> dict[str, Any]:
    """The ``OlmoForCausalLM`` state dict of ``hf_olmo`` weights (tensors, by name)."""
    import torch

    pre = "model.transformer."
    if not any(k.startswith(pre) for k in weights):
        pre = "transformer."  # an OLMo checkpoint saved without the hf_olmo wrapper
    try:
        d = cfg.hidden_size
        kv = d // cfg.num_attention_heads * cfg.num_key_value_heads
        out = {"model.embed_tokens.weight": weights[pre + "wte.weight"]}
        for i in range(cfg.num_hidden_layers):
            b = f"{pre}blocks.{i}."
            q, k, v = torch.split(weights[b + "att_proj.weight"], [d, kv, kv], dim=0)
            up, gate = torch.chunk(weights[b + "ff_proj.weight"], 2, dim=0)
            m = f"model.layers.{i}."
            out.update({m + "self_attn.q_proj.weight": q, m + "self_attn.k_proj.weight": k,
                        m + "self_attn.v_proj.weight": v,
                        m + "self_attn.o_proj.weight": weights[b + "attn_out.weight"],
                        m + "mlp.up_proj.weight": up, m + "mlp.gate_proj.weight": gate,
                        m + "mlp.down_proj.weight": weights[b + "ff_out.weight"]})
        out["lm_head.weight"] = weights[pre + "wte.weight"] if cfg.tie_word_embeddings \
            else weights[pre + "ff_out.weight"]
    except KeyError as e:
        raise InputError(where, f"not an hf_olmo checkpoint: no weight {e.args[0]}") from None
    except RuntimeError as e:  # split sizes that do not add up
        raise InputError(where, f"weights do not match the config ({e})") from None
    return out


def load_hf_olmo(config: Mapping[str, Any], weights: Mapping[str, Any], where: str,
                 dtype=None):
    """An eval-mode ``OlmoForCausalLM`` holding an ``hf_olmo`` checkpoint's weights."""
    from transformers import OlmoForCausalLM

    cfg = olmo_config(config, where)
    state = olmo_state_dict(weights, cfg, where)
    # from_pretrained with a state dict: no random initialisation of 7B parameters first
    model = OlmoForCausalLM.from_pretrained(None, config=cfg, state_dict=state,
                                            dtype=dtype if dtype is not None else "auto")
    return model.eval()
