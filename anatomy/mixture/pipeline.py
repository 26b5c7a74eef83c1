"""Pipeline B's model-dependent arms, end to end: the entry points the scripts call.

* :func:`run_labelshift` (``run_labelshift.py``): train a domain classifier on local
  category samples, sample texts from the target LM, classify them and solve for the
  category priors with every estimator of :mod:`anatomy.mixture.labelshift` (bootstrap
  intervals for the chosen one). The LM's generations stand in for its training
  distribution (the published tool's premise; mixture.md section 2.5: sampling settings and
  prompts bias what no estimator can remove).
* :func:`run_minkpp_mix` (``run_minkpp_mix.py``): Min-K%++ (Zhang et al. 2024, arXiv
  2404.02936) per local sample with the membership pipeline's scoring code, a membership
  rate per category (2-component GMM, the published recipe; or calibrated against known
  non-members, :mod:`anatomy.mixture.gmm`), normalised by the sampled pools' sizes.

Model passes shard the work over ``torchrun`` ranks (:func:`anatomy.lm.shard_indices` /
:func:`anatomy.lm.gather_ordered`); every rank ends up with the same results, and only rank
0 writes files.
"""

from __future__ import annotations

import csv
import io as _io
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import io
from anatomy.io import InputError, PathLike
from anatomy.mixture import labelshift as ls
from anatomy.mixture.classifier import load_category_samples, train_domain_classifier

log = logging.getLogger("anatomy")

# Short, domain-neutral openings for --prompt_mode neutral (one per block of samples).
NEUTRAL_PROMPTS = ("The", "In", "This", "A", "#", "1")


# ---------------------------------------------------------------------------------------
# generation


def separator_id(model, tokenizer) -> int:
    """The document separator the LM was trained with: the model config's ``eos_token_id``.

    For OLMo (and the miniworld) this is the id written between documents (OLMo-7B: 50279),
    not the tokenizer's ``eos_token`` (id 0); the tokenizer's is the fallback.
    """
    eos = getattr(getattr(model, "config", None), "eos_token_id", None)
    if isinstance(eos, list | tuple):
        eos = eos[0] if eos else None
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise InputError(None, "the model config and tokenizer name no EOS id; pass --stop_id")
    return int(eos)


def _group_seed(seed: int, group: int) -> int:
    return int(np.random.SeedSequence([seed, group]).generate_state(1, np.uint32)[0])


def generate_texts(model, tokenizer, n: int, max_new_tokens: int, batch_size: int = 16,
                   seed: int = 0, prompt_mode: str = "unconditional",
                   stop_id: int | None = None, temperature: float = 1.0,
                   top_k: int | None = None, rank: int = 0, world_size: int = 1,
                   gather: bool = True, progress: bool = True) -> list[dict[str, Any]]:
    """``n`` sampled texts ``{"text", "prompt", "n_tokens"}`` in sample order.

    ``unconditional``: every sample starts right after the document separator (a fresh
    document) and ends before the next one. ``neutral``: the ``n`` samples are split into
    consecutive blocks, one per :data:`NEUTRAL_PROMPTS` entry, each block continuing
    ``separator + prompt`` (the prompt is kept in ``text``). Sampling is
    :func:`anatomy.lm.generate` (one generator per sample), so rank ``rank`` of
    ``world_size`` computes its strided share and, with ``gather``, all ranks return the
    same list a single process would.
    """
    from anatomy.lm import gather_ordered, generate, shard_indices

    if prompt_mode not in ("unconditional", "neutral"):
        raise InputError(None, f"unknown prompt mode {prompt_mode!r} (unconditional, neutral)")
    sep = separator_id(model, tokenizer) if stop_id is None else int(stop_id)
    if prompt_mode == "unconditional":
        groups = [("", n)]
    else:
        sizes = [len(a) for a in np.array_split(np.arange(n), len(NEUTRAL_PROMPTS))]
        groups = [(p, s) for p, s in zip(NEUTRAL_PROMPTS, sizes, strict=True) if s > 0]
    out: list[dict[str, Any]] = []
    for g, (prompt, size) in enumerate(groups):
        ids = [sep] + (tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt
                       else [])
        mine = shard_indices(size, rank, world_size)
        seed_g = seed if prompt_mode == "unconditional" else _group_seed(seed, g)
        toks = generate(model, tokenizer, size, max_new_tokens, batch_size=batch_size,
                        seed=seed_g, prompt_ids=ids, temperature=temperature, top_k=top_k,
                        stop_id=sep, indices=mine, progress=progress) if mine else []
        recs = [{"text": prompt + tokenizer.decode(t, skip_special_tokens=True),
                 "prompt": prompt, "n_tokens": len(t)} for t in toks]
        out += gather_ordered(recs, mine, size) if gather else recs
    return out


