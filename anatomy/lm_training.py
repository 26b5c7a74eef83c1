"""Train an OLMo-architecture causal LM in a given data order (the miniworld's trainer, shared).

Step ``s`` trains the instances ``storage[global_indices[s*B:(s+1)*B]]`` — what OLMo's
trainer reads for that step — full 128-token causal-LM loss, no masking (OLMo trains on
whole instances, separators included). AdamW with linear warm-up and cosine decay to
``MIN_LR`` of the peak.
``bf16=None`` autocasts to bf16 where the CPU supports it (2.8-3x faster than fp32 on AMX
cores), fp32 master weights; ``bf16=False`` trains in fp32, the path a CPU without bf16
kernels takes. ``threads`` fixes torch's intra-op threads for the run (the GEMMs' split, and
so the float sums, can depend on it). Checkpoints are HF model folders named like OLMo's hub
branches, ``step{S}-tokens{T}K`` (OLMo-7B: ``step100000-tokens442B``).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("anatomy.world")

# Cosine decay to this fraction of the peak. At 0.1 (OLMo-7B decays linearly to 0.1x) the
# small world's 96 copies in the last 50 steps reached a mean memorization score of only
# 0.29 at the final checkpoint (0 exact); a higher floor keeps the end of the run learning.
MIN_LR = 0.3


def revision_name(step: int, batch_size: int, seq_len: int) -> str:
    """OLMo-style branch name; tokens in thousands (the miniworld is too small for B)."""
    return f"step{step}-tokens{round(step * batch_size * seq_len / 1000)}K"


def bf16_supported() -> bool:
    """True if bf16 autocast runs (and is fast) on this CPU: AMX or AVX512-BF16."""
    import torch

    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - very old torch
        return False
    if "AMX" not in isa.upper() and "AVX512" not in isa.upper():
        return False
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.ones(2, 2) @ torch.ones(2, 2)
        return True
    except RuntimeError:
        return False


def make_model(vocab_size: int, seq_len: int, d_model: int, n_layers: int, n_heads: int,
               eos_id: int, pad_id: int, seed: int):
    import torch
    from transformers import OlmoConfig, OlmoForCausalLM

    cfg = OlmoConfig(vocab_size=vocab_size, hidden_size=d_model, intermediate_size=4 * d_model,
                     num_hidden_layers=n_layers, num_attention_heads=n_heads,
                     max_position_embeddings=seq_len, eos_token_id=eos_id,
                     pad_token_id=pad_id, bos_token_id=None, tie_word_embeddings=True,
                     rope_theta=10000.0)
    torch.manual_seed(seed)
    return OlmoForCausalLM(cfg)


def train(storage: np.ndarray, order: np.ndarray, *, steps: int, batch_size: int, lr: float,
          model, checkpoints: dict[int, Path], tokenizer_dir: Path | None, seed: int,
          progress=None, bf16: bool | None = None, seed_rng: bool = True,
          threads: int | None = None) -> dict:
    """Train for ``steps`` steps; save a checkpoint after each step in ``checkpoints``.

    Returns ``{"loss": [...per step], "batch_sha1": [...per step], "bf16": bool,
    "threads": int}``.
    """
    import torch
    from transformers import AutoTokenizer

    old_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        return _train(storage, order, steps, batch_size, lr, model, checkpoints, tokenizer_dir,
                      seed, progress, bf16, seed_rng, AutoTokenizer)
    finally:
        torch.set_num_threads(old_threads)


def _train(storage, order, steps, batch_size, lr, model, checkpoints, tokenizer_dir, seed,
           progress, bf16, seed_rng, AutoTokenizer) -> dict:
    import torch

    if seed_rng:
        torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    # None: bf16 autocast where the CPU has it (the world's 5M model: 2.8-3x faster). False:
    # fp32 (the same numbers on CPUs with and without bf16 kernels). seed_rng=False leaves
    # torch's global RNG alone: models trained in threads seed their own initialisation, and
    # reseeding here would change another thread's init mid-way.
    use_bf16 = bf16_supported() if bf16 is None else bool(bf16) and bf16_supported()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1,
                            eps=1e-8)
    warm = max(1, steps // 50)

    def lr_at(s: int) -> float:
        if s < warm:
            return lr * (s + 1) / warm
        frac = (s - warm) / max(1, steps - warm)
        return lr * (MIN_LR + (1 - MIN_LR) * 0.5 * (1 + math.cos(math.pi * frac)))

    # the tokenizer is only saved beside checkpoints (selection's models keep none)
    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir)) if checkpoints else None
    losses, hashes = [], []
    model.train()
    t0 = time.time()
    it = range(steps) if progress is None else progress(range(steps), desc="train", unit="step")
    for s in it:
        batch = storage[order[s * batch_size:(s + 1) * batch_size]]
        hashes.append(hashlib.sha1(np.ascontiguousarray(batch, dtype="<u2").tobytes()).hexdigest())
        x = torch.from_numpy(batch.astype(np.int64))
        for g in opt.param_groups:
            g["lr"] = lr_at(s)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=use_bf16):
            out = model(input_ids=x, labels=x)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(float(out.loss.detach()), 4))
        if s + 1 in checkpoints:
            path = checkpoints[s + 1]
            model.save_pretrained(str(path))
            tok.save_pretrained(str(path))
            log.info("step %d: loss %.3f, saved %s (%.0fs)", s + 1, losses[-1], path.name,
                     time.time() - t0)
    model.eval()
    return {"loss": losses, "batch_sha1": hashes, "bf16": use_bf16,
            "threads": torch.get_num_threads()}


def weights_digest(model) -> str:
    """sha256 over a model's parameters and buffers (name, dtype, shape, little-endian bytes),
    in name order: equal digests mean bit-identical trained weights (e.g. one world built on
    two machines)."""
    import torch

    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def cpu_description() -> dict:
    """What the float results of training depend on: the CPU model, torch's CPU capability
    (the kernels it dispatches to), bf16 support, torch's version."""
    import platform

    import torch

    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            info = f.read()
    except OSError:
        info = ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines()
                 if line.startswith("model name")), platform.processor() or "")
    try:
        isa = torch.backends.cpu.get_cpu_capability()
    except Exception:  # pragma: no cover - very old torch
        isa = "unknown"
    flags = info
    return {"model": name, "torch_capability": isa, "amx": "amx_bf16" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "torch": torch.__version__,
            "machine": platform.machine()}
