"""Build the miniworld: a miniature, fully known pretraining run (see ../shared/DESIGN.md).

``build_world(preset, out, seed)`` writes, deterministically for a seed:

- ``corpus/manifest.json``: every source file read, with its sha256;
- ``tokenizer/``: an HF byte-level BPE tokenizer (``AutoTokenizer.from_pretrained``);
- ``tokens/part-00N-00000.npy``: OLMo token files (raw uint16, no header, a dropped tail);
- ``global_indices.npy``: OLMo's data order (raw uint32, a PCG64 permutation);
- ``config.yaml``: an OLMo TrainConfig naming them (relative paths);
- ``model/step{S}-tokens{T}K/``: HF checkpoints at T1, 2T1, 3T1, T2 and T3; ``model/`` = final;
- ``pools/train/chunkN/example_train_M.jsonl.zst``: a SlimPajama-layout category pool whose
  members per category follow the training mixture, and ``pools_rates/``: one with fixed
  membership rates unrelated to it;
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
from anatomy.world import layout, synthetic
from anatomy.world.corpus import CATEGORIES, iter_category
from anatomy.world.presets import Preset
from anatomy.world.tokenizer import PAD_ID, SEPARATOR, train_tokenizer

log = logging.getLogger("anatomy.world")

FORMAT = "data-anatomy-miniworld/2"
CHARS_PER_TOKEN = 5.0  # generous: collect more text than needed (measured ~3.3 on small)
SET_PREFIX = "World"
MIA_CATEGORIES = ("docs", "reference")  # pool set names: WorldCode, WorldDocs, ...
MIA_LENGTHS = (66, 100)  # tokens of membership plants: above the L=64 bucket's 64


def set_name(category: str) -> str:
    return SET_PREFIX + category.capitalize()


def _sha1_tokens(toks: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(toks, dtype="<u2").tobytes()).hexdigest()


def _templates(n: int, rng: np.random.Generator) -> list[tuple[str, dict]]:
    """Incrementing sequences and repeating strings, ``n`` of each kind."""
    out = [synthetic.incrementing_template(rng) for _ in range(n)]
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    for _ in range(n):
        unit = "".join(rng.choice(letters, int(rng.integers(2, 7))))
        sep = [" ", "", "-", "\n"][int(rng.integers(4))]
        reps = int(rng.integers(20, 60))
        out.append((sep.join([unit] * reps), {"kind": "repeating", "unit": unit, "sep": sep,
                                               "repeats": reps}))
    return out


# How the world's model trains. fp32 is the path every CPU can take (bf16 autocast runs only
# where the CPU has bf16 kernels, and AMX and AVX512-BF16 kernels round differently), so the
# same seed gives the same world on more machines; ANATOMY_WORLD_PRECISION=bf16 (or "auto":
# bf16 where supported) trades that for speed. Training threads are fixed too: the GEMMs'
# split, and so the float sums, can depend on the thread count.
PRECISIONS = ("fp32", "bf16", "auto")
TRAIN_THREADS = 2


def world_precision(precision: str | None = None) -> str:
    """The precision a build uses: the argument, else ``$ANATOMY_WORLD_PRECISION``, else fp32."""
    p = precision or os.environ.get("ANATOMY_WORLD_PRECISION") or "fp32"
    if p not in PRECISIONS:
        raise io.InputError(None, f"unknown world precision {p!r} (choose from "
                                  f"{', '.join(PRECISIONS)}; ANATOMY_WORLD_PRECISION)")
    return p


def build_world(preset: Preset, out: str | os.PathLike, seed: int = 0, progress=None,
                replace: bool = False, precision: str | None = None) -> dict:
    """Build a miniworld into ``out``; returns the truth dict.

    The world is built under ``.NAME.building`` and moved into place only when complete: a
    failed build leaves nothing behind, and with ``replace`` an existing world at ``out``
    stays in place until the new one is whole (then swapped in and the old one removed).
    Without ``replace`` an existing ``out`` is an error.
    """
    out = Path(out)
    if out.exists() and not replace:
        raise io.InputError(out, "output folder exists (remove it or pass --overwrite)")
    tmp = out.with_name(f".{out.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        truth = _build(preset, out, tmp, seed, progress, world_precision(precision))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = out.with_name(f".{out.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    log.info("built %s in %.0fs (%s)", out, truth["timing"]["total_before_evidence"],
             ", ".join(f"{k} {v:.0f}s" for k, v in truth["timing"].items()))
    return truth


# the plants built to fall in one category of the taxonomy when memorized (see
# anatomy/world/synthetic.py); "fuzzy" copies are their near-duplicates
RECITATION_PLANTS = ("mem_dense", "mem_spread", "mem_late")
FUZZY_PLANTS = {"reconstruct": "reconstruction", "recollect": "recollection"}


def corpus_documents(P: Preset, seed: int, rng: np.random.Generator
                     ) -> tuple[list[dict], dict[str, str], list]:
    """The corpus a world of preset ``P`` and ``seed`` is built from (and its tokenizer trained
    on): ``(docs {text, category, source, part}, manifest {source: sha256}, templates)``;
    ``rng`` is the build's generator (the templates draw from it)."""
    n_inst = P.steps * P.batch_size + P.extra_instances
    total_tokens = n_inst * P.seq_len + P.n_token_files * P.seq_len
    docs: list[dict] = []
    manifest: dict[str, str] = {}
    seen_text: set[str] = set()
    for cat in CATEGORIES:
        budget = P.mixture[cat] * total_tokens * CHARS_PER_TOKEN + P.pool_size * 1600
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
    return docs, manifest, templates