def read_generations(path: PathLike) -> list[str]:
    """Texts of a generations JSONL (one ``{"text": ...}`` per line, the published format)."""
    texts = []
    for i, rec in enumerate(io.iter_jsonl(path, required=("text",)), 1):
        if not isinstance(rec["text"], str):
            raise InputError(path, '"text" is not a string', i)
        texts.append(rec["text"])
    if not texts:
        raise InputError(path, "no generations in the file")
    return texts


# ---------------------------------------------------------------------------------------
# label shift


def estimate_all(logits_val: np.ndarray, y_val: np.ndarray, logits_tgt: np.ndarray,
                 methods: Sequence[str] = ls.METHODS) -> dict[str, ls.PriorEstimate]:
    """Point estimates of every label-shift estimator, side by side."""
    return {m: ls.estimate_priors(m, logits_val, y_val, logits_tgt) for m in methods}


def run_labelshift(samples_dir: PathLike, output_dir: PathLike, run_name: str, *,
                   target_model: str | None = None, revision: str | None = None,
                   classifier: str = "tfidf", merge_web: bool = False,
                   num_prompts: int = 500, max_new_tokens: int = 128,
                   cached_generations: PathLike | None = None,
                   estimator: str = ls.DEFAULT_METHOD, n_boot: int = 200, ci: float = 0.90,
                   seed: int = 0, batch_size: int = 16, prompt_mode: str = "unconditional",
                   stop_id: int | None = None, temperature: float = 1.0,
                   top_k: int | None = None, val_fraction: float = 0.3,
                   max_per_class: int | None = 5000, dtype: str = "float32",
                   device: str | None = None, encoder_epochs: int = 3,
                   overwrite: bool = False, plots: bool = True,
                   progress: Callable | None = None) -> dict[str, Any] | None:
    """Estimate the category mixture of ``target_model``'s generations; write ``O/X/``.

    Writes ``generations.jsonl`` (unless reading ``cached_generations``), ``summary.json``
    (``priors`` = the chosen estimator with bootstrap point/mean/ci_lo/ci_hi; ``estimates``
    = every estimator's point estimate; confusion matrices, p-bar, condition numbers,
    calibration, config), ``summary.csv``, ``estimators/<method>/summary.json`` (one folder
    per estimator, so ``benchmark_evaluation.py --compare O/X/estimators/*`` scores them all)
    and, with ``plots``, ``confusion_matrix.png``, ``priors.png``, ``pbar_vs_ctpi.png``.
    Returns the summary (``None`` on torchrun ranks > 0, which only generate).
    """
    from anatomy.lm import dist_info

    if estimator not in ls.METHODS:
        raise InputError(None, f"unknown estimator {estimator!r} ({', '.join(ls.METHODS)})")
    rank, world_size = dist_info()
    out = Path(output_dir) / run_name
    summary_path = out / "summary.json"
    if summary_path.exists() and not overwrite:
        raise InputError(summary_path, "output exists (pass --overwrite to replace it)")
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in {
        "local_samples_dir": samples_dir, "classifier": classifier, "merge_web": merge_web,
        "target_model": target_model, "hf_revision": revision, "num_prompts": num_prompts,
        "max_new_tokens": max_new_tokens, "use_cached_generations": cached_generations,
        "prompt_mode": prompt_mode, "temperature": temperature, "top_k": top_k,
        "estimator": estimator, "n_boot": n_boot, "ci": ci, "seed": seed,
        "val_fraction": val_fraction, "max_per_class": max_per_class,
        "batch_size": batch_size}.items()}

    # 1. generations first: a missing model fails before the classifier is trained
    if cached_generations is not None:
        if rank > 0:  # nothing to share out
            return None
        texts = read_generations(cached_generations)
        gen_stats = {"source": str(cached_generations), "n": len(texts)}
    else:
        if target_model is None:
            raise InputError(None, "no target model (pass --target_model or "
                                   "--use_cached_generations)")
        from anatomy.lm import load_causal_lm, load_tokenizer

        model = load_causal_lm(target_model, revision=revision, dtype=dtype, device=device)
        tok = load_tokenizer(target_model, revision=revision)
        recs = generate_texts(model, tok, num_prompts, max_new_tokens, batch_size, seed,
                              prompt_mode, stop_id, temperature, top_k, rank, world_size)
        if rank > 0:
            return None
        io.write_jsonl(out / "generations.jsonl", recs)
        texts = [r["text"] for r in recs]
        lens = np.array([r["n_tokens"] for r in recs])
        gen_stats = {"source": str(out / "generations.jsonl"), "n": len(texts),
                     "mean_tokens": float(lens.mean()) if lens.size else 0.0,
                     "stop_id": separator_id(model, tok) if stop_id is None else stop_id}
        del model
    kept = [t for t in texts if t.strip()]
    gen_stats["n_empty_dropped"] = len(texts) - len(kept)
    if not kept:
        raise InputError(gen_stats["source"], "every generation is empty")

    # 2. classifier on the local samples, held-out validation logits
    samples = load_category_samples(samples_dir, merge_web=merge_web,
                                    max_per_class=max_per_class, balance=True, seed=seed)
    kw = {"epochs": encoder_epochs, "device": device} if classifier != "tfidf" else {}
    trained = train_domain_classifier(samples, classifier, val_fraction, seed, **kw)
    Zv, yv, cats = trained.logits_val, trained.y_val, trained.categories
    Zt = trained.classifier.logits(kept)

    # 3. every estimator, then the bootstrap of the chosen one
    ests = estimate_all(Zv, yv, Zt)
    boot = ls.bootstrap_priors(estimator, Zv, yv, Zt, n_boot=n_boot, seed=seed, ci=ci,
                               progress=progress)
    summary = _labelshift_summary(config, cats, trained, Zv, yv, Zt, ests, boot, gen_stats)
    _write_labelshift(out, summary, ests, cats, plots)
    return summary


