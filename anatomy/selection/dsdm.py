"""DsDm (Engstrom, Feldmann, Madry 2024, "DsDm: Model-Aware Dataset Selection with
Datamodels", ICML; arXiv 2401.12926): select the candidates a linear datamodel predicts will
lower the target loss most.

The datamodel θ (Sec. 2: ℓ(x; A(S)) ≈ θ_x · 1_S, averaged over target examples) is estimated
with TRAK (:mod:`anatomy.selection.trak`) on proxy models; its minimiser over |S| = n is the n
candidates with the smallest θ̄, i.e. the largest TRAK score of the target margin (our scores:
higher = keep, as DsDm's released score tensors, whose ``get_indices`` takes the top n).
The published code never released this computation ("selecting data: coming soon"); its
projection dimension, number of proxies and λ are not retrievable, so they are flags here.

Three stages, each resumable and fingerprinted:

1. proxies (:func:`train_proxies`): ``n_proxies`` small models (the miniworld's trainer),
   each on a seeded random ``fraction`` of the pool — TRAK's ensemble over models trained on
   random subsets (Park et al. 2023, Sec. 3.2); or HF checkpoints given by path;
2. pool features (:func:`pool_features`): per model, projected per-example gradients of every
   candidate row and Q, a map step whose units are (model, fixed row block), so ranks
   (torchrun, a Slurm array) split it and give the bytes of one process; target-independent,
   so every target reuses it;
3. scores (:func:`dsdm_scores`): target features averaged per target group, the groups
   averaged (a mix weighs its tasks equally, as ``lm_task_mix`` does), then the TRAK kernel.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import execution, io
from anatomy.io import InputError, PathLike
from anatomy.selection.pool import CandidatePool
from anatomy.selection.targets import Target
from anatomy.selection.training import Arch, tokenize_docs, train_lm

_ONE = execution.Ranks()
_LOAD_LOCK = threading.Lock()
PROXY_FILES = ("config.json", "generation_config.json", "model.safetensors")


@dataclass(frozen=True)
class DsdmConfig:
    # 4: the best measured LDS of 1, 2, 4 and 8 on both miniworld targets, and the first
    # count whose ranking's reliability passes 0.5 (benchmarks/bench_trak.py (b), README)
    n_proxies: int = 4
    fraction: float = 0.5  # of the pool each proxy trains on (TRAK's alpha = 0.5)
    proxy_epochs: float = 2.0
    proj_dim: int = 512
    proj_seed: int = 0
    lambda_reg: float = 0.0
    batch_size: int = 32  # rows per per-example-gradient batch
    rows_per_unit: int = 256  # pool rows per unit (fixed by the pool, not by the ranks)
    compat: bool = False  # traker's float32 arithmetic (see trak.model_scores)
    scale_inverse: bool = True  # traker's per-model division by mean |inverse|
    # the target query per token (each target document weighs 1, as the evaluation's
    # per-document mean loss); False: the margin summed over tokens (long documents weigh more)
    target_per_token: bool = True
    grad_wrt: tuple[str, ...] | None = None
    device: str | None = None  # the featurisation's device (default: cuda:LOCAL_RANK if any)
    # memory: the projection matrix (grad_dim x proj_dim float32, one model's at a time) is
    # kept while under this size, else regenerated block by block per batch (traker's way,
    # about half the speed); besides it each worker holds one batch's per-example gradients
    # and vmapped activations, ~ batch_size x (4 grad_dim + 25 seq_len vocab) bytes
    max_projection_gb: float = 2.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def proxy_subsets(n_rows: int, n_proxies: int, fraction: float, seed: int) -> list[np.ndarray]:
    """The rows each proxy trains on: seeded random subsets of ``fraction`` of the pool."""
    if not 0 < fraction <= 1:
        raise InputError(None, f"proxy fraction must be in (0, 1], got {fraction}")
    k = max(1, int(round(fraction * n_rows)))
    out = []
    for m in range(n_proxies):
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xD5D, m]))
        out.append(np.sort(rng.choice(n_rows, k, replace=False)))
    return out


class _ProxyStep:
    """One unit per proxy: train it on its subset, save it as an HF folder."""

    name = "dsdm_proxies"
    on_cpu = True

    def __init__(self, pool: CandidatePool, cfg: DsdmConfig, arch: Arch, seed: int,
                 out: Path, fp: execution.Fingerprint):
        self.pool, self.cfg, self.arch, self.seed = pool, cfg, arch, seed
        self.out = out
        names = [f"proxy-{m}/{f}" for m in range(cfg.n_proxies) for f in PROXY_FILES]
        self.output = execution.Output.folder(out, [*names, "proxies.json"])
        self.fingerprint = fp
        self.n_units = cfg.n_proxies
        self.subsets = proxy_subsets(len(pool), cfg.n_proxies, cfg.fraction, seed)

    def compute_unit(self, u: int) -> dict[str, Any]:
        rows = self.pool.token_matrix(self.subsets[u])
        vocab, eos, pad = self.pool.lm_ids()
        arch = Arch(**{**self.arch.to_dict(), "epochs": self.cfg.proxy_epochs})
        model, info = train_lm(rows, arch, vocab_size=vocab, eos_id=eos, pad_id=pad,
                               seed=self.seed * 1000 + u)
        # the unit's payload is the state dict: the merge writes the folders atomically
        state = {f"w/{k}": v.detach().float().numpy() for k, v in model.state_dict().items()}
        return {**state, "info": json.dumps(info), "config": model.config.to_json_string()}

    def merge(self, load) -> dict[str, Any]:
        import torch
        from transformers import OlmoConfig, OlmoForCausalLM

        infos = []
        for u in range(self.n_units):  # stale folders (an overwrite) would block the move
            shutil.rmtree(self.out / f"proxy-{u}", ignore_errors=True)
        with execution.staged(self.output) as stage:
            for u in range(self.n_units):
                part = load(u)
                cfg = OlmoConfig.from_dict(json.loads(str(part["config"])))
                model = OlmoForCausalLM(cfg)
                sd = {k[2:]: torch.from_numpy(np.asarray(v)) for k, v in part.items()
                      if k.startswith("w/")}
                model.load_state_dict(sd)
                tmp = Path(tempfile.mkdtemp(dir=self.out, prefix=".proxy-"))
                model.save_pretrained(str(tmp))
                for f in PROXY_FILES:
                    os.replace(tmp / f, stage(self.out / f"proxy-{u}" / f))
                shutil.rmtree(tmp, ignore_errors=True)
                infos.append(json.loads(str(part["info"])))
            io.write_json(stage(self.out / "proxies.json"),
                          {"subsets_seed": self.seed, "fraction": self.cfg.fraction,
                           "proxies": infos})
        return {"proxies": self.n_units}


def train_proxies(pool: CandidatePool, cfg: DsdmConfig, arch: Arch, out: PathLike,
                  seed: int = 0, ranks: execution.Ranks = _ONE, overwrite: bool = False,
                  progress: bool = True) -> tuple[list[Path], execution.StepResult]:
    """Train (or find up to date) ``cfg.n_proxies`` proxies under ``out``; their folders."""
    out = Path(out)
    fp = execution.fingerprint("dsdm_proxies", None,
                               {"pool": pool.identity(), "n_proxies": cfg.n_proxies,
                                "fraction": cfg.fraction, "epochs": cfg.proxy_epochs,
                                "arch": arch.to_dict(), "seed": seed})
    step = _ProxyStep(pool, cfg, arch, seed, out, fp)
    res = execution.run_step(step, ranks, overwrite=overwrite, show_progress=progress)
    return [out / f"proxy-{m}" for m in range(cfg.n_proxies)], res


# ---------------------------------------------------------------------------------------
# featurisation


class _Models:
    """Per-thread model copies (``torch.func.functional_call`` swaps a module's parameters
    while it runs, so two threads must never share one) and one projector per model."""

    def __init__(self, paths: Sequence[PathLike], cfg: DsdmConfig, local_rank: int = 0):
        from anatomy.lm import resolve_device

        self.paths, self.cfg = [str(p) for p in paths], cfg
        self.device = resolve_device(cfg.device, local_rank)
        self.local = threading.local()
        self.projectors: dict[int, Any] = {}
        self.lock = threading.Lock()

    def model(self, m: int):
        cache = getattr(self.local, "models", None)
        if cache is None:
            cache = self.local.models = {}
        if m not in cache:
            from anatomy.lm import load_causal_lm

            cache.clear()  # units are ordered by model: keep one per thread
            with _LOAD_LOCK:  # transformers' loading (meta-device init) is not thread-safe
                model = load_causal_lm(self.paths[m], device=str(self.device))
            model.config._attn_implementation = "eager"
            model.eval()
            cache[m] = model
        return cache[m]

    def projector(self, m: int, model):
        from anatomy.selection.trak import Projection, Projector, grad_dim

        with self.lock:
            if m not in self.projectors:
                d = grad_dim(model, self.cfg.grad_wrt)
                # one matrix at a time: units run model by model, and a unit takes its
                # projector once (a thread still on model m-1 keeps its own reference)
                for k in [k for k in self.projectors if k != m]:
                    del self.projectors[k]
                self.projectors[m] = Projector(
                    Projection(d, self.cfg.proj_dim, self.cfg.proj_seed, model_id=m),
                    max_bytes=int(self.cfg.max_projection_gb * (1 << 30)))
            return self.projectors[m]

    def features(self, m: int, rows: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        from anatomy.selection.trak import lm_features

        model = self.model(m)
        proj = self.projector(m, model)
        feats, qs = [], []
        B = self.cfg.batch_size
        for a in range(0, len(rows), B):
            f, q = lm_features(model, rows[a:a + B], proj, self.cfg.grad_wrt)
            feats.append(f)
            qs.append(q)
        return np.concatenate(feats), np.concatenate(qs)


class _FeatureStep:
    name = "dsdm_features"
    on_cpu = True

    def __init__(self, pool: CandidatePool, models: _Models, out: Path,
                 fp: execution.Fingerprint):
        self.pool, self.models, self.out = pool, models, out
        M = len(models.paths)
        self.blocks = -(-len(pool) // models.cfg.rows_per_unit)
        self.n_units = M * self.blocks
        names = [f"features-{m}.npy" for m in range(M)] + [f"q-{m}.npy" for m in range(M)]
        self.output = execution.Output.folder(out, names)
        self.fingerprint = fp

    def compute_unit(self, u: int) -> dict[str, Any]:
        m, b = divmod(u, self.blocks)
        R = self.models.cfg.rows_per_unit
        idx = np.arange(b * R, min(len(self.pool), (b + 1) * R))
        f, q = self.models.features(m, self.pool.token_rows(idx))
        return {"features": f, "q": q}

    def merge(self, load) -> dict[str, Any]:
        M, R, k = len(self.models.paths), self.models.cfg.rows_per_unit, None
        with execution.staged(self.output) as stage:
            for m in range(M):
                F = Q = None
                for b in range(self.blocks):
                    part = load(m * self.blocks + b)
                    if F is None:
                        k = part["features"].shape[1]
                        F = np.zeros((len(self.pool), k), np.float32)
                        Q = np.zeros(len(self.pool), np.float32)
                    F[b * R: b * R + len(part["q"])] = part["features"]
                    Q[b * R: b * R + len(part["q"])] = part["q"]
                io.save_npy(stage(self.out / f"features-{m}.npy"), F)
                io.save_npy(stage(self.out / f"q-{m}.npy"), Q)
        return {"models": M, "rows": len(self.pool), "proj_dim": k}


def _device_type(device: str | None, local_rank: int) -> str:
    from anatomy.lm import resolve_device

    return resolve_device(device, local_rank).type


def pool_features(pool: CandidatePool, models: Sequence[PathLike], cfg: DsdmConfig,
                  out: PathLike, ranks: execution.Ranks = _ONE, overwrite: bool = False,
                  merge: bool = False, progress: bool = True) -> execution.StepResult:
    """TRAK features of every pool row for every model (``out/features-{m}.npy``, ``q-{m}``)."""
    out = Path(out)
    fp = execution.fingerprint("dsdm_features", {"models": list(map(str, models))},
                               {"pool": pool.identity(), "proj_dim": cfg.proj_dim,
                                "proj_seed": cfg.proj_seed, "batch_size": cfg.batch_size,
                                "rows_per_unit": cfg.rows_per_unit,
                                "grad_wrt": cfg.grad_wrt,
                                "device": _device_type(cfg.device, ranks.local_rank)})
    step = _FeatureStep(pool, _Models(models, cfg, ranks.local_rank), out, fp)
    # one thread per unit, several at once, on the CPU; one unit at a time on a GPU
    step.on_cpu = step.models.device.type == "cpu"
    try:
        return execution.run_step(step, ranks, overwrite=overwrite, merge_only=merge,
                                  show_progress=progress)
    finally:
        step.models.projectors.clear()  # the matrix is the step's largest allocation


def target_queries(models: Sequence[PathLike], target: Target, cfg: DsdmConfig, tokenizer,
                   seq_len: int) -> list[np.ndarray]:
    """Per model the target query: each group's mean projected gradient, the groups averaged
    (features are linear in the gradient, so this equals averaging the per-target scores).

    Batches of ``cfg.batch_size`` documents are the units, computed one torch thread each and
    as many at once as the host has cores (the pool's units' discipline), summed in a fixed
    order: the bytes depend neither on the ranks nor on the cores."""
    from concurrent.futures import ThreadPoolExecutor

    from anatomy.execution import host_cores, single_threaded_torch

    mods = _Models(models, cfg)
    docs = {g: tokenize_docs(tokenizer, t, seq_len) for g, t in target.groups.items()}
    for g, d in docs.items():
        if not d:
            raise InputError(None, f"target group {g!r} has no document of 2+ tokens")
    B = cfg.batch_size
    units = [(m, g, a) for m in range(len(mods.paths)) for g in docs
             for a in range(0, len(docs[g]), B)]

    def one(u: tuple[int, str, int]) -> np.ndarray:
        m, g, a = u
        batch = docs[g][a:a + B]
        f = mods.features(m, batch)[0].astype(np.float64)
        if cfg.target_per_token:  # the margin's gradient per scored token (features are linear)
            f = f / np.array([len(d) - 1 for d in batch], dtype=np.float64)[:, None]
        return f.sum(0)

    sums = []
    with single_threaded_torch(), ThreadPoolExecutor(max(1, host_cores())) as pool:
        for m in range(len(mods.paths)):  # model by model: one projection matrix alive
            sums += pool.map(one, [u for u in units if u[0] == m])
            mods.projectors.clear()
    out = []
    for m in range(len(mods.paths)):
        means = []
        for g in docs:
            parts = [s for (mm, gg, _), s in zip(units, sums, strict=True)
                     if mm == m and gg == g]
            means.append(np.sum(parts, axis=0) / len(docs[g]))
        out.append(np.mean(means, axis=0))
    return out


def dsdm_scores(pool: CandidatePool, target: Target, models: Sequence[PathLike],
                features_dir: PathLike, cfg: DsdmConfig) -> tuple[np.ndarray, dict[str, Any]]:
    """DsDm scores (float32, one per pool row, higher = keep) from the pool features."""
    from anatomy.selection.trak import ensemble_reliability, trak_scores

    d = Path(features_dir)
    M = len(models)
    F = [io.load_npy(d / f"features-{m}.npy", mmap=True) for m in range(M)]
    Q = [io.load_npy(d / f"q-{m}.npy") for m in range(M)]
    queries = target_queries(models, target, cfg, pool.tokenizer, pool.seq_len or 128)
    per_model: list[np.ndarray] = []
    s = trak_scores(F, queries, Q, cfg.lambda_reg, cfg.compat, cfg.scale_inverse, per_model)
    return s.astype(np.float32), {"models": M, "proj_dim": int(F[0].shape[1]),
                                  "lambda_reg": cfg.lambda_reg, "compat": cfg.compat,
                                  "scale_inverse": cfg.scale_inverse,
                                  "target_per_token": cfg.target_per_token,
                                  "agreement": ensemble_reliability(per_model)}