def _add_tables(n: int, tok, rng: np.random.Generator, docs: list[dict], doc_tokens: list,
                doc_cat: list, L: int, data_cat: int) -> list[int]:
    """``n`` new incrementing tables (category data) of 72 to ``L - 16`` tokens whose 64-token
    sample is templated (a hex table cut inside its last number is not), each of its own
    format and step, appended to the document lists; their indices."""
    from anatomy.memorization.templating import is_templating

    out = []
    kinds: set[tuple[str, int]] = set()
    while len(out) < n:
        # small numbers: fewer, more frequent tokens (measured: 4-digit tables memorized least)
        text, params = synthetic.incrementing_template(rng, 8, 30, max_start=1000)
        ids = np.asarray(tok.encode(text).ids, dtype=np.uint16)
        if not 72 <= len(ids) <= L - 16 or not is_templating(tok.decode(ids[:64].tolist())):
            continue
        # one table per (format, step): two with overlapping ranges would hold each other's
        # continuation in their near-duplicates (measured: 48 occurrences, recitation)
        if (params["format"], params["step"]) in kinds:
            continue
        kinds.add((params["format"], params["step"]))
        out.append(len(docs))
        docs.append({"text": text, "category": "data", "source": "template", "part": len(out),
                     "template": params})
        doc_tokens.append(ids)
        doc_cat.append(data_cat)
    return out


def _unique_continuations(candidates: list[int], doc_tokens, prompt: int = 32,
                          cont: int = 32) -> set[int]:
    """The candidate documents whose continuation (tokens ``[prompt, prompt + cont)``) occurs
    once in the whole corpus: in the document itself and nowhere else (``count_ngrams`` over
    every document, separated so no window spans two)."""
    from anatomy.memorization.ngram_counts import count_ngrams

    if not candidates:
        return set()
    sep = np.full(1, np.iinfo(np.uint16).max, np.uint16)  # a token id no document holds
    stream = np.concatenate([x for d in doc_tokens for x in (d, sep)]).astype(np.int64)
    q = np.stack([doc_tokens[d][prompt: prompt + cont] for d in candidates]).astype(np.int64)
    n = count_ngrams([stream[None, :]], q)
    return {d for d, c in zip(candidates, n, strict=True) if c == 1}