def _labelshift_summary(config, cats, trained, Zv, yv, Zt, ests, boot, gen_stats) -> dict:
    from scipy.special import softmax

    Pv, Pt = softmax(Zv, axis=1), softmax(Zt, axis=1)
    C_hard = ls.confusion_matrix(Pv, yv, soft=False)
    C_soft = ls.confusion_matrix(Pv, yv, soft=True)
    pbar = ls.averaged_probabilities(Pt)
    chosen = boot.point
    d = boot.diagnostics
    vec = lambda v: {c: float(x) for c, x in zip(cats, v, strict=True)}  # noqa: E731
    return {
        "config": config,
        "categories": cats,
        "estimator": config["estimator"],
        "priors": boot.by_category(cats),
        "estimates": {m: vec(e.priors) for m, e in ests.items()},
        "pbar": [float(x) for x in pbar],
        "ctpi": [float(x) for x in C_soft @ chosen],
        "averaged_probabilities": vec(pbar),
        "confusion_matrix": {
            "convention": "C[i][j] = P(pred = i | true = j); columns sum to 1",
            "hard": C_hard.tolist(), "soft": C_soft.tolist()},
        "condition_number": {"hard": ls.condition_number(C_hard),
                             "soft": ls.condition_number(C_soft)},
        "calibration": d.get("calibration"),
        "val_metrics": {"val_acc": trained.val_accuracy, "n_val": int(yv.size),
                        "n_train": trained.n_train.tolist()},
        "generations": gen_stats,
        "bootstrap": {"n_boot": int(boot.samples.shape[0]), "ci": boot.ci,
                      "resamples": "validation (within class) and generations"},
    }


