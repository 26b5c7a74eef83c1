"""Small causal LMs trained on selections: DsDm's proxies and the evaluation models.

Both use the miniworld's OLMo architecture and trainer (:mod:`anatomy.lm_training`: AdamW,
warm-up and cosine decay, bf16 autocast where the CPU has it, deterministic algorithms), one
epoch over the given rows in a seeded order, so a model's compute is proportional to its
selection's size, as in DsDm's evaluation (Engstrom et al. 2024, Sec. 4: each selection is
trained on for a fixed token budget; a random selection with k times the tokens is k times
the compute, the "compute multiplier" of Sec. 4.2).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from anatomy.io import InputError

_INIT_LOCK = threading.Lock()  # torch.manual_seed + init is global state: one at a time


@dataclass(frozen=True)
class Arch:
    """The evaluation/proxy model and its optimiser (the miniworld's OLMo, smaller)."""

    d_model: int = 64
    n_layers: int = 2
    n_heads: int = 2
    lr: float = 4e-3
    batch_size: int = 16
    epochs: float = 1.0
    bf16: bool | None = None  # None: bf16 autocast where the CPU has it; False: fp32

    def to_dict(self) -> dict:
        return asdict(self)


def make_lm(arch: Arch, vocab_size: int, seq_len: int, eos_id: int, pad_id: int, seed: int):
    from anatomy.lm_training import make_model

    if arch.d_model % arch.n_heads:
        raise InputError(None, f"d_model {arch.d_model} is not a multiple of n_heads "
                               f"{arch.n_heads}")
    with _INIT_LOCK:
        model = make_model(vocab_size, seq_len, arch.d_model, arch.n_layers, arch.n_heads,
                           eos_id, pad_id, seed)
    model.config._attn_implementation = "eager"  # vmap-safe (TRAK) and deterministic
    return model


def epoch_order(n: int, epochs: float, seed: int) -> np.ndarray:
    """Row order for ``epochs`` passes over ``n`` rows: a fresh seeded permutation per pass,
    the last pass cut (so 1.5 epochs = one pass and half of the next)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0x7A1]))
    total = max(1, int(round(n * epochs)))
    parts = [rng.permutation(n) for _ in range(int(np.ceil(total / n)))]
    return np.concatenate(parts)[:total]


def train_lm(rows: np.ndarray, arch: Arch, *, vocab_size: int, eos_id: int, pad_id: int,
             seed: int, steps: int | None = None):
    """Train a fresh model on the token ``rows`` ``(n, L)`` for ``arch.epochs`` (or
    ``steps``); returns ``(model, info)`` with the loss curve's first and last values."""
    from anatomy.lm_training import train

    rows = np.asarray(rows)
    if rows.ndim != 2 or len(rows) == 0:
        raise InputError(None, f"training needs a non-empty (n, L) array of rows, got "
                               f"{rows.shape}")
    B = arch.batch_size
    order = epoch_order(len(rows), arch.epochs, seed)
    n_steps = steps if steps is not None else max(1, len(order) // B)
    if len(order) < n_steps * B:  # more steps than the epochs give: keep cycling passes
        order = epoch_order(len(rows), n_steps * B / len(rows), seed)
    model = make_lm(arch, vocab_size, rows.shape[1], eos_id, pad_id, seed)
    res = train(rows, order, steps=n_steps, batch_size=B, lr=arch.lr, model=model,
                checkpoints={}, tokenizer_dir=None, seed=seed, bf16=arch.bf16,
                seed_rng=False)  # make_lm seeded the init under the lock; threads share RNG
    loss = res["loss"]
    return model, {"steps": n_steps, "rows": len(rows), "batch_size": B,
                   "seq_len": int(rows.shape[1]),
                   "params": int(sum(p.numel() for p in model.parameters())),
                   "first_loss": loss[0], "last_loss": loss[-1], "bf16": res["bf16"]}


def mean_target_loss(model, docs: Sequence[np.ndarray], batch_size: int = 32) -> float:
    """Mean over documents of each document's mean next-token loss (nats/token)."""
    from anatomy.lm import token_stats

    stats = token_stats(model, [list(map(int, d)) for d in docs], batch_size=batch_size,
                        progress=False)
    per_doc = [-float(s.logprob.mean()) for s in stats if len(s)]
    if not per_doc:
        raise InputError(None, "no target document has 2 or more tokens")
    return float(np.mean(per_doc))


def group_losses(model, groups: dict[str, Sequence[np.ndarray]], batch_size: int = 32
                 ) -> dict[str, float]:
    """Per target group its mean document loss, and ``mean``: the groups weighted equally
    (DsDm's ``lm_task_mix`` averages tasks, not examples)."""
    out = {g: mean_target_loss(model, d, batch_size) for g, d in groups.items()}
    out["mean"] = float(np.mean(list(out.values())))
    return out


def tokenize_docs(tokenizer, texts: Sequence[str], seq_len: int) -> list[np.ndarray]:
    """Target texts as token ids, cut to the model's context (``seq_len``)."""
    enc = tokenizer(list(texts), add_special_tokens=False, truncation=True,
                    max_length=seq_len)["input_ids"]
    return [np.asarray(e, dtype=np.int64) for e in enc if len(e) >= 2]