def _intended_categories(plant_docs: dict[str, list[int]], doc_tokens, trained_rows: np.ndarray,
                         tokenizer_dir: Path, prompt: int = 32, cont: int = 32
                         ) -> tuple[dict[int, dict], dict]:
    """The category of the taxonomy (Prashanth et al. 2024, §3) each memorization plant falls
    in if the model reproduces it, by pipeline C's own rule (``taxonomy.categorize``) on what
    pipeline C measures: its continuation (tokens
    ``[prompt, prompt + cont)`` of its first 64, the sample an aligned copy starts) counted in
    every trained sequence (``count_ngrams``, windows inside one sequence, as
    ``sequence_duplicates``), and ``is_templating`` of the decoded 64 tokens. Adds
    ``intended``, ``continuation_count`` and ``templated`` to each row (in place); a plant
    whose measured category is not the one its kind is built for stops the build. Returns
    the count per kind and category."""
    import pandas as pd
    from transformers import AutoTokenizer

    from anatomy.memorization.ngram_counts import count_ngrams
    from anatomy.memorization.taxonomy import categorize
    from anatomy.memorization.templating import is_incrementing, is_repeating

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    built_for = {**dict.fromkeys(RECITATION_PLANTS, "recitation"), **FUZZY_PLANTS}
    summary: dict[str, dict[str, int]] = {}
    per_doc: dict[int, dict] = {}
    for kind in (*RECITATION_PLANTS, "templates", *FUZZY_PLANTS):
        rows = [d for d in plant_docs.get(kind, []) if len(doc_tokens[d]) >= prompt + cont]
        if not rows:
            continue
        samples = np.stack([doc_tokens[d][: prompt + cont] for d in rows]).astype(np.int64)
        texts = tok.batch_decode(samples.tolist())
        feats = pd.DataFrame({"sequence_duplicates": count_ngrams([trained_rows],
                                                                  samples[:, prompt:]),
                              "is_incrementing": [is_incrementing(t) for t in texts],
                              "is_repeating": [is_repeating(t) for t in texts]})
        for r, measured, (_, f) in zip(rows, categorize(feats), feats.iterrows(), strict=True):
            n, templated = int(f.sequence_duplicates), bool(f.is_incrementing or f.is_repeating)
            want = built_for.get(kind, measured)
            if measured != want:
                raise RuntimeError(f"plant {kind} doc {r}: built for {want}, but its "
                                   f"continuation occurs {n} times and templated={templated}")
            per_doc[r] = {"intended": want, "continuation_count": n, "templated": templated}
            summary.setdefault(kind, {}).setdefault(want, 0)
            summary[kind][want] += 1
    return per_doc, summary


def write_tokenizer_spec(root: str | os.PathLike) -> Path:
    """``truth/tokenizer_mixture_spec.yaml``: the byte mixture by category of the text the
    world's tokenizer was trained on (every corpus document, templates included), what the
    merge-list arm of pipeline B estimates. The corpus is rebuilt from the world's preset and
    seed and checked against its manifest (same sources and sha256, same document count)."""
    from anatomy.truth import World
    from anatomy.world.presets import get_preset

    w = World.open(root)
    t = w.truth
    P = get_preset(t["preset"]["name"])
    docs, manifest, _ = corpus_documents(P, t["seed"], np.random.default_rng(t["seed"]))
    recorded = io.read_json(w.root / "corpus" / "manifest.json")
    if dict(sorted(manifest.items())) != recorded["sources"] or len(docs) != recorded["n_docs"]:
        raise io.InputError(w.root / "corpus" / "manifest.json",
                            "the corpus sources here no longer give this world's corpus (see "
                            "anatomy/world/sources.py); rebuild the world to know its "
                            "tokenizer's training mixture")
    by_cat = {c: 0 for c in t["categories"]}
    for d in docs:
        by_cat[d["category"]] += len(d["text"].encode("utf-8"))
    total = sum(by_cat.values())
    path = w.root / "truth" / "tokenizer_mixture_spec.yaml"
    io.write_yaml(path, {
        "schema": "category-mixture-v1",
        "name": f"miniworld-{t['preset']['name']} (seed {t['seed']}) tokenizer",
        "source": "bytes by category of every corpus document the tokenizer was trained on",
        "categories": list(t["categories"]),
        "category_weights": {c: round(v / total, 6) for c, v in by_cat.items()},
        "bytes": by_cat})
    return path


