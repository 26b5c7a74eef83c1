"""Memorization scores and perplexities of trained samples, over one or several checkpoints.

Definitions (Biderman et al. 2023, "Emergent and Predictable Memorization"; EleutherAI
pythia-memorized-evals; Prashanth et al. 2024 §3):

- ``memorization_score``: greedy decoding from the sample's first ``prompt_len`` (32) tokens;
  the fraction of the next ``cont_len`` (32) tokens reproduced, position by position. A
  sample is memorized (32-extractable) at score 1.0.
- One teacher-forced pass over the sample's ``P + C`` tokens gives log p(x_t | x_<t) for
  t = 1 .. P+C-1: ``loss`` = mean NLL over all of them; ``prompt_perplexity`` = exp(mean NLL
  over the prompt's P-1 predicted tokens), ``generation_perplexity`` = exp(mean NLL over the
  C continuation tokens), ``sequence_perplexity`` = exp(loss). EleutherAI's ``inference.py``
  divides every sum by P+C-1 (63), so prompt x generation = sequence exactly and the parts
  are not perplexities of their own tokens; ``published_normalisation=True`` reproduces it,
  with its handling of special tokens: a sample holding k tokens of id 0 (Pythia's
  ``<|endoftext|>``, wherever they sit) loses its last k predictions, and the rest split in
  half (inference.py ``calculate_perplexity``, lines 86-121 at 84ab8c0).

The work is a step of :mod:`anatomy.execution`: units are (checkpoint, fixed batch of
samples), so W ranks give the bytes of one, a killed rank resumes, and each checkpoint's
model is loaded once per process, only if one of its units is computed here.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import execution
from anatomy.memorization.table import ID, write_table

_ONE = execution.Ranks()  # one process

COLUMNS = ("memorization_score", "loss", "prompt_perplexity", "generation_perplexity",
           "sequence_perplexity")


def teacher_forced_logprobs(model, samples: np.ndarray) -> np.ndarray:
    """log p(x_t | x_<t), t = 1..n-1, for equal-length rows ``(k, n)``: ``(k, n-1)`` float64.

    Logits are cast to float32 and normalised in float64 (the published ``inference.py``
    takes the softmax in float64), one batch at a time.
    """
    import torch

    from anatomy.lm import _model_device

    ids = torch.as_tensor(np.asarray(samples, dtype=np.int64), device=_model_device(model))
    with torch.inference_mode():
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1].double()
        lp = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return lp.cpu().numpy()


def perplexities(logprobs: np.ndarray, prompt_len: int, published_normalisation: bool = False,
                 special_counts: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """``loss`` and the three perplexities from teacher-forced log-probs ``(k, P+C-1)``.

    ``published_normalisation`` follows ``calculate_perplexity`` in EleutherAI's
    ``inference.py`` (84ab8c0, lines 86-126): with ``s`` special tokens in a sample
    (``special_counts``, default none) only its first ``m = P+C-1-s`` predictions count; the
    prompt part is the first ``m // 2`` of them, the generation part the rest, and every part
    is divided by ``m``. Fewer than 2 predictions left raise inside the published try block,
    which returns -1 for all three; so does this. ``loss`` is always the mean NLL over all
    P+C-1 predictions.
    """
    nll = -np.asarray(logprobs, dtype=np.float64)
    k, n = nll.shape
    total = nll.sum(1)
    out = {"loss": total / n}
    if not published_normalisation:
        head, tail = nll[:, : prompt_len - 1], nll[:, prompt_len - 1:]
        out.update(prompt_perplexity=np.exp(head.mean(1)), generation_perplexity=np.exp(
            tail.mean(1)), sequence_perplexity=np.exp(total / n))
        return out
    s = np.zeros(k, np.int64) if special_counts is None else np.asarray(special_counts)
    if s.shape != (k,):
        raise ValueError(f"special_counts has shape {s.shape}, expected ({k},)")
    m = n - s
    pos = np.arange(n)[None, :]
    kept = np.where(pos < m[:, None], nll, 0.0)
    first = np.where(pos < (m // 2)[:, None], kept, 0.0).sum(1)
    whole = kept.sum(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        parts = {"prompt_perplexity": np.exp(first / m),
                 "generation_perplexity": np.exp((whole - first) / m),
                 "sequence_perplexity": np.exp(whole / m)}
    for key, v in parts.items():
        out[key] = np.where(m >= 2, v, -1.0)
    return out


def memorization_scores(generated: np.ndarray, continuation: np.ndarray) -> np.ndarray:
    """Fraction of positions where the greedy continuation equals the true one."""
    g, c = np.asarray(generated), np.asarray(continuation)
    if g.shape != c.shape:
        raise ValueError(f"generated {g.shape} vs continuation {c.shape}")
    return (g == c).mean(1)


PUBLISHED_SPECIAL_ID = 0  # inference.py counts ``labels == 0``: Pythia's <|endoftext|>


def score_batch(model, samples: np.ndarray, prompt_len: int = 32,
                published_normalisation: bool = False,
                special_id: int = PUBLISHED_SPECIAL_ID) -> dict[str, np.ndarray]:
    """Every column of :data:`COLUMNS` for one batch of samples ``(k, P + C)``; with
    ``published_normalisation``, tokens equal to ``special_id`` are the published special
    tokens (:func:`perplexities`)."""
    from anatomy.lm import greedy_continuations

    samples = np.asarray(samples, dtype=np.int64)
    cont_len = samples.shape[1] - prompt_len
    gen = greedy_continuations(model, samples[:, :prompt_len].tolist(), cont_len,
                               batch_size=len(samples))
    out = {"memorization_score": memorization_scores(np.array(gen), samples[:, prompt_len:])}
    out.update(perplexities(teacher_forced_logprobs(model, samples), prompt_len,
                            published_normalisation, (samples == special_id).sum(1)))
    return out


class _Models:
    """Checkpoint models loaded on first use, the last two kept (units come checkpoint by
    checkpoint; two workers may straddle a boundary)."""

    def __init__(self, load: Callable[[int], Any]):
        self.load, self.cache, self.lock = load, {}, threading.Lock()

    def get(self, i: int):
        with self.lock:
            if i not in self.cache:
                while len(self.cache) >= 2:
                    self.cache.pop(next(iter(self.cache)))
                self.cache[i] = self.load(i)
            return self.cache[i]


class _ScoresStep:
    name = "memorization_scores"

    def __init__(self, ids: np.ndarray, samples: np.ndarray, checkpoints: Sequence[str],
                 models: _Models, output: execution.Output, fp: execution.Fingerprint,
                 path: Path, prompt_len: int, batch_size: int, published: bool,
                 special_id: int = PUBLISHED_SPECIAL_ID):
        self.ids, self.samples, self.checkpoints = ids, samples, list(checkpoints)
        self.models, self.output, self.fingerprint, self.path = models, output, fp, path
        self.prompt_len, self.published, self.special_id = prompt_len, published, special_id
        self.batches = [np.arange(a, min(len(ids), a + batch_size))
                        for a in range(0, len(ids), batch_size)]
        self.plan = execution.UnitPlan(**{f"c{i}": len(self.batches)
                                          for i in range(len(self.checkpoints))})
        self.n_units = self.plan.n_units

    def compute_unit(self, unit: int) -> Mapping[str, Any]:
        kind, b = self.plan.locate(unit)
        model = self.models.get(int(kind[1:]))
        return score_batch(model, self.samples[self.batches[b]], self.prompt_len,
                           self.published, self.special_id)

    def merge(self, load) -> dict[str, Any]:
        cols: dict[str, list] = {ID: [], "checkpoint": [], **{c: [] for c in COLUMNS}}
        memorized = {}
        for i, ck in enumerate(self.checkpoints):
            parts = [load(self.plan.unit(f"c{i}", b)) for b in range(len(self.batches))]
            cols[ID].append(self.ids)
            cols["checkpoint"] += [ck] * len(self.ids)
            for c in COLUMNS:
                cols[c].append(np.concatenate([np.asarray(p[c]) for p in parts]))
            memorized[ck] = int((cols["memorization_score"][-1] == 1.0).sum())
        table = {ID: np.concatenate(cols[ID]), "checkpoint": cols["checkpoint"],
                 **{c: np.concatenate(cols[c]) for c in COLUMNS}}
        rows = write_table(self.path, table)
        return {"rows": rows, "samples": len(self.ids), "memorized": memorized}


def run_memorization_scores(ids: np.ndarray, samples: np.ndarray, checkpoints: Sequence[str],
                            load_model: Callable[[int], Any], output: Path,
                            fingerprint_inputs: Mapping[str, Any],
                            params: Mapping[str, Any], prompt_len: int = 32,
                            batch_size: int = 64, published_normalisation: bool = False,
                            special_id: int = PUBLISHED_SPECIAL_ID, on_cpu: bool = True,
                            ranks: execution.Ranks = _ONE,
                            overwrite: bool = False, merge: bool = False,
                            progress: bool = True) -> execution.StepResult:
    """Score ``samples`` (rows of ``ids``) at every checkpoint into one table (long format:
    one row per sample and checkpoint). ``load_model(i)`` loads checkpoint ``i``."""
    fp = execution.fingerprint(
        "memorization_scores", fingerprint_inputs,
        {**params, "checkpoints": list(checkpoints), "prompt_len": prompt_len,
         "cont_len": int(samples.shape[1]) - prompt_len, "batch_size": batch_size,
         "published_normalisation": published_normalisation,
         **({"special_id": special_id} if published_normalisation else {}),
         "samples_sha1": _digest(ids, samples)})
    out = execution.Output.file(output)
    step = _ScoresStep(ids, samples, checkpoints, _Models(load_model), out, fp, Path(output),
                       prompt_len, batch_size, published_normalisation, special_id)
    step.on_cpu = on_cpu
    return execution.run_step(step, ranks, overwrite=overwrite, merge_only=merge,
                              show_progress=progress)


def _digest(*arrays: np.ndarray) -> str:
    import hashlib

    h = hashlib.sha1()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(str((a.dtype.str, a.shape)).encode())
        h.update(a.tobytes())
    return h.hexdigest()
