"""What a selection costs, in the units of the training it saves.

DsDm's compute multiplier (Engstrom et al. 2024, Sec. 4.2) compares training compute only:
the random-data compute that matches a method's target loss. A method also spends compute to
select, and a user deciding whether selection pays needs both in one unit. The unit here is
the FLOPs of one training step of the evaluation model, with the usual estimates (Kaplan et
al. 2020, Sec. 2.1): training ``6 · params · tokens``, a forward pass ``2 · params ·
tokens``. What is counted, per method:

- ``dsdm``: each proxy's training (its recorded steps x batch x sequence length, when the
  proxies were trained by the selection; given ``--proxy_models`` are counted as free and
  said so), each pool row's per-example gradient through each proxy (forward and backward:
  ``6 · params · L``) and its Q (a forward pass: ``2 · params · L``). The target's few
  gradients are left out.
- ``semdedup``: the embedder's forward pass over every pool row, at most ``max_length``
  tokens each (an upper bound; the embedder's tokenizer is not the pool's).
- ``dsir``, ``classifier``, ``random``: no neural model pass (hashed n-gram counts, a linear
  model); 0, and the report says so.

The net multiplier divides the random compute a selection matches by what the selection
spent in all: ``m · C / (C + S)``, ``C`` the FLOPs of training on the selection, ``S`` the
selection's own.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from anatomy.io import PathLike

EMBED_MAX_LENGTH = 256  # anatomy.lm.embed_texts's default cut


def param_count(model_dir: PathLike) -> int:
    """Parameters of an HF model folder, from its safetensors headers (no weights read)."""
    total = 0
    files = sorted(Path(model_dir).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"no .safetensors in {model_dir}")
    for f in files:
        with open(f, "rb") as fh:
            (n,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(n))
        for k, v in header.items():
            if k != "__metadata__":
                size = 1
                for d in v["shape"]:
                    size *= int(d)
                total += size
    return total


def train_flops(params: int, tokens: int) -> float:
    return 6.0 * params * tokens


def forward_flops(params: int, tokens: int) -> float:
    return 2.0 * params * tokens


def selection_compute(method: str, pool_rows: int, seq_len: int, info: dict[str, Any],
                      proxies_record: PathLike | None = None,
                      embedder_params: int | None = None) -> dict[str, Any]:
    """The FLOPs a selection spent and what they are, for ``select_data.py``'s sidecar:
    ``{"flops": float, "parts": {name: flops}, "note": str}``."""
    parts: dict[str, float] = {}
    note = ""
    if method == "dsdm":
        proxies = [Path(p) for p in info.get("proxies", [])]
        trained = None
        if proxies_record is not None and Path(proxies_record).is_file():
            trained = json.loads(Path(proxies_record).read_text())["proxies"]
        for m, p in enumerate(proxies):
            n = param_count(p)
            if trained is not None:
                rec = trained[m]
                batch = rec.get("batch_size") or 0
                rows = rec["steps"] * batch if batch else rec["rows"]
                parts[f"proxy {m} training"] = train_flops(n, rows * seq_len)
            parts[f"proxy {m} per-example gradients"] = train_flops(n, pool_rows * seq_len)
            parts[f"proxy {m} Q"] = forward_flops(n, pool_rows * seq_len)
        if trained is None:
            note = "given proxies: their training is not counted"
    elif method == "semdedup":
        if embedder_params:
            parts["embedding"] = forward_flops(embedder_params,
                                               pool_rows * min(seq_len, EMBED_MAX_LENGTH))
        else:
            note = "embedder size unknown: not counted"
    else:
        note = "no neural model pass"
    return {"flops": float(sum(parts.values())), "parts": parts, "note": note}


def eval_step_flops(eval_params: int, batch_size: int, seq_len: int) -> float:
    """One training step of the evaluation model: the unit selection compute is shown in."""
    return train_flops(eval_params, batch_size * seq_len)


def net_multiplier(multiplier: float, train_flops_used: float, selection_flops: float
                   ) -> float:
    """``m · C / (C + S)``: the random compute matched per unit of compute spent in all."""
    return multiplier * train_flops_used / (train_flops_used + selection_flops)