def _build(preset: Preset, out: Path, tmp: Path, seed: int, progress, precision: str) -> dict:
    """Everything :func:`build_world` writes, into ``tmp``."""
    timing: dict[str, float] = {}
    t0 = time.time()
    P = preset
    L, B = P.seq_len, P.batch_size
    n_inst = P.steps * B + P.extra_instances
    train_tokens = P.steps * B * L
    rng = np.random.default_rng(seed)

    # 1. corpus -------------------------------------------------------------------------
    total_tokens = n_inst * L + P.n_token_files * L
    docs, manifest, templates = corpus_documents(P, seed, rng)
    timing["corpus"] = time.time() - t0

    # 2. tokenizer ----------------------------------------------------------------------
    t = time.time()
    tok = train_tokenizer([d["text"] for d in docs], P.vocab_size, tmp / "tokenizer")
    eos_id = tok.token_to_id(SEPARATOR)
    encs = tok.encode_batch([d["text"] for d in docs])
    doc_tokens = [np.asarray(e.ids, dtype=np.uint16) for e in encs]
    cat_index = {c: i for i, c in enumerate(CATEGORIES)}
    doc_cat = [cat_index[d["category"]] for d in docs]
    n_corpus_docs = len(docs)  # what the tokenizer was trained on (the manifest's n_docs)
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

    # membership passages, and as many once-seen non-member controls from the same
    # candidates, planted once in [T2, T3): same length and category distribution as the
    # planted members. MIA_LENGTHS keeps both out of the OLMoMIA length bucket the demo and
    # the tests sample (L=64: 32 < len <= 64), so the paper's splits are made of ordinary
    # documents and the plants live only in the control splits.
    n_mia = P.mia_per_count * len(P.mia_counts)
    # Prose only (docstrings, reference text): their intrinsic difficulty varies far less
    # than code or data rows, whose loss spread would swamp the effect of exposure.
    lo_len, hi_len = MIA_LENGTHS
    mia_docs = take(lambda i: lo_len <= lengths[i] <= hi_len
                    and docs[i]["category"] in MIA_CATEGORIES, 2 * n_mia)
    mia_docs, mia_controls = mia_docs[:n_mia], mia_docs[n_mia:]
    # memorization passages: a 32-token prefix + 32-token suffix fits in one instance, and
    # at > 64 tokens they never enter an L=64 membership pool
    n_mem = P.mem_dense[0] + P.mem_spread[0] + P.mem_late[0]
    mem_docs = take(lambda i: 72 <= lengths[i] <= L - 16, n_mem)
    # near-duplicated plants (anatomy/world/synthetic.py): corpus passages to recollect,
    # incrementing tables to reconstruct, and their fuzzy copies, as new documents
    n_fuzzy, fuzzy_n, canonical_n = P.mem_fuzzy
    # a passage to recollect must be rare by construction: its continuation in no other
    # corpus document (a duplicated licence paragraph would make it recitation)
    fits = [int(i) for i in idx if int(i) not in used and 72 <= lengths[int(i)] <= L - 16]
    once = _unique_continuations(fits[: max(64, 20 * n_fuzzy)], doc_tokens)
    fuzzy_docs = {"recollect": take(lambda i: 72 <= lengths[i] <= L - 16 and i in once,
                                    n_fuzzy),
                  "reconstruct": []}
    fuzzy_of: dict[int, list[int]] = {}
    if n_fuzzy:
        fuzzy_docs["reconstruct"] = _add_tables(n_fuzzy, tok, rng, docs, doc_tokens, doc_cat,
                                                L, cat_index["data"])
        for d in fuzzy_docs["recollect"] + fuzzy_docs["reconstruct"]:
            fuzzy_of[d] = []
            for c in synthetic.fuzzy_copies(doc_tokens[d], fuzzy_n, rng, P.vocab_size,
                                            (0, PAD_ID, eos_id)):
                fuzzy_of[d].append(len(docs))
                docs.append({"text": tok.decode(c.tolist()), "category": docs[d]["category"],
                             "source": f"fuzzy:{d}", "part": len(fuzzy_of[d]) - 1,
                             "fuzzy_of": d})
                doc_tokens.append(c)
                doc_cat.append(doc_cat[d])
        lengths = np.array([len(x) for x in doc_tokens])
    # held-out documents of the two pools: the matched pool may need up to pool_size
    # non-members per category (its member counts follow the measured mixture), the rates
    # pool pool_size - its trained count
    heldout: dict[str, list[int]] = {}
    heldout_rates: dict[str, list[int]] = {}
    for c in CATEGORIES:
        heldout[c] = take(lambda i, c=c: docs[i]["category"] == c, P.pool_size)
        n_ho = P.pool_size - round(P.pool_rates[c] * P.pool_size)
        heldout_rates[c] = take(lambda i, c=c: docs[i]["category"] == c, n_ho)
    template_docs = [i for i in range(n_corpus_docs) if is_template[i]]

    # 4. plants: target offsets in the training stream -------------------------------
    plants: list[tuple[int, str, int]] = []
    member_tokens = P.member_end * B * L
    margin = 4 * L  # a plant enters at the next document boundary: room for a long one
    mia_count = {j_d: P.mia_counts[j // P.mia_per_count] for j, j_d in enumerate(mia_docs)}
    # copies whose targets the stream has passed queue up at the next boundary: near the end
    # of the window that queue would spill past T1, so the last eighth of the plants' own
    # volume is kept free (the build checks that every copy starts inside the window)
    mia_tokens = sum(k * (len(doc_tokens[d]) + 1) for d, k in mia_count.items())
    mia_end = member_tokens - margin - mia_tokens // 8
    if mia_end <= member_tokens // 2:
        raise RuntimeError(f"the membership plants ({mia_tokens} tokens) do not fit the member "
                           f"window ({member_tokens} tokens)")
    for d in mia_docs:
        plants += [(d, "mia", int(o)) for o in rng.integers(0, mia_end, mia_count[d])]
    nonmember_lo = P.nonmember_start * B * L
    plants += [(d, "mia_control", int(rng.integers(nonmember_lo, train_tokens - margin)))
               for d in mia_controls]
    # dense memorization plants end where the non-member window starts, so that window's
    # once-seen documents are not crowded out by (or mixed with) heavily repeated text
    n_dense, copies_dense, window = P.mem_dense
    lo = (P.nonmember_start - window) * B * L
    # Every other copy of a memorization plant, and every template, starts a training
    # sequence: the published memorization test prompts with a sequence's first 32 tokens
    # (Biderman et al. 2023), so samples taken as sequence starts include these.
    def copies(d: int, kind: str, offsets: np.ndarray) -> list[tuple[int, str, int, bool]]:
        return [(d, kind, int(o), j % 2 == 0) for j, o in enumerate(offsets)]

    # a thirty-second of the window's plant volume is kept free at its end, so that copies
    # queued at boundaries do not spill past T2 (the build checks); not more: the tiny model
    # forgets a passage within 20 steps of its last copy (an eighth, ~17 steps on tiny, left
    # it reproducing 2-8 of 32 tokens at T2, where it had reproduced 3 of 4 passages exactly)
    dense_tokens = sum(copies_dense * (len(doc_tokens[d]) + 1) for d in mem_docs[:n_dense])
    dense_tokens += sum((canonical_n + fuzzy_n) * (len(doc_tokens[d]) + 1)
                        for ids in fuzzy_docs.values() for d in ids)
    hi = nonmember_lo - margin - dense_tokens // 32
    if hi <= lo:
        raise RuntimeError(f"the dense-window plants ({dense_tokens} tokens) do not fit their "
                           f"window of {window} steps")
    for d in mem_docs[:n_dense]:
        plants += copies(d, "mem_dense", rng.integers(lo, hi, copies_dense))
    # near-duplicated plants in the same window: each canonical copy starts a sequence
    for kind, ids in fuzzy_docs.items():
        for d in ids:
            plants += [(d, kind, int(o), True) for o in rng.integers(lo, hi, canonical_n)]
            offsets = rng.integers(lo, hi, fuzzy_n)
            plants += [(f, "fuzzy", int(o), j % 2 == 0)
                       for j, (f, o) in enumerate(zip(fuzzy_of[d], offsets, strict=True))]
    n_spread = P.mem_spread[0]
    for d in mem_docs[n_dense:n_dense + n_spread]:
        plants += copies(d, "mem_spread", rng.integers(0, train_tokens - margin,
                                                       P.mem_spread[1]))
    # a few dense passages in the last steps: exact recall at the final checkpoint (longer
    # than 64 tokens, so never in an L=64 membership pool of the non-member window)
    n_late, copies_late, window_late = P.mem_late
    for d in mem_docs[n_dense + n_spread:]:
        plants += copies(d, "mem_late", rng.integers((P.steps - window_late) * B * L,
                                                     train_tokens - margin, copies_late))
    for d in template_docs:
        plants.append((d, "template", int(rng.integers(0, train_tokens - margin)), True))

    # 5. regular documents, categories drawn in proportion to their token shares ---------
    pools_by_cat = {c: [int(i) for i in idx if int(i) not in used and docs[i]["category"] == c]
                    for c in CATEGORIES}
    mean_len = {c: max(1.0, float(np.mean(lengths[v]))) if v else 1.0
                for c, v in pools_by_cat.items()}
    ptr = dict.fromkeys(CATEGORIES, 0)
    regular: list[int] = []
    need = total_tokens + sum(len(doc_tokens[p[0]]) + 1 + (L if p[3:] and p[3] else 0)
                              for p in plants)
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
                                 n_inst * L + sum(tails), seq_len=L)
    late = [o for o in stream.occurrences
            if o.kind == "mia" and o.offset + o.length >= member_tokens]
    if late:
        raise RuntimeError(f"{len(late)} membership plants end past the member window (step "
                           f"{P.member_end}); the preset plants too much for its window")
    spill = [o for o in stream.occurrences if o.kind in ("mem_dense", "fuzzy", *FUZZY_PLANTS)
             and o.offset + o.length >= nonmember_lo]
    if spill:
        raise RuntimeError(f"{len(spill)} dense-window plants end past step {P.nonmember_start} "
                           "(the non-member window); the preset plants too much for its window")
    inst = stream.tokens[: n_inst * L].reshape(n_inst, L)
    intended, category_check = _intended_categories(
        {"mem_dense": mem_docs[:n_dense], "mem_spread": mem_docs[n_dense:n_dense + n_spread],
         "mem_late": mem_docs[n_dense + n_spread:], "templates": template_docs, **fuzzy_docs},
        doc_tokens, inst[: P.steps * B], tmp / "tokenizer")
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
            "trained_steps": P.steps,  # the order holds extra instances past the epoch
            "member_steps": [0, P.member_end],
            "nonmember_steps": [P.nonmember_start, P.steps],
            "pools": "pools",
            # what every token file held at training time: readers refuse a changed file
            # (a shorter file would shift every later instance, as OLMo's offsets do)
            "token_file_bytes": [(tmp / p).stat().st_size for p in paths],
        },
    }
    io.write_yaml(tmp / "config.yaml", config)
    timing["layout"] = time.time() - t - timing["tokenizer"]

    # 8. train ----------------------------------------------------------------------------
    from anatomy.lm_training import cpu_description, make_model, train, weights_digest

    t = time.time()
    model = make_model(P.vocab_size, L, P.d_model, P.n_layers, P.n_heads, eos_id, PAD_ID, seed)
    ckpts = {s: tmp / "model" / r for s, r in revisions.items()}
    stats = train(storage, order, steps=P.steps, batch_size=B, lr=P.lr, model=model,
                  checkpoints=ckpts, tokenizer_dir=tmp / "tokenizer", seed=seed,
                  progress=progress, bf16={"fp32": False, "bf16": True, "auto": None}[precision],
                  threads=TRAIN_THREADS)
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
                   "slots": sl, "steps": [s // B for s in sl],
                   # every copy: [first token in the stream, starts its instance]
                   "copies": sorted([o.offset, o.aligned] for o in occs)}
            if extra:
                row.update(extra(d))
            row.update(intended.get(d, {}))
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
        "reconstruct": plant_rows("reconstruct", fuzzy_docs["reconstruct"],
                                  lambda d: {"template": docs[d]["template"],
                                             "fuzzy_docs": fuzzy_of[d]}),
        "recollect": plant_rows("recollect", fuzzy_docs["recollect"],
                                lambda d: {"fuzzy_docs": fuzzy_of[d]}),
    }
    (tmp / "truth" / "seen").mkdir()
    checkpoints = []
    for s in P.checkpoints:
        seen = np.sort(order[: s * B])
        io.save_npy(tmp / "truth" / "seen" / f"step{s}.npy", seen)
        checkpoints.append({"step": s, "revision": revisions[s], "path": f"model/{revisions[s]}",
                            "tokens": s * B * L, "slots": [0, s * B],
                            "seen_instances": f"truth/seen/step{s}.npy"})
    mixture = mixture_tokens / train_tokens
    members = _matched_members(mixture, P.pool_size)
    pools, pool_docs = _write_pools(tmp, "pools", docs, doc_tokens, occ_by_doc, heldout,
                                    members, P.pool_size, trained_slots, L, rng)
    rates = {c: round(P.pool_rates[c] * P.pool_size) for c in CATEGORIES}
    pools_rates, rate_docs = _write_pools(tmp, "pools_rates", docs, doc_tokens, occ_by_doc,
                                          heldout_rates, rates, P.pool_size, trained_slots, L,
                                          rng)
    pools["kind"] = "matched: members per category in proportion to the training mixture"
    pools_rates["kind"] = "rates: fixed membership rates unrelated to the training mixture"
    _write_unseen(tmp, docs, set(occ_by_doc) | pool_docs | rate_docs, seed,
                  max(200, P.pool_size))
    doc_rows = []
    for d in sorted(occ_by_doc):
        occs = occ_by_doc[d]  # whole documents: the layout cuts none (the stream end aside)
        doc_rows.append({"doc": d, "category": docs[d]["category"], "source": docs[d]["source"],
                         "part": docs[d]["part"], "length": int(lengths[d]),
                         "sha1": _sha1_tokens(doc_tokens[d]),
                         "kinds": sorted({o.kind for o in occs}),
                         "occurrences": [[o.offset] + slots(o) for o in occs]})
    io.write_jsonl(tmp / "truth" / "docs.jsonl.gz", doc_rows)
    io.write_json(tmp / "corpus" / "manifest.json",
                  {"sources": dict(sorted(manifest.items())), "n_docs": n_corpus_docs})
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
        "model": {"n_params": int(n_params), "bf16": stats["bf16"], "precision": precision,
                  "threads": stats["threads"], "final_loss": float(np.mean(stats["loss"][-10:])),
                  # builds on two machines are compared by these (bit-identical weights or not)
                  "weights_sha256": weights_digest(model), "cpu": cpu_description()},
        "planted": planted,
        # each memorization plant's category if memorized (rows: "intended"), per kind
        "intended_categories": category_check,
        "pools": pools,
        "pools_rates": pools_rates,
        "train": {"loss": stats["loss"], "batch_sha1": stats["batch_sha1"]},
    }
    io.write_json(tmp / "truth.json", truth, indent=1)
    write_mixture_spec(tmp)
    timing["total_before_evidence"] = time.time() - t0
    truth["timing"] = timing
    return truth


