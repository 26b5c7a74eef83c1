"""OLMoMIA benchmark construction, one entry point per pipeline step (the scripts call these).

sample -> filter -> vecs -> clustering, file names as the published tools write them
(``data/sample/OLMo-7B_step0:100000/0:1000.jsonl``, ``data/OLMo-7B_128_10000.jsonl``,
``data/vecs/OLMo-7B_128_10000.npy``, ``data/OLMo-7B_128_1000_hard.jsonl``), plus the
miniworld's control splits built from its truth file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import io
from anatomy.mia import clustering, pool, sampling

log = logging.getLogger("anatomy")


def sample_dir(data_dir: str | Path, model_name: str, step_start: int, step_end: int) -> Path:
    return Path(data_dir) / "sample" / f"{model_name}_step{step_start}:{step_end}"


def pool_name(model_name: str, max_length: int, num_data: int) -> str:
    return f"{model_name}_{max_length}_{num_data}"


@dataclass
class SampleResult:
    path: Path
    n_positions: int
    n_records: int
    n_failures: int
    skipped: bool = False


def run_sample(data, decode, *, step_start: int, step_end: int, sample_start: int,
               sample_end: int, seed: int, eos_id: int, out_dir: str | Path, model_name: str,
               overwrite: bool = False) -> SampleResult:
    """Draw positions as published, fetch and split their instances, write the JSONL.

    ``data`` is an :class:`anatomy.olmo_data.OlmoData`. Writes ``{S0}:{S1}.jsonl`` and
    ``{S0}:{S1}.failures.jsonl`` (one record per position whose fetch failed, never
    dropped). An existing output is kept (a rerun of a bash loop resumes) unless
    ``overwrite``.
    """
    folder = sample_dir(out_dir, model_name, step_start, step_end)
    out = folder / f"{sample_start}:{sample_end}.jsonl"
    fail_path = folder / f"{sample_start}:{sample_end}.failures.jsonl"
    if out.exists() and not overwrite:
        return SampleResult(out, 0, 0, 0, skipped=True)
    if not 0 <= step_start < step_end:
        raise io.InputError(None, f"need 0 <= step_start < step_end, got {step_start}:{step_end}")
    n_steps = data.n_steps
    if step_end > n_steps:
        raise io.InputError(data.order.source, f"the data order holds {n_steps} steps of "
                                               f"{data.batch_size}; step_end {step_end} is beyond")
    positions = sampling.draw_positions(step_start, step_end, data.batch_size, sample_start,
                                        sample_end, seed)
    records, failures = sampling.sample_records(positions, data.tokens_at_positions, eos_id,
                                                decode)
    io.write_jsonl(fail_path, failures)
    io.write_jsonl(out, records)
    return SampleResult(out, len(positions), len(records), len(failures))


def run_filter(*, data_dir: str | Path, model_name: str, member_steps: tuple[int, int],
               nonmember_steps: tuple[int, int], num_data: int, max_length: int,
               batch_size: int, overwrite: bool = False) -> tuple[Path, int]:
    """The balanced pool ``data/{model}_{L}_{N}.jsonl`` (members first)."""
    out = Path(data_dir) / f"{pool_name(model_name, max_length, num_data)}.jsonl"
    if out.exists() and not overwrite:
        raise io.InputError(out, "output exists (pass --overwrite to replace it)")
    recs = pool.build_pool(sample_dir(data_dir, model_name, *member_steps),
                           sample_dir(data_dir, model_name, *nonmember_steps), num_data,
                           max_length, batch_size, member_steps, nonmember_steps)
    io.write_jsonl(out, recs)
    return out, len(recs)


def read_texts(path: str | Path) -> list[dict[str, Any]]:
    return io.read_jsonl(path, required=("input", "label"))


def run_vecs(*, data_dir: str | Path, dataset_name: str, model: str | None, max_length: int,
             batch_size: int, instruction: str, device: str | None,
             overwrite: bool = False, progress: bool = True) -> tuple[Path, tuple[int, int]]:
    """Embed the pool's texts: ``data/vecs/{dataset_name}.npy``, rows in pool order.

    Under torchrun each rank embeds a strided shard; rank 0 writes the gathered rows, which
    equal a one-rank run (each text's embedding does not depend on its batch mates beyond
    floating-point padding effects, which the attention mask removes).
    """
    from anatomy import lm

    out = Path(data_dir) / "vecs" / f"{dataset_name}.npy"
    if out.exists() and not overwrite:
        raise io.InputError(out, "output exists (pass --overwrite to replace it)")
    texts = [r["input"] for r in read_texts(Path(data_dir) / f"{dataset_name}.jsonl")]
    emb = lm.load_embedder(model, device=device)
    rank, world = lm.dist_info()
    idx = lm.shard_indices(len(texts), rank, world)
    vecs = lm.embed_texts(emb, [texts[i] for i in idx], batch_size=batch_size,
                          max_length=max_length, instruction=instruction, progress=progress)
    rows = lm.gather_ordered(list(vecs), idx, len(texts))
    arr = np.stack(rows).astype(np.float32) if rows else np.zeros((0, 0), np.float32)
    if rank == 0:
        io.save_npy(out, arr)
    return out, arr.shape


def run_clustering(*, data_dir: str | Path, model_name: str, max_length: int, num_data: int,
                   num_sample: int, num_cluster: int, min_inter_dist: float, seed: int,
                   min_cross_dist: float | None = None, niter: int = 50,
                   overwrite: bool = False) -> list[dict[str, Any]]:
    """Random / Mix-1 / Mix-2 / Easy / Medium / Hard splits, the histogram, and stats."""
    name = pool_name(model_name, max_length, num_data)
    recs = read_texts(Path(data_dir) / f"{name}.jsonl")
    vecs = io.load_npy(Path(data_dir) / "vecs" / f"{name}.npy")
    if len(vecs) != len(recs):
        raise io.InputError(Path(data_dir) / "vecs" / f"{name}.npy",
                            f"{len(vecs)} vectors for {len(recs)} pool records")
    outs = {s: Path(data_dir) / f"{model_name}_{max_length}_{num_sample}_{s}.jsonl"
            for s in clustering.SPLITS}
    if not overwrite:
        for p in outs.values():
            if p.exists():
                raise io.InputError(p, "output exists (pass --overwrite to replace it)")
    labels = np.array([int(r["label"]) for r in recs])
    splits = clustering.build_splits(vecs, labels, num_sample, num_cluster, min_inter_dist, seed,
                                     min_cross_dist, niter=niter, random_seed=seed)
    stats = []
    for s in clustering.SPLITS:
        io.write_jsonl(outs[s], clustering.split_records(recs, splits[s]))
        stats.append(splits[s].stats())
    stem = Path(data_dir) / f"{model_name}_{max_length}_{num_sample}"
    clustering.plot_distance_histogram(vecs, labels, f"{stem}.png")
    io.write_json(Path(data_dir) / f"{model_name}_{max_length}_{num_sample}_stats.json", stats)
    return stats


def control_splits(world_dir: str | Path, data_dir: str | Path, min_count: int = 8,
                   overwrite: bool = False) -> dict[str, Path]:
    """The miniworld's known-answer splits, from its truth file.

    - ``{model}_control.jsonl``: passages planted >= ``min_count`` times in the member window
      (label 1) vs passages of the same candidate pool seen once in the non-member window
      (label 0);
    - ``{model}_planted.jsonl``: every planted passage (field ``planted`` = k) and the same
      controls (``planted`` = 0), for AUROC by exposure count.
    """
    from anatomy.lm import load_tokenizer
    from anatomy.world.truth import World

    w = World.open(world_dir)
    tok = load_tokenizer(w.root / "tokenizer")
    name = f"miniworld-{w.truth['preset']['name']}"

    def rec(row: dict, label: int, planted: int) -> dict:
        text = tok.decode(w.doc_tokens(row["doc"]).tolist())
        return {"input": text, "label": label, "planted": planted, "doc": row["doc"],
                "category": row["category"], "length": row["length"]}

    controls = [rec(r, 0, 0) for r in w.planted("mia_control")]
    mia = [rec(r, 1, r["planted"]) for r in w.planted("mia")]
    outs = {"control": Path(data_dir) / f"{name}_control.jsonl",
            "planted": Path(data_dir) / f"{name}_planted.jsonl"}
    for p in outs.values():
        if p.exists() and not overwrite:
            raise io.InputError(p, "output exists (pass --overwrite to replace it)")
    io.write_jsonl(outs["control"], [r for r in mia if r["planted"] >= min_count] + controls)
    io.write_jsonl(outs["planted"], mia + controls)
    return outs