def _write_labelshift(out: Path, summary: dict, ests, cats: list[str], plots: bool) -> None:
    io.write_json(out / "summary.json", summary)
    methods = list(ests)
    rows = [["category", "point", "mean", "ci_lo", "ci_hi", *methods]]
    for i, c in enumerate(cats):
        p = summary["priors"][c]
        rows.append([c, *(f"{p[k]:.6f}" for k in ("point", "mean", "ci_lo", "ci_hi")),
                     *(f"{ests[m].priors[i]:.6f}" for m in methods)])
    io.write_text(out / "summary.csv", _csv(rows))
    for m, e in ests.items():
        io.write_json(out / "estimators" / m / "summary.json", {
            "estimator": m, "categories": cats,
            "priors": {c: {"point": float(v)} for c, v in zip(cats, e.priors, strict=True)},
            "diagnostics": {k: v for k, v in e.diagnostics.items() if k != "calibration"}})
    if plots:
        _labelshift_plots(out, summary, cats)


def _csv(rows: Sequence[Sequence[Any]]) -> str:
    buf = _io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> None:
    with io.atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=110, metadata={"Software": None})


def _labelshift_plots(out: Path, s: dict, cats: list[str]) -> None:
    plt = _plt()
    k = len(cats)
    # confusion matrix shown the usual way: rows = true class, columns = predicted
    M = np.asarray(s["confusion_matrix"]["hard"]).T
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * k, 0.8 + 0.7 * k))
    ax.imshow(M, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{M[i, j]:.2f}", ha="center", va="center", fontsize=8,
                    color="white" if M[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), cats, rotation=30, ha="right")
    ax.set_yticks(range(k), cats)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"validation P(pred | true), acc {s['val_metrics']['val_acc']:.3f}, "
                 f"cond {s['condition_number']['hard']:.1f}", fontsize=9)
    fig.tight_layout()
    _save(fig, out / "confusion_matrix.png")

    x = np.arange(k)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * k), 4))
    pr = s["priors"]
    pt = np.array([pr[c]["point"] for c in cats])
    err = np.vstack([pt - [pr[c]["ci_lo"] for c in cats], [pr[c]["ci_hi"] for c in cats] - pt])
    ax.bar(x, pt, 0.6, yerr=np.clip(err, 0, None), capsize=3,
           label=f"{s['estimator']} ({100 * s['bootstrap']['ci']:.0f}% CI)")
    for j, (m, e) in enumerate(s["estimates"].items()):
        if m != s["estimator"]:
            ax.plot(x + 0.08 * (j - 3), [e[c] for c in cats], "o", ms=4, label=m)
    ax.set_xticks(x, cats, rotation=30, ha="right")
    ax.set_ylabel("estimated share")
    ax.legend(fontsize=7)
    fig.tight_layout()
    _save(fig, out / "priors.png")

    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    pb, cp = np.array(s["pbar"]), np.array(s["ctpi"])
    ax.scatter(pb, cp)
    for c, a, b in zip(cats, pb, cp, strict=True):
        ax.annotate(c, (a, b), fontsize=7)
    hi = max(pb.max(), cp.max()) * 1.1
    ax.plot([0, hi], [0, hi], "k--", lw=0.8)
    ax.set_xlabel("p-bar (mean predicted probability)")
    ax.set_ylabel("C_soft @ priors")
    ax.set_title("label-shift consistency (on the line = consistent)", fontsize=9)
    fig.tight_layout()
    _save(fig, out / "pbar_vs_ctpi.png")
    plt.close("all")


# ---------------------------------------------------------------------------------------
# Min-K%++ membership rates