def world_fingerprint(preset: Preset, seed: int, precision: str | None = None):
    """What a built world records in ``WORLD/done.json``: the preset, the seed, the training
    precision, our version.

    (The corpus is read from pinned archives, :mod:`anatomy.world.sources`;
    ``corpus/manifest.json`` lists every file read with its sha256.)"""
    from anatomy import execution

    return execution.fingerprint("build_world", {}, {"preset": preset.to_dict(), "seed": seed,
                                                     "precision": world_precision(precision)})


def build_world_once(preset: Preset, out: str | os.PathLike, seed: int = 0, progress=None,
                     overwrite: bool = False, precision: str | None = None) -> dict | None:
    """:func:`build_world` under the output policy of :mod:`anatomy.execution`.

    A world built from the same preset and seed (its ``done.json``) is kept and None
    returned; another preset or seed, or a folder without the marker, is refused unless
    ``overwrite`` (which removes the folder first).
    """
    from anatomy import execution

    out = Path(out)
    fp = world_fingerprint(preset, seed, precision)
    output = execution.Output.folder(out, ["truth.json", "config.yaml"])
    state, _ = execution.output_state(output, fp)
    if state == "done" and not overwrite:
        log.info("%s: up to date (same preset and seed), kept", out)
        return None
    if state in ("differs", "unmarked") and not overwrite:
        execution.check_output(output, fp)  # raises, naming what differs
    # the old world (and its marker) stays in place until the new one is complete
    truth = build_world(preset, out, seed=seed, progress=progress, replace=True,
                        precision=precision)
    execution.mark_output(output, fp, {"n_params": truth["model"]["n_params"]})
    return truth


