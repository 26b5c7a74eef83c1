"""OLMoMIA benchmark construction, one entry point per pipeline step (the scripts call these).

sample -> filter -> vecs -> clustering, file names as the published tools write them
(``data/sample/OLMo-7B_step0:100000/0:1000.jsonl``, ``data/OLMo-7B_128_10000.jsonl``,
``data/vecs/OLMo-7B_128_10000.npy``, ``data/OLMo-7B_128_1000_hard.jsonl``), plus the
miniworld's control splits built from its truth file.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from anatomy import execution, io
from anatomy.embed_pass import EmbedStep
from anatomy.mia import clustering, pool, sampling

if TYPE_CHECKING:
    from anatomy.truth import World

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


def sample_fingerprint(data, *, step_start: int, step_end: int, sample_start: int,
                       sample_end: int, seed: int, eos_id: int, tokenizer: str | None
                       ) -> execution.Fingerprint:
    """What an interval file depends on: the config, data order, tokenizer, B, EOS and seed."""
    return execution.fingerprint(
        "sample", {"config": data.config.path, "data_order": data.order.source,
                   "token_files": list(data.config.paths), "tokenizer": tokenizer},
        {"step_start": step_start, "step_end": step_end, "sample_start": sample_start,
         "sample_end": sample_end, "seed": seed, "batch_size": data.batch_size,
         "eos_id": eos_id})


def run_sample(data, decode, *, step_start: int, step_end: int, sample_start: int,
               sample_end: int, seed: int, eos_id: int, out_dir: str | Path, model_name: str,
               tokenizer: str | None = None, vocab: str | None = None,
               overwrite: bool = False) -> SampleResult:
    """Draw positions as published, fetch and split their instances, write the JSONL.

    ``data`` is an :class:`anatomy.olmo_data.OlmoData`; ``vocab`` the data tokenizer's
    :func:`anatomy.lm.vocab_digest`, stored with each record's ``input_ids``. Writes
    ``{S0}:{S1}.jsonl`` and ``{S0}:{S1}.failures.jsonl`` (one record per position whose
    fetch failed, never
    dropped), then the marker ``{S0}:{S1}.jsonl.done.json`` with the fingerprint (config,
    data order, ``tokenizer``, B, EOS id, seed). A rerun with the same fingerprint is
    skipped (a bash loop resumes); one with another B or seed is refused, unless
    ``overwrite``.
    """
    folder = sample_dir(out_dir, model_name, step_start, step_end)
    out = folder / f"{sample_start}:{sample_end}.jsonl"
    fail_path = folder / f"{sample_start}:{sample_end}.failures.jsonl"
    if not 0 <= step_start < step_end:
        raise io.InputError(None, f"need 0 <= step_start < step_end, got {step_start}:{step_end}")
    fp = sample_fingerprint(data, step_start=step_start, step_end=step_end,
                            sample_start=sample_start, sample_end=sample_end, seed=seed,
                            eos_id=eos_id, tokenizer=tokenizer)
    output = execution.Output.file(out, fail_path)
    if not execution.check_output(output, fp, overwrite):
        s = execution.recorded_summary(output)
        return SampleResult(out, s.get("positions", 0), s.get("records", 0),
                            s.get("failures", 0), skipped=True)
    check_token_files(data)
    n_steps = data.n_steps
    if step_end > n_steps:
        raise io.InputError(data.order.source, f"the data order holds {n_steps} steps of "
                                               f"{data.batch_size}; step_end {step_end} is beyond")
    positions = sampling.draw_positions(step_start, step_end, data.batch_size, sample_start,
                                        sample_end, seed)
    records, failures = sampling.sample_records(positions, data.tokens_at_positions, eos_id,
                                                decode, vocab=vocab)
    io.write_jsonl(fail_path, failures)
    io.write_jsonl(out, records)
    summary = {"positions": len(positions), "records": len(records),
               "failures": len(failures)}
    execution.mark_output(output, fp, summary)
    return SampleResult(out, len(positions), len(records), len(failures))


def check_token_files(data) -> None:
    """Token files as they were at training time, or a warning that this is unknown.

    With ``data_anatomy.token_file_bytes`` in the config every file's size is checked (a
    changed file is one error naming it, :class:`anatomy.token_files.TokenFiles`). Without
    it, a local data order is checked against the files' instance count (the OLMo #538
    check; failures are then counted per position) and the sizes are said to be unverified.
    """
    from anatomy.byte_ranges import is_remote

    len(data.files)  # sizes every file, and checks them against the recorded sizes
    if data.config.token_file_bytes is not None:
        return
    log.warning("%s: token file sizes not verified (the config records no "
                "data_anatomy.token_file_bytes); a file changed since training would shift "
                "every later instance", data.config.path)
    if not is_remote(data.order.source):
        data.coverage(strict=False)  # warns when the order names more instances than exist


def run_filter(*, data_dir: str | Path, model_name: str, member_steps: tuple[int, int],
               nonmember_steps: tuple[int, int], num_data: int, max_length: int,
               batch_size: int, overwrite: bool = False) -> tuple[Path, int, bool]:
    """The balanced pool ``data/{model}_{L}_{N}.jsonl`` (members first).

    Returns ``(path, records, skipped)``; the output policy of :mod:`anatomy.execution`
    (inputs: the two sample folders' interval files).
    """
    out = Path(data_dir) / f"{pool_name(model_name, max_length, num_data)}.jsonl"
    mem_dir = sample_dir(data_dir, model_name, *member_steps)
    non_dir = sample_dir(data_dir, model_name, *nonmember_steps)
    fp = execution.fingerprint(
        "filter", {"member_samples": mem_dir, "nonmember_samples": non_dir},
        {"member_steps": member_steps, "nonmember_steps": nonmember_steps,
         "num_data": num_data, "max_length": max_length, "batch_size": batch_size})
    output = execution.Output.file(out)
    if not execution.check_output(output, fp, overwrite):
        return out, execution.recorded_summary(output).get("records", 0), True
    recs = pool.build_pool(mem_dir, non_dir, num_data, max_length, batch_size, member_steps,
                           nonmember_steps)
    io.write_jsonl(out, recs)
    execution.mark_output(output, fp, {"records": len(recs)})
    return out, len(recs), False


def read_texts(path: str | Path) -> list[dict[str, Any]]:
    return io.read_jsonl(path, required=("input", "label"))


def run_vecs(*, data_dir: str | Path, dataset_name: str, model: str | None, max_length: int,
             batch_size: int, instruction: str, device: str | None, ranks=None,
             overwrite: bool = False, merge: bool = False, progress: bool = True
             ) -> execution.StepResult:
    """Embed the pool's texts: ``data/vecs/{dataset_name}.npy``, rows in pool order.

    Units are whole batches of the length-sorted plan, so any number of ``ranks`` writes the
    bytes of one; the embedder is loaded only by a rank with units to compute.
    """
    from anatomy import lm

    ranks = ranks or execution.Ranks()
    out = Path(data_dir) / "vecs" / f"{dataset_name}.npy"
    src = Path(data_dir) / f"{dataset_name}.jsonl"
    texts = [r["input"] for r in read_texts(src)]
    if not texts:
        raise io.InputError(src, "the pool is empty: nothing to embed")
    dev = lm.resolve_device(device, ranks.local_rank)
    emb_src = str(lm.default_embedder_path()) if model is None else model
    fp = execution.fingerprint(
        "generate_vecs", {"pool": src, "embedder": emb_src},
        {"max_length": max_length, "batch_size": batch_size, "instruction": instruction,
         "device": dev.type, "precision": lm.resolve_precision(dev)})
    step = EmbedStep(texts, out, fp, batch_size=batch_size, max_length=max_length,
                     instruction=instruction, name="generate_vecs")
    step.on_cpu = dev.type == "cpu"

    def prepare():
        step.embedder = lm.load_embedder(model, device=str(dev))

    return execution.run_step(step, ranks, overwrite=overwrite, merge_only=merge,
                              prepare=prepare, show_progress=progress)


def run_clustering(*, data_dir: str | Path, model_name: str, max_length: int, num_data: int,
                   num_sample: int, num_cluster: int, min_inter_dist: float, seed: int,
                   min_cross_dist: float | None = None, niter: int = 50,
                   world: str | Path | None = None,
                   overwrite: bool = False) -> list[dict[str, Any]]:
    """Random / Mix-1 / Mix-2 / Easy / Medium / Hard splits, the histogram, and stats.

    With a miniworld (``world``), each split's stats also count its planted passages, by
    kind, and its fillers (records that are no whole document), from the records' token ids
    (the paper's splits should hold neither)."""
    name = pool_name(model_name, max_length, num_data)
    recs = read_texts(Path(data_dir) / f"{name}.jsonl")
    vec_path = Path(data_dir) / "vecs" / f"{name}.npy"
    vecs = io.load_npy(vec_path)
    if vecs.ndim != 2 or len(vecs) != len(recs):
        raise io.InputError(vec_path, f"{vecs.shape} vectors for {len(recs)} pool records")
    bad = np.flatnonzero(~np.isfinite(vecs).all(axis=1))
    if bad.size:
        raise io.InputError(vec_path, f"row {bad[0]} (pool record {bad[0] + 1}) holds NaN or "
                                      f"inf values ({bad.size} rows in all): re-embed the pool")
    stem = Path(data_dir) / f"{model_name}_{max_length}_{num_sample}"
    outs = {s: Path(f"{stem}_{s}.jsonl") for s in clustering.SPLITS}
    stats_path = Path(f"{stem}_stats.json")
    output = execution.Output([*outs.values(), Path(f"{stem}.png"), stats_path],
                              Path(f"{stem}_splits.done.json"))
    fp = execution.fingerprint(
        "clustering", {"pool": Path(data_dir) / f"{name}.jsonl",
                       "vecs": Path(data_dir) / "vecs" / f"{name}.npy",
                       "truth": None if world is None else Path(world) / "truth.json"},
        {"num_sample": num_sample, "num_cluster": num_cluster,
         "min_inter_dist": min_inter_dist, "min_cross_dist": min_cross_dist, "seed": seed,
         "niter": niter})
    if not execution.check_output(output, fp, overwrite):
        return io.read_json(stats_path)
    labels = np.array([int(r["label"]) for r in recs])
    splits = clustering.build_splits(vecs, labels, num_sample, num_cluster, min_inter_dist, seed,
                                     min_cross_dist, niter=niter, random_seed=seed)
    stats = []
    if world is not None:
        from anatomy.truth import World

        world = World.open(world)  # read once for every split
    for s in clustering.SPLITS:
        io.write_jsonl(outs[s], clustering.split_records(recs, splits[s]))
        st = splits[s].stats()
        if world is not None:
            st["planted"] = plant_share([recs[i] for i in splits[s].rows], world)
        stats.append(st)
    clustering.plot_distance_histogram(vecs, labels, f"{stem}.png")
    io.write_json(stats_path, stats)
    execution.mark_output(output, fp)
    return stats


def plant_share(records: list[dict[str, Any]], world: str | Path | World) -> dict[str, Any]:
    """How many of the records are planted passages of the miniworld, by kind, matched on
    their ``input_ids``, and how many are ``fillers``: non-empty records whose ids are no
    whole document of the world (a document's head cut short, as the truth's docs table
    marks ``filler`` in worlds built before fillers were removed, or any other cut span).
    Records without ids are counted as unknown."""
    from anatomy.truth import World

    w = world if isinstance(world, World) else World.open(world)
    whole = {r["sha1"] for r in w.docs.values() if "filler" not in r["kinds"]}
    kinds: dict[str, int] = {}
    unknown = fillers = 0
    for r in records:
        if r.get("input_ids") is None:
            unknown += 1
            continue
        k = w.plant_kind(r["input_ids"])
        if k is not None:
            kinds[k] = kinds.get(k, 0) + 1
        blob = np.asarray(r["input_ids"], dtype="<u2").tobytes()
        if blob and hashlib.sha1(blob).hexdigest() not in whole:
            fillers += 1
    n = len(records) - unknown
    return {"n": sum(kinds.values()), "share": sum(kinds.values()) / n if n else None,
            "by_kind": dict(sorted(kinds.items())), "fillers": fillers, "unknown": unknown}


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
    from anatomy.truth import World

    w = World.open(world_dir)
    name = w.name
    outs = {"control": Path(data_dir) / f"{name}_control.jsonl",
            "planted": Path(data_dir) / f"{name}_planted.jsonl"}
    fp = execution.fingerprint("control_split", {"truth": w.root / "truth.json",
                                                 "tokenizer": w.root / "tokenizer"},
                               {"min_count": min_count})
    output = execution.Output.file(outs["control"], outs["planted"])
    if not execution.check_output(output, fp, overwrite):
        return outs
    tok = load_tokenizer(w.root / "tokenizer")

    def rec(row: dict, label: int, planted: int) -> dict:
        text = tok.decode(w.doc_tokens(row["doc"]).tolist())
        return {"input": text, "label": label, "planted": planted, "doc": row["doc"],
                "category": row["category"], "length": row["length"]}

    controls = [rec(r, 0, 0) for r in w.planted("mia_control")]
    mia = [rec(r, 1, r["planted"]) for r in w.planted("mia")]
    io.write_jsonl(outs["control"], [r for r in mia if r["planted"] >= min_count] + controls)
    io.write_jsonl(outs["planted"], mia + controls)
    execution.mark_output(output, fp)
    return outs