def minkpp_scores(model, tokenizer, texts: Sequence[str], mink_ratio: float = 0.1,
                  max_tokens: int = 128, batch_size: int = 16, progress: bool = True
                  ) -> np.ndarray:
    """Min-K%++ (k = ``100 * mink_ratio``) of each text's first ``max_tokens`` tokens.

    The membership pipeline's code: :func:`anatomy.lm.tokenize_texts` (no BOS),
    :func:`anatomy.lm.token_stats` (batched, padding masked) and
    :func:`anatomy.scores.min_k_plus_plus`. Sharded over torchrun ranks; every rank gets
    all scores in input order. Texts of fewer than 2 tokens score NaN.
    """
    from anatomy.lm import dist_info, gather_ordered, shard_indices, token_stats, tokenize_texts
    from anatomy.scores import min_k_plus_plus

    if not 0 < mink_ratio <= 1:
        raise InputError(None, f"--mink_ratio must be in (0, 1], got {mink_ratio}")
    rank, world_size = dist_info()
    mine = shard_indices(len(texts), rank, world_size)
    ids = tokenize_texts(tokenizer, [texts[i] for i in mine], max_tokens)
    stats = token_stats(model, ids, batch_size=batch_size, progress=progress)
    k = 100.0 * mink_ratio
    sc = [min_k_plus_plus(s.logprob, s.mean, s.var, k) if len(s) else float("nan")
          for s in stats]
    return np.asarray(gather_ordered(sc, mine, len(texts)), dtype=np.float64)


def _pool_sizes(samples_dir: Path, counts: Mapping[str, int], merge_web: bool
                ) -> tuple[dict[str, float], str]:
    """Per-category pool sizes the samples were drawn from (``eligible`` in the fetch meta
    file), else the sample counts themselves."""
    from anatomy.mixture.slimpajama import STATS_FILE

    meta = samples_dir / STATS_FILE
    if meta.is_file():
        elig = (io.read_json(meta).get("stats") or {}).get("eligible") or {}
        sizes: dict[str, float] = {}
        for c, n in elig.items():
            key = "web" if merge_web and c.lower() in ("commoncrawl", "c4") else c
            sizes[key] = sizes.get(key, 0.0) + float(n)
        if all(c in sizes and sizes[c] > 0 for c in counts):
            return {c: sizes[c] for c in counts}, f"eligible records ({meta.name})"
    return {c: float(n) for c, n in counts.items()}, "sample counts"


def load_reference(path: PathLike, categories: Sequence[str], merge_web: bool = False
                   ) -> dict[str | None, list[str]]:
    """Known non-member texts, by category (key ``None`` for records without one).

    JSONL with ``text`` and optionally ``category`` (or SlimPajama's
    ``meta.redpajama_set_name`` matched to a category name case-insensitively).
    """
    from anatomy.mixture.evaluate import category_key

    keys = {category_key(c): c for c in categories}
    out: dict[str | None, list[str]] = {}
    for i, rec in enumerate(io.iter_jsonl(path, required=("text",)), 1):
        if not isinstance(rec["text"], str):
            raise InputError(path, '"text" is not a string', i)
        cat = rec.get("category")
        if cat is None and isinstance(rec.get("meta"), Mapping):
            cat = rec["meta"].get("redpajama_set_name")
        if cat is not None:
            k = category_key(cat)
            if merge_web and k in ("commoncrawl", "c4"):
                k = "web"
            if k not in keys:
                raise InputError(path, f"category {cat!r} is not one of {list(categories)}", i)
            cat = keys[k]
        if rec["text"].strip():
            out.setdefault(cat, []).append(rec["text"])
    if not out:
        raise InputError(path, "no reference texts")
    return out