def _revision(step: int, batch_size: int, seq_len: int) -> str:
    from anatomy.lm_training import revision_name

    return revision_name(step, batch_size, seq_len)


def _matched_members(mixture: np.ndarray, pool_size: int) -> dict[str, int]:
    """Members per category of the matched pool: ``2 * pool_size`` members in all, split in
    proportion to the training token mixture (largest remainders), so the pool's member
    mixture is the training mixture up to rounding: the published Min-K%++ arm's premise."""
    total = 2 * pool_size
    raw = np.asarray(mixture, dtype=np.float64) * total
    m = np.floor(raw).astype(int)
    for i in np.argsort(-(raw - m), kind="stable")[: total - m.sum()]:
        m[i] += 1
    if m.max() > pool_size:
        raise RuntimeError(f"a category's share is above 1/2: {m.max()} members for a pool of "
                           f"{pool_size}")
    return {c: int(k) for c, k in zip(CATEGORIES, m, strict=True)}


def _write_pools(root: Path, name: str, docs, doc_tokens, occ_by_doc, heldout, members,
                 pool_size: int, trained_slots, L: int, rng: np.random.Generator
                 ) -> tuple[dict, set[int]]:
    """One SlimPajama-layout pool ``ROOT/NAME/`` of ``pool_size`` documents per category:
    ``members[c]`` seen once in training, the rest held out (the first of ``heldout[c]``);
    the truth of every record in ``truth/NAME_membership.jsonl``."""
    rows = []
    cats = {}
    for c in CATEGORIES:
        trained = sorted(d for d, occs in occ_by_doc.items()
                         if docs[d]["category"] == c and "template" not in docs[d]
                         and all(o.kind == "regular" for o in occs)
                         and all((o.offset + o.length) // L < trained_slots for o in occs))
        n_tr = members[c]
        if n_tr > len(trained):
            raise RuntimeError(f"corpus too small: the pool of {c} needs {n_tr} documents seen "
                               f"once in training, the stream holds {len(trained)}")
        pick = [trained[i] for i in sorted(rng.choice(len(trained), n_tr, replace=False))]
        held = heldout[c][: pool_size - n_tr]
        rows += [(d, c, True) for d in pick] + [(d, c, False) for d in held]
        cats[c] = {"set_name": set_name(c), "n": n_tr + len(held), "n_trained": n_tr,
                   "rate": n_tr / (n_tr + len(held))}
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
        io.write_jsonl(root / name / shard, recs)
    io.write_jsonl(root / "truth" / f"{name}_membership.jsonl", membership)
    n_members = sum(v["n_trained"] for v in cats.values())
    return ({"root": name, "shards": shards, "membership": f"truth/{name}_membership.jsonl",
             "set_names": {set_name(c): c for c in CATEGORIES}, "categories": cats,
             "member_mixture": {c: v["n_trained"] / n_members for c, v in cats.items()}},
            {d for d, _, _ in rows})


CANDIDATES = 10  # never-trained documents read per one kept (truth/unseen.jsonl.gz)


def _write_unseen(root: Path, docs: list[dict], excluded: set[int], seed: int,
                  n_per_category: int) -> None:
    """``truth/unseen.jsonl.gz``: per category, ``n_per_category`` corpus documents that never
    entered the token stream and are not in the pools (known non-members for pipeline B's
    calibrated Min-K%++ rate). The corpus is read on past the build's budget, in the same
    seeded order, to ``CANDIDATES`` times as many candidates, and a seeded random
    ``n_per_category`` of them are kept (in corpus order): consecutive documents come from one
    file, so the first ones alone would be a few files, not a sample of the category."""
    from anatomy.truth import UNSEEN

    skip_src = {(docs[d]["source"], docs[d]["part"]) for d in excluded}
    skip_text = {docs[d]["text"].strip() for d in excluded}
    out = []
    for cat in CATEGORIES:
        cand = []
        for d, _src, _sha in iter_category(cat, seed):
            key = d.text.strip()
            if not key or (d.source, d.part) in skip_src or key in skip_text:
                continue
            cand.append({"text": d.text, "category": cat, "source": d.source, "part": d.part})
            if len(cand) >= CANDIDATES * n_per_category:
                break
        if len(cand) < n_per_category:
            log.warning("%s: only %d never-trained documents available", cat, len(cand))
        rng = np.random.default_rng([seed, 7, CATEGORIES.index(cat)])
        keep = np.sort(rng.choice(len(cand), min(n_per_category, len(cand)), replace=False))
        out += [cand[i] for i in keep]
    io.write_jsonl(root / UNSEEN, out)


def write_mixture_spec(root: str | os.PathLike) -> Path:
    """``truth/mixture_spec.yaml``: the world's training-token mixture in the published
    ``category_weights`` spec format (pipeline B's ground truth for this world); and for each
    pool ``truth/{pool}_members_spec.yaml``: the category mixture of the pool's members
    (what the Min-K%++ arm estimates)."""
    from anatomy.truth import World

    w = World.open(root)
    t = w.truth
    name = f"miniworld-{t['preset']['name']} (seed {t['seed']})"
    spec = {
        "schema": "category-mixture-v1",
        "name": name,
        "source": "truth.json mixture: tokens of training steps [0, T3) by category, "
                  "separators counted with the document they end",
        "categories": list(t["categories"]),
        "category_weights": {c: round(v, 6) for c, v in t["mixture"].items()},
    }
    path = w.root / "truth" / "mixture_spec.yaml"
    io.write_yaml(path, spec)
    for key in ("pools", "pools_rates"):
        pool = t.get(key)
        if pool is None or "member_mixture" not in pool:
            continue
        io.write_yaml(w.root / "truth" / f"{key}_members_spec.yaml", {
            "schema": "category-mixture-v1",
            "name": f"{name}, members of {key}/",
            "source": f"truth/{key}_membership.jsonl: the pool's trained documents by category "
                      f"({pool['kind']})",
            "categories": list(t["categories"]),
            "category_weights": {c: round(v, 6) for c, v in pool["member_mixture"].items()}})
    return path
