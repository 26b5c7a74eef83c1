"""Build the miniworld: a miniature, fully known pretraining run (see ../shared/DESIGN.md).

``build_world(preset, out, seed)`` writes, deterministically for a seed:

- ``corpus/manifest.json``: every source file read, with its sha256;
- ``tokenizer/``: an HF byte-level BPE tokenizer (``AutoTokenizer.from_pretrained``);
- ``tokens/part-00N-00000.npy``: OLMo token files (raw uint16, no header, a dropped tail);
- ``global_indices.npy``: OLMo's data order (raw uint32, a PCG64 permutation);
- ``config.yaml``: an OLMo TrainConfig naming them (relative paths);
- ``model/step{S}-tokens{T}K/``: HF checkpoints at T1, 2T1, 3T1, T2 and T3; ``model/`` = final;
- ``pools/train/chunkN/example_train_M.jsonl.zst``: SlimPajama-layout category pools;
- ``truth.json`` and ``truth/``: the mixture, the instances each checkpoint saw, every planted
  copy's position, per-token categories, the documents table, pool membership.

The whole folder is built under a temporary name and renamed into place at the end.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from anatomy import io
from anatomy.data_order import write_data_order
from anatomy.token_files import write_token_file
from anatomy.world import layout
from anatomy.world.corpus import CATEGORIES, iter_category
from anatomy.world.presets import Preset
from anatomy.world.tokenizer import PAD_ID, SEPARATOR, train_tokenizer

log = logging.getLogger("anatomy.world")

FORMAT = "data-anatomy-miniworld/1"
CHARS_PER_TOKEN = 5.0  # generous: collect more text than needed (measured ~3.3 on small)
SET_PREFIX = "World"
MIA_CATEGORIES = ("docs", "reference")  # pool set names: WorldCode, WorldDocs, ...


def set_name(category: str) -> str:
    return SET_PREFIX + category.capitalize()


def _sha1_tokens(toks: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(toks, dtype="<u2").tobytes()).hexdigest()


def _templates(n: int, rng: np.random.Generator) -> list[tuple[str, dict]]:
    """Incrementing sequences and repeating strings, ``n`` of each kind."""
    out = []
    fmts = ["{i}, ", "row {i}: {v}\n", "0x{i:04x} ", "item_{i} = {v}\n"]
    for _ in range(n):
        f = fmts[int(rng.integers(len(fmts)))]
        start, step, count = int(rng.integers(0, 5000)), int(rng.integers(1, 8)), int(
            rng.integers(16, 40))
        text = "".join(f.format(i=start + j * step, v=(start + j * step) * 3)
                       for j in range(count)).strip()
        out.append((text, {"kind": "incrementing", "format": f, "start": start, "step": step,
                           "count": count}))
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    for _ in range(n):
        unit = "".join(rng.choice(letters, int(rng.integers(2, 7))))
        sep = [" ", "", "-", "\n"][int(rng.integers(4))]
        reps = int(rng.integers(20, 60))
        out.append((sep.join([unit] * reps), {"kind": "repeating", "unit": unit, "sep": sep,
                                               "repeats": reps}))
    return out


def build_world(preset: Preset, out: str | os.PathLike, seed: int = 0, progress=None,
                evidence: bool = True) -> dict:
    """Build a miniworld into ``out`` (must not exist). Returns the truth dict."""
    out = Path(out)
    if out.exists():
        raise io.InputError(out, "output folder exists (remove it or pass --overwrite)")
    tmp = out.with_name(f".{out.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    timing: dict[str, float] = {}
    t0 = time.time()
    P = preset
    L, B = P.seq_len, P.batch_size
    n_inst = P.steps * B + P.extra_instances
    train_tokens = P.steps * B * L
    rng = np.random.default_rng(seed)

    # 1. corpus -------------------------------------------------------------------------
    total_tokens = n_inst * L + P.n_token_files * L
    docs: list[dict] = []  # {text, category, source, part}
    manifest: dict[str, str] = {}
    seen_text: set[str] = set()
    for cat in CATEGORIES:
        budget = P.mixture[cat] * total_tokens * CHARS_PER_TOKEN + P.pool_size * 800
        got = 0
        for d, src, sha in iter_category(cat, seed):
            key = d.text.strip()
            if key in seen_text:
                continue
            seen_text.add(key)
            manifest[src] = sha
            docs.append({"text": d.text, "category": cat, "source": d.source, "part": d.part})
            got += len(d.text)
            if got >= budget:
                break
        log.info("corpus %-9s %6.0f KB from %d docs", cat, got / 1e3,
                 sum(1 for x in docs if x["category"] == cat))
    templates = _templates(P.n_templates, rng)
    for text, params in templates:
        docs.append({"text": text, "category": "data", "source": "template", "part": 0,
                     "template": params})
    timing["corpus"] = time.time() - t0

    # 2. tokenizer ----------------------------------------------------------------------
    t = time.time()
    tok = train_tokenizer([d["text"] for d in docs], P.vocab_size, tmp / "tokenizer")
    eos_id = tok.token_to_id(SEPARATOR)
    encs = tok.encode_batch([d["text"] for d in docs])
    doc_tokens = [np.asarray(e.ids, dtype=np.uint16) for e in encs]
    cat_index = {c: i for i, c in enumerate(CATEGORIES)}
    doc_cat = [cat_index[d["category"]] for d in docs]
    timing["tokenizer"] = time.time() - t

    # 3. split documents: plant sources, held-out pool docs, regular training docs ------
    lengths = np.array([len(x) for x in doc_tokens])
    is_template = np.array(["template" in d for d in docs])
    idx = rng.permutation(len(docs))
    idx = idx[~is_template[idx] & (lengths[idx] > 0)]
    used: set[int] = set()

    def take(mask_fn, n: int) -> list[int]:
        picked = [int(i) for i in idx if int(i) not in used and mask_fn(int(i))][:n]
        if len(picked) < n:
            raise RuntimeError(f"corpus too small: needed {n} documents, found {len(picked)}")
        used.update(picked)
        return picked

    # membership passages: fit the OLMoMIA length filter for L=64 (32 < len <= 64)
    # and as many once-seen non-member controls from the same candidates, planted once in
    # [T2, T3): same length and category distribution as the planted members
    n_mia = P.mia_per_count * len(P.mia_counts)
    # Prose only (docstrings, reference text): their intrinsic difficulty varies far less
    # than code or data rows, whose loss spread would swamp the effect of exposure.
    mia_docs = take(lambda i: 40 <= lengths[i] <= 60 and docs[i]["category"] in MIA_CATEGORIES,
                    2 * n_mia)
    mia_docs, mia_controls = mia_docs[:n_mia], mia_docs[n_mia:]
    # memorization passages: a 32-token prefix + 32-token suffix fits in one instance, and
    # at > 64 tokens they never enter an L=64 membership pool
    n_mem = P.mem_dense[0] + P.mem_spread[0] + P.mem_late[0]
    mem_docs = take(lambda i: 72 <= lengths[i] <= L - 16, n_mem)
    heldout: dict[str, list[int]] = {}
    for c in CATEGORIES:
        n_ho = P.pool_size - round(P.pool_rates[c] * P.pool_size)
        heldout[c] = take(lambda i, c=c: docs[i]["category"] == c, n_ho)
    template_docs = [i for i in range(len(docs)) if is_template[i]]

    # 4. plants: target offsets in the training stream -------------------------------
    plants: list[tuple[int, str, int]] = []
    member_tokens = P.member_end * B * L
    margin = 2 * L
    mia_count = {}
    for j, d in enumerate(mia_docs):
        k = P.mia_counts[j // P.mia_per_count]
        mia_count[d] = k
        plants += [(d, "mia", int(o)) for o in rng.integers(0, member_tokens - margin, k)]
    nonmember_lo = P.nonmember_start * B * L
    plants += [(d, "mia_control", int(rng.integers(nonmember_lo, train_tokens - margin)))
               for d in mia_controls]
    # dense memorization plants end where the non-member window starts, so that window's
    # once-seen documents are not crowded out by (or mixed with) heavily repeated text
    n_dense, copies_dense, window = P.mem_dense
    lo = (P.nonmember_start - window) * B * L
    for d in mem_docs[:n_dense]:
        plants += [(d, "mem_dense", int(o)) for o in rng.integers(lo, nonmember_lo - margin,
                                                                   copies_dense)]
    n_spread = P.mem_spread[0]
    for d in mem_docs[n_dense:n_dense + n_spread]:
        plants += [(d, "mem_spread", int(o)) for o in rng.integers(0, train_tokens - margin,
                                                                    P.mem_spread[1])]
    # a few dense passages in the last steps: exact recall at the final checkpoint (longer
    # than 64 tokens, so never in an L=64 membership pool of the non-member window)
    n_late, copies_late, window_late = P.mem_late
    for d in mem_docs[n_dense + n_spread:]:
        plants += [(d, "mem_late", int(o)) for o in rng.integers(
            (P.steps - window_late) * B * L, train_tokens - margin, copies_late)]
    for d in template_docs:
        plants.append((d, "template", int(rng.integers(0, train_tokens - margin))))

    # 5. regular documents, categories drawn in proportion to their token shares ---------
    pools_by_cat = {c: [int(i) for i in idx if int(i) not in used and docs[i]["category"] == c]
                    for c in CATEGORIES}
    mean_len = {c: max(1.0, float(np.mean(lengths[v]))) if v else 1.0
                for c, v in pools_by_cat.items()}
    ptr = dict.fromkeys(CATEGORIES, 0)
    regular: list[int] = []
    need = total_tokens + sum(len(doc_tokens[p[0]]) + 1 for p in plants)
    have = 0
    while have < need:
        live = [c for c in CATEGORIES if ptr[c] < len(pools_by_cat[c])]
        if not live:
            break
        w = np.array([P.mixture[c] / mean_len[c] for c in live])
        c = live[int(rng.choice(len(live), p=w / w.sum()))]
        d = pools_by_cat[c][ptr[c]]
        ptr[c] += 1
        regular.append(d)
        have += len(doc_tokens[d]) + 1

    # 6. the stream, cut into instances and tails; the data order; storage -------------
    tails = [int(x) for x in rng.integers(1, L, P.n_token_files)]
    stream = layout.build_stream(regular, plants, doc_tokens, doc_cat, eos_id,
                                 n_inst * L + sum(tails))
    inst = stream.tokens[: n_inst * L].reshape(n_inst, L)
    inst_cat = stream.categories[: n_inst * L].reshape(n_inst, L)
    tail_toks = np.split(stream.tokens[n_inst * L:], np.cumsum(tails)[:-1])
    tail_cats = np.split(stream.categories[n_inst * L:], np.cumsum(tails)[:-1])
    order = layout.data_order(n_inst, seed)
    storage = layout.storage_layout(inst, order)
    storage_cat = layout.storage_layout(inst_cat, order)
    paths, cat_paths = [], []
    (tmp / "tokens").mkdir()
    (tmp / "truth" / "categories").mkdir(parents=True)
    for f, (a, b) in enumerate(layout.split_files(n_inst, P.n_token_files)):
        name = f"part-{f:03d}-00000.npy"
        write_token_file(tmp / "tokens" / name, [storage[a:b].ravel(), tail_toks[f]], "uint16")
        write_token_file(tmp / "truth" / "categories" / name,
                         [storage_cat[a:b].ravel(), tail_cats[f]], "uint8")
        paths.append(f"tokens/{name}")
        cat_paths.append(f"truth/categories/{name}")
    write_data_order(tmp / "global_indices.npy", order)

    # 7. config ---------------------------------------------------------------------------
    revisions = {s: _revision(s, B, L) for s in P.checkpoints}
    config = {
        "run_name": f"miniworld-{P.name}",
        "seed": seed,
        "model": {"d_model": P.d_model, "n_layers": P.n_layers, "n_heads": P.n_heads,
                  "max_sequence_length": L, "vocab_size": P.vocab_size,
                  "embedding_size": P.vocab_size, "eos_token_id": eos_id,
                  "pad_token_id": PAD_ID, "weight_tying": True},
        "tokenizer": {"identifier": "tokenizer/tokenizer.json"},
        "global_train_batch_size": B,
        "max_duration": P.steps,
        "data": {"paths": paths, "memmap_dtype": "uint16"},
        "data_anatomy": {
            "model_name": f"miniworld-{P.name}",
            "global_indices": "global_indices.npy",
            "batch_size": B,
            "tokenizer": "tokenizer",
            "model": "model",
            "checkpoints": {int(s): r for s, r in revisions.items()},
            "member_steps": [0, P.member_end],
            "nonmember_steps": [P.nonmember_start, P.steps],
            "pools": "pools",
        },
    }
    io.write_yaml(tmp / "config.yaml", config)
    timing["layout"] = time.time() - t - timing["tokenizer"]

    # 8. train ----------------------------------------------------------------------------
    from anatomy.world.train import make_model, train

    t = time.time()
    model = make_model(P.vocab_size, L, P.d_model, P.n_layers, P.n_heads, eos_id, PAD_ID, seed)
    ckpts = {s: tmp / "model" / r for s, r in revisions.items()}
    stats = train(storage, order, steps=P.steps, batch_size=B, lr=P.lr, model=model,
                  checkpoints=ckpts, tokenizer_dir=tmp / "tokenizer", seed=seed,
                  progress=progress)
    for name in os.listdir(ckpts[P.steps]):  # model/ itself is the final checkpoint ("main")
        shutil.copy2(ckpts[P.steps] / name, tmp / "model" / name)
    n_params = sum(p.numel() for p in model.parameters())
    timing["train"] = time.time() - t

    # 9. truth: occurrences, plants, checkpoints, pools ---------------------------------------
    t = time.time()
    trained_slots = P.steps * B
    occ_by_doc: dict[int, list[layout.Occurrence]] = {}
    for o in stream.occurrences:
        occ_by_doc.setdefault(o.doc, []).append(o)

    def slots(o: layout.Occurrence) -> list[int]:
        return [o.offset // L, (o.offset + o.length) // L]

    def plant_rows(kind: str, ids: list[int], extra=None) -> list[dict]:
        rows = []
        for d in ids:
            occs = [o for o in occ_by_doc.get(d, []) if o.kind == kind]
            sl = sorted(slots(o)[0] for o in occs)
            row = {"doc": d, "sha1": _sha1_tokens(doc_tokens[d]), "category": docs[d]["category"],
                   "length": int(lengths[d]), "count": len(occs),
                   "trained_count": sum(1 for o in occs if slots(o)[1] < trained_slots),
                   "slots": sl, "steps": [s // B for s in sl]}
            if extra:
                row.update(extra(d))
            rows.append(row)
        return rows

    mixture_tokens = np.bincount(stream.categories[:train_tokens], minlength=len(CATEGORIES))
    planted = {
        "mia": plant_rows("mia", mia_docs, lambda d: {"planted": mia_count[d]}),
        "mia_control": plant_rows("mia_control", mia_controls),
        "mem_dense": plant_rows("mem_dense", mem_docs[:n_dense]),
        "mem_spread": plant_rows("mem_spread", mem_docs[n_dense:n_dense + n_spread]),
        "mem_late": plant_rows("mem_late", mem_docs[n_dense + n_spread:]),
        "templates": plant_rows("template", template_docs,
                                lambda d: {"template": docs[d]["template"]}),
    }
    (tmp / "truth" / "seen").mkdir()
    checkpoints = []
    for s in P.checkpoints:
        seen = np.sort(order[: s * B])
        io.save_npy(tmp / "truth" / "seen" / f"step{s}.npy", seen)
        checkpoints.append({"step": s, "revision": revisions[s], "path": f"model/{revisions[s]}",
                            "tokens": s * B * L, "slots": [0, s * B],
                            "seen_instances": f"truth/seen/step{s}.npy"})
    pools, pool_docs = _write_pools(tmp, P, docs, doc_tokens, occ_by_doc, heldout,
                                    trained_slots, L, rng)
    _write_unseen(tmp, docs, set(occ_by_doc) | pool_docs, seed, max(200, P.pool_size))
    doc_rows = []
    for d in sorted(occ_by_doc):
        occs = occ_by_doc[d]
        doc_rows.append({"doc": d, "category": docs[d]["category"], "source": docs[d]["source"],
                         "part": docs[d]["part"], "length": int(lengths[d]),
                         "sha1": _sha1_tokens(doc_tokens[d]),
                         "kinds": sorted({o.kind for o in occs}),
                         "occurrences": [[o.offset] + slots(o) for o in occs]})
    io.write_jsonl(tmp / "truth" / "docs.jsonl.gz", doc_rows)
    io.write_json(tmp / "corpus" / "manifest.json",
                  {"sources": dict(sorted(manifest.items())), "n_docs": len(docs)})
    timing["truth"] = time.time() - t

    truth = {
        "format": FORMAT,
        "preset": P.to_dict(),
        "seed": seed,
        "categories": list(CATEGORIES),
        "vocab_size": P.vocab_size, "eos_token_id": eos_id, "pad_token_id": PAD_ID,
        "seq_len": L, "batch_size": B, "n_instances": n_inst,
        "n_trained_instances": trained_slots,
        "token_files": paths, "category_files": cat_paths, "tails": tails,
        "steps": {"member": [0, P.member_end], "nonmember": [P.nonmember_start, P.steps],
                  "total": P.steps},
        "mixture": {c: float(mixture_tokens[i] / train_tokens) for i, c in enumerate(CATEGORIES)},
        "mixture_tokens": {c: int(mixture_tokens[i]) for i, c in enumerate(CATEGORIES)},
        "checkpoints": checkpoints,
        "model": {"n_params": int(n_params), "bf16": stats["bf16"],
                  "final_loss": float(np.mean(stats["loss"][-10:]))},
        "planted": planted,
        "pools": pools,
        "train": {"loss": stats["loss"], "batch_sha1": stats["batch_sha1"]},
    }
    io.write_json(tmp / "truth.json", truth, indent=1)
    write_mixture_spec(tmp)
    timing["total_before_evidence"] = time.time() - t0
    os.replace(tmp, out)
    log.info("built %s in %.0fs (%s)", out, time.time() - t0,
             ", ".join(f"{k} {v:.0f}s" for k, v in timing.items()))
    truth["timing"] = timing
    return truth


def world_fingerprint(preset: Preset, seed: int):
    """What a built world records in ``WORLD/done.json``: the preset, the seed, our version.

    (The corpus also depends on the installed packages' files; ``corpus/manifest.json``
    lists every one with its sha256.)"""
    from anatomy import execution

    return execution.fingerprint("build_world", {}, {"preset": preset.to_dict(), "seed": seed})


def build_world_once(preset: Preset, out: str | os.PathLike, seed: int = 0, progress=None,
                     overwrite: bool = False) -> dict | None:
    """:func:`build_world` under the output policy of :mod:`anatomy.execution`.

    A world built from the same preset and seed (its ``done.json``) is kept and None
    returned; another preset or seed, or a folder without the marker, is refused unless
    ``overwrite`` (which removes the folder first).
    """
    from anatomy import execution

    out = Path(out)
    fp = world_fingerprint(preset, seed)
    output = execution.Output.folder(out, ["truth.json", "config.yaml"])
    if not execution.check_output(output, fp, overwrite):
        return None
    if out.exists():
        shutil.rmtree(out)
    truth = build_world(preset, out, seed=seed, progress=progress)
    execution.mark_output(output, fp, {"n_params": truth["model"]["n_params"]})
    return truth


def _revision(step: int, batch_size: int, seq_len: int) -> str:
    from anatomy.world.train import revision_name

    return revision_name(step, batch_size, seq_len)


def _write_pools(root: Path, P: Preset, docs, doc_tokens, occ_by_doc, heldout, trained_slots,
                 L: int, rng: np.random.Generator) -> dict:
    """SlimPajama-layout pools: per category, trained documents at a known rate + held-out."""
    rows = []
    cats = {}
    for c in CATEGORIES:
        trained = sorted(d for d, occs in occ_by_doc.items()
                         if docs[d]["category"] == c and "template" not in docs[d]
                         and all(o.kind == "regular" for o in occs)
                         and all((o.offset + o.length) // L < trained_slots for o in occs))
        n_tr = round(P.pool_rates[c] * P.pool_size)
        if n_tr > len(trained):
            raise RuntimeError(f"corpus too small: the pool of {c} needs {n_tr} documents seen "
                               f"once in training, the stream holds {len(trained)}")
        pick = [trained[i] for i in sorted(rng.choice(len(trained), n_tr, replace=False))]
        rows += [(d, c, True) for d in pick] + [(d, c, False) for d in heldout[c]]
        cats[c] = {"set_name": set_name(c), "n": n_tr + len(heldout[c]), "n_trained": n_tr,
                   "rate": n_tr / (n_tr + len(heldout[c]))}
    perm = rng.permutation(len(rows))
    shards = [f"train/chunk{c}/example_train_{m}.jsonl.zst" for c in (1, 2) for m in (0, 1)]
    per = np.array_split(perm, len(shards))
    membership = []
    for shard, part in zip(shards, per, strict=True):
        recs = []
        for line, j in enumerate(part, 1):
            d, c, tr = rows[j]
            recs.append({"text": docs[d]["text"], "meta": {"redpajama_set_name": set_name(c)}})
            membership.append({"shard": shard, "line": line, "category": c, "trained": tr,
                               "doc": d, "sha1": _sha1_tokens(doc_tokens[d])})
        io.write_jsonl(root / "pools" / shard, recs)
    io.write_jsonl(root / "truth" / "pool_membership.jsonl", membership)
    return ({"root": "pools", "shards": shards, "membership": "truth/pool_membership.jsonl",
             "set_names": {set_name(c): c for c in CATEGORIES}, "categories": cats},
            {d for d, _, _ in rows})


def _write_unseen(root: Path, docs: list[dict], excluded: set[int], seed: int,
                  n_per_category: int) -> None:
    """``truth/unseen.jsonl.gz``: per category, ``n_per_category`` corpus documents that never
    entered the token stream and are not in the pools (known non-members for pipeline B's
    calibrated Min-K%++ rate). The corpus is read on past the build's budget, in the same
    seeded order, so most come from files the world did not use."""
    from anatomy.truth import UNSEEN

    skip_src = {(docs[d]["source"], docs[d]["part"]) for d in excluded}
    skip_text = {docs[d]["text"].strip() for d in excluded}
    out = []
    for cat in CATEGORIES:
        got = 0
        for d, _src, _sha in iter_category(cat, seed):
            key = d.text.strip()
            if not key or (d.source, d.part) in skip_src or key in skip_text:
                continue
            out.append({"text": d.text, "category": cat, "source": d.source, "part": d.part})
            got += 1
            if got >= n_per_category:
                break
        if got < n_per_category:
            log.warning("%s: only %d never-trained documents available", cat, got)
    io.write_jsonl(root / UNSEEN, out)


def write_mixture_spec(root: str | os.PathLike) -> Path:
    """``truth/mixture_spec.yaml``: the world's training-token mixture in the published
    ``category_weights`` spec format (pipeline B's ground truth for this world)."""
    from anatomy.truth import World

    w = World.open(root)
    t = w.truth
    spec = {
        "schema": "category-mixture-v1",
        "name": f"miniworld-{t['preset']['name']} (seed {t['seed']})",
        "source": "truth.json mixture: tokens of training steps [0, T3) by category, "
                  "separators counted with the document they end",
        "categories": list(t["categories"]),
        "category_weights": {c: round(v, 6) for c, v in t["mixture"].items()},
    }
    path = w.root / "truth" / "mixture_spec.yaml"
    io.write_yaml(path, spec)
    return path