def world_reference_nonmembers(world: PathLike, n_per_category: int = 200
                               ) -> list[dict[str, Any]]:
    """Known non-members for a miniworld: corpus documents the world never trained on.

    Re-reads the world's corpus (same sources and seed as ``build_world``) and keeps
    documents that never entered the token stream (not in ``truth/docs.jsonl.gz``) and are
    not in the pools, i.e. text of the right category that is certainly not a member and
    not one of the scored samples. They come mostly from files the world read past its
    budget or never read, so their distribution differs slightly from the pools'. This
    uses the world's ground truth; on real models supply your own known non-members (e.g.
    text published after the training cut-off).
    """
    from anatomy.world.corpus import iter_category

    w = Path(world)
    truth = io.read_json(w / "truth.json")
    seen = {(r["source"], r["part"]) for r in io.iter_jsonl(w / "truth" / "docs.jsonl.gz")}
    pool_texts = set()
    for shard in truth["pools"]["shards"]:
        pool_texts.update(r["text"].strip() for r in io.iter_jsonl(w / "pools" / shard))
    out = []
    for cat in truth["categories"]:
        got = 0
        for d, _src, _sha in iter_category(cat, truth["seed"]):
            if (d.source, d.part) in seen or d.text.strip() in pool_texts or not d.text.strip():
                continue
            out.append({"text": d.text, "category": cat, "source": d.source, "part": d.part})
            got += 1
            if got >= n_per_category:
                break
        if got < n_per_category:
            log.warning("%s: only %d never-trained documents available", cat, got)
    return out


def _joint_bootstrap(scores: Mapping[str, np.ndarray], rate: Callable[..., float],
                     refs: Mapping[str, np.ndarray] | None, n_boot: int,
                     rng: np.random.Generator) -> np.ndarray:
    """``[n_boot, K]`` membership rates, every category resampled in the same round.

    The library's per-category functions return interval summaries; the global mixture's
    interval needs the rates of one round together, to normalise them jointly.
    """
    cats = list(scores)
    out = np.empty((n_boot, len(cats)))
    for b in range(n_boot):
        for j, c in enumerate(cats):
            x = scores[c][rng.integers(0, scores[c].size, scores[c].size)]
            if refs is None:
                out[b, j] = rate(x)
            else:
                r = refs[c][rng.integers(0, refs[c].size, refs[c].size)]
                out[b, j] = rate(x, r)
    return out


def _normalised(rates: np.ndarray, weights: np.ndarray) -> np.ndarray:
    m = rates * weights
    s = m.sum(axis=-1, keepdims=True)
    return np.divide(m, s, out=np.full_like(m, np.nan), where=s > 0)


def run_minkpp_mix(samples_dir: PathLike, output_dir: PathLike, run_name: str, *,
                   target_model: str, revision: str | None = None, merge_web: bool = False,
                   mink_ratio: float = 0.1, max_tokens: int = 128, half: bool = False,
                   int8: bool = False, reference_nonmembers: PathLike | None = None,
                   world: PathLike | None = None, n_reference: int = 200,
                   n_boot: int = 200, ci: float = 0.90, seed: int = 0, batch_size: int = 16,
                   max_per_class: int | None = None, storey_lambda: float = 0.5,
                   device: str | None = None, overwrite: bool = False,
                   progress: bool = True) -> dict[str, Any] | None:
    """Membership rate per category from Min-K%++ scores; their pool-weighted mixture.

    Rates: the GMM rate (:func:`anatomy.mixture.gmm.membership_rate_gmm`'s point) always;
    with ``reference_nonmembers`` (a JSONL, or ``"world"`` for
    :func:`world_reference_nonmembers` of the miniworld ``world``) also the calibrated rate
    (:func:`anatomy.mixture.gmm.membership_rate_calibrated`, Storey's estimator on conformal
    p-values), which is then the primary estimate. Global mixture:
    :func:`anatomy.mixture.gmm.normalise_mixture` with the sampled pools' sizes; intervals
    from a joint percentile bootstrap (every category resampled in each round, the rates
    normalised per round). Writes ``summary.json`` (``global_mixture_over_sampled_pool``,
    ``per_category``, ``priors``), ``per_category.csv``, ``global_mixture.csv`` and the
    per-sample ``scores.jsonl``. ``half``: fp16 weights on a GPU, bf16 on the CPU;
    ``int8``: dynamic int8 quantisation (CPU).
    """
    from anatomy.lm import dist_info, load_causal_lm, load_tokenizer, resolve_device
    from anatomy.mixture import gmm

    rank, _ = dist_info()
    out = Path(output_dir) / run_name
    if (out / "summary.json").exists() and not overwrite:
        raise InputError(out / "summary.json", "output exists (pass --overwrite to replace it)")
    samples = load_category_samples(samples_dir, merge_web=merge_web,
                                    max_per_class=max_per_class, seed=seed)
    cats = samples.categories
    ref_texts: dict[str | None, list[str]] | None = None
    ref_source = None
    if reference_nonmembers is not None:
        if str(reference_nonmembers) == "world":
            if world is None:
                raise InputError(None, '--reference_nonmembers world needs --world')
            recs = world_reference_nonmembers(world, n_reference)
            if rank == 0:
                io.write_jsonl(out / "reference_nonmembers.jsonl", recs)
            ref_source = str(out / "reference_nonmembers.jsonl")
            ref_texts = load_reference_records(recs, cats)
        else:
            ref_source = str(reference_nonmembers)
            ref_texts = load_reference(reference_nonmembers, cats, merge_web)

    if half and int8:
        raise InputError(None, "choose --half or --int8, not both")
    dtype = "float32"
    if half:
        dtype = "float16" if resolve_device(device).type == "cuda" else "bfloat16"
    model = load_causal_lm(target_model, revision=revision, dtype=dtype, device=device,
                           int8=int8)
    tok = load_tokenizer(target_model, revision=revision)
    all_texts = list(samples.texts)
    ref_slices: dict[str | None, slice] = {}
    if ref_texts:
        for c, t in ref_texts.items():
            ref_slices[c] = slice(len(all_texts), len(all_texts) + len(t))
            all_texts += t
    scores = minkpp_scores(model, tok, all_texts, mink_ratio, max_tokens, batch_size,
                           progress)
    if rank > 0:
        return None
    n_s = len(samples.texts)
    sample_scores = scores[:n_s]
    by_cat = {c: sample_scores[samples.labels == j] for j, c in enumerate(cats)}
    by_cat = {c: v[np.isfinite(v)] for c, v in by_cat.items()}
    refs: dict[str, np.ndarray] | None = None
    ref_kind: dict[str, str] = {}
    if ref_texts:
        ref_sc = {c: scores[s][np.isfinite(scores[s])] for c, s in ref_slices.items()}
        pooled = np.concatenate(list(ref_sc.values()))
        refs = {}
        for c in cats:
            if c in ref_sc and ref_sc[c].size >= 10:
                refs[c], ref_kind[c] = ref_sc[c], "category"
            else:  # too few of its own: all reference texts together (less exact)
                refs[c], ref_kind[c] = pooled, "pooled"
                log.warning("%s: fewer than 10 reference non-members of its own; using all "
                            "%d reference texts", c, pooled.size)

    rows = []
    for c in cats:
        g = gmm.membership_rate_gmm(by_cat[c], seed=seed, n_boot=0)
        row = {"category": c, "n": int(by_cat[c].size), "pi_hat": g["point"],
               "score_mean": float(by_cat[c].mean()), "score_std": float(by_cat[c].std()),
               "gmm_means": g["gmm_means"], "gmm_stds": g["gmm_stds"]}
        if refs is not None:
            cal = gmm.membership_rate_calibrated(by_cat[c], refs[c], lam=storey_lambda,
                                                 seed=seed, n_boot=0)
            row.update(pi_calibrated=cal["point"], n_reference=cal["n_reference"],
                       reference=ref_kind[c],
                       reference_score_mean=float(refs[c].mean()))
        rows.append(row)

    sizes, size_source = _pool_sizes(Path(samples_dir), {c: by_cat[c].size for c in cats},
                                     merge_web)
    w = np.array([sizes[c] for c in cats])
    rng = np.random.default_rng(seed)
    variants = {"gmm": (lambda x: gmm.fit_gmm2(x, seed)["rate"], None, "pi_hat")}
    if refs is not None:
        variants["calibrated"] = (lambda x, r: gmm.storey_member_rate(x, r, storey_lambda),
                                  refs, "pi_calibrated")
    mixtures: dict[str, dict[str, dict[str, float]]] = {}
    a = (1.0 - ci) / 2.0
    for name, (fn, rf, key) in variants.items():
        point = np.array([r[key] for r in rows])
        draws = _joint_bootstrap(by_cat, fn, rf, n_boot, rng) if n_boot > 0 else point[None]
        lo, hi = np.quantile(draws, [a, 1 - a], axis=0)
        for j, r in enumerate(rows):
            r.update({f"{key}_mean": float(draws[:, j].mean()), f"{key}_ci_lo": float(lo[j]),
                      f"{key}_ci_hi": float(hi[j])})
        mix_point = (gmm.normalise_mixture(dict(zip(cats, point, strict=True)), sizes)
                     if np.any(point * w > 0) else dict.fromkeys(cats, float("nan")))
        mix_draws = _normalised(draws, w)
        mlo, mhi = np.nanquantile(mix_draws, [a, 1 - a], axis=0)
        mixtures[name] = {c: {"point": float(mix_point[c]),
                              "mean": float(np.nanmean(mix_draws[:, j])),
                              "ci_lo": float(mlo[j]), "ci_hi": float(mhi[j])}
                          for j, c in enumerate(cats)}
    primary = "calibrated" if refs is not None else "gmm"
    config = {"local_samples_dir": str(samples_dir), "merge_web": merge_web,
              "target_model": target_model, "hf_revision": revision, "mink_ratio": mink_ratio,
              "max_tokens": max_tokens, "half": half, "int8": int8, "dtype": dtype,
              "reference_nonmembers": ref_source, "n_boot": n_boot, "ci": ci, "seed": seed,
              "storey_lambda": storey_lambda, "max_per_class": max_per_class}
    summary = {
        "config": config,
        "categories": cats,
        "method": f"minkpp_{primary}",
        "per_category": rows,
        "pool_sizes": {c: sizes[c] for c in cats}, "pool_sizes_from": size_source,
        "global_mixture_over_sampled_pool": {c: mixtures[primary][c]["point"] for c in cats},
        # members found / pool size: the published tool's overall coverage
        "overall_coverage_over_sampled_pool": float(
            np.dot([r[variants[primary][2]] for r in rows], w) / w.sum()),
        "priors": mixtures[primary],
        "mixtures": mixtures,
    }
    _write_minkpp(out, summary, samples, sample_scores)
    return summary


def load_reference_records(recs: Sequence[Mapping[str, Any]], categories: Sequence[str]
                           ) -> dict[str | None, list[str]]:
    """In-memory version of :func:`load_reference` for records with a known ``category``."""
    out: dict[str | None, list[str]] = {}
    for r in recs:
        if r["category"] in categories and r["text"].strip():
            out.setdefault(r["category"], []).append(r["text"])
    return out


def _write_minkpp(out: Path, s: dict, samples, scores: np.ndarray) -> None:
    io.write_json(out / "summary.json", s)
    cats = s["categories"]
    keys = [k for k in ("pi_hat", "pi_hat_mean", "pi_hat_ci_lo", "pi_hat_ci_hi",
                        "pi_calibrated", "pi_calibrated_mean", "pi_calibrated_ci_lo",
                        "pi_calibrated_ci_hi", "score_mean", "score_std")
            if k in s["per_category"][0]]
    rows = [["category", "n", *keys, "pool_size"]]
    for r in s["per_category"]:
        rows.append([r["category"], r["n"], *(f"{r[k]:.6f}" for k in keys),
                     f"{s['pool_sizes'][r['category']]:g}"])
    io.write_text(out / "per_category.csv", _csv(rows))
    rows = [["category", "share", "ci_lo", "ci_hi"]]
    for c in cats:
        p = s["priors"][c]
        rows.append([c, f"{p['point']:.6f}", f"{p['ci_lo']:.6f}", f"{p['ci_hi']:.6f}"])
    io.write_text(out / "global_mixture.csv", _csv(rows))
    io.write_jsonl(out / "scores.jsonl", (
        {"category": cats[int(y)], "minkpp": None if not np.isfinite(v) else float(v)}
        for y, v in zip(samples.labels, scores, strict=True)))
