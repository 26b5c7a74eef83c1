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
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import io
from anatomy.io import InputError, PathLike
from anatomy.mixture import labelshift as ls
from anatomy.mixture.classifier import (
    load_category_samples,
    samples_files,
    train_domain_classifier,
)

log = logging.getLogger("anatomy")

# Short, domain-neutral openings for --prompt_mode neutral (one per block of samples).
NEUTRAL_PROMPTS = ("The", "In", "This", "A", "#", "1")


# ---------------------------------------------------------------------------------------
# generation


def separator_id(model_or_config, tokenizer) -> int:
    """The document separator the LM was trained with: the model config's ``eos_token_id``.

    For OLMo (and the miniworld) this is the id written between documents (OLMo-7B: 50279),
    not the tokenizer's ``eos_token`` (id 0); the tokenizer's is the fallback.
    """
    cfg = getattr(model_or_config, "config", model_or_config)
    eos = getattr(cfg, "eos_token_id", None)
    if isinstance(eos, list | tuple):
        eos = eos[0] if eos else None
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        raise InputError(None, "the model config and tokenizer name no EOS id; pass --stop_id")
    return int(eos)


def _group_seed(seed: int, group: int) -> int:
    return int(np.random.SeedSequence([seed, group]).generate_state(1, np.uint32)[0])


class GenerationWork:
    """``n`` sampled texts as units: one fixed :func:`anatomy.lm.generate` batch each.

    ``unconditional``: every sample starts right after the document separator ``sep`` (a
    fresh document) and ends before the next one. ``neutral``: the ``n`` samples are split
    into consecutive blocks, one per :data:`NEUTRAL_PROMPTS` entry, each block continuing
    ``separator + prompt`` (the prompt is kept in ``text``). Sample ``i`` of a block draws
    from its own generator, so units can run on any rank in any order.
    """

    def __init__(self, tokenizer, n: int, max_new_tokens: int, sep: int, batch_size: int = 16,
                 seed: int = 0, prompt_mode: str = "unconditional", temperature: float = 1.0,
                 top_k: int | None = None):
        from anatomy.lm import generation_batches

        if prompt_mode not in ("unconditional", "neutral"):
            raise InputError(None, f"unknown prompt mode {prompt_mode!r} (unconditional, "
                                   "neutral)")
        self.tokenizer, self.n, self.max_new_tokens, self.sep = tokenizer, n, max_new_tokens, sep
        self.batch_size, self.temperature, self.top_k = batch_size, temperature, top_k
        if prompt_mode == "unconditional":
            groups = [("", n)]
        else:
            sizes = [len(a) for a in np.array_split(np.arange(n), len(NEUTRAL_PROMPTS))]
            groups = [(p, k) for p, k in zip(NEUTRAL_PROMPTS, sizes, strict=True) if k > 0]
        self.groups = []
        for g, (prompt, size) in enumerate(groups):
            ids = [sep] + (tokenizer(prompt, add_special_tokens=False)["input_ids"] if prompt
                           else [])
            seed_g = seed if prompt_mode == "unconditional" else _group_seed(seed, g)
            self.groups.append((prompt, size, ids, seed_g))
        self.units = [(g, b) for g, (_, size, _, _) in enumerate(self.groups)
                      for b in range(len(generation_batches(size, batch_size)))]
        self.n_units = len(self.units)
        self.model = None  # set before units are computed

    def compute_unit(self, u: int) -> dict[str, Any]:
        from anatomy.lm import generate

        g, b = self.units[u]
        prompt, size, ids, seed_g = self.groups[g]
        toks = generate(self.model, self.tokenizer, size, self.max_new_tokens,
                        batch_size=self.batch_size, seed=seed_g, prompt_ids=ids,
                        temperature=self.temperature, top_k=self.top_k, stop_id=self.sep,
                        batches=[b], progress=False)
        return {"records": [{"text": prompt + self.tokenizer.decode(t, skip_special_tokens=True),
                             "prompt": prompt, "n_tokens": len(t)} for t in toks]}

    def records(self, load) -> Iterator[dict[str, Any]]:
        for u in range(self.n_units):
            yield from load(u)["records"]


def generate_texts(model, tokenizer, n: int, max_new_tokens: int, batch_size: int = 16,
                   seed: int = 0, prompt_mode: str = "unconditional",
                   stop_id: int | None = None, temperature: float = 1.0,
                   top_k: int | None = None, progress: bool = True) -> list[dict[str, Any]]:
    """``n`` sampled texts ``{"text", "prompt", "n_tokens"}`` in sample order, in this process
    (:class:`GenerationWork`'s units, the ones ``run_labelshift.py``'s ranks share)."""
    from anatomy.progress import progress as bar

    sep = separator_id(model, tokenizer) if stop_id is None else int(stop_id)
    work = GenerationWork(tokenizer, n, max_new_tokens, sep, batch_size, seed, prompt_mode,
                          temperature, top_k)
    work.model = model
    done = {u: work.compute_unit(u) for u in bar(range(work.n_units), "generate", "batch",
                                                work.n_units, None if progress else True)}
    return list(work.records(done.__getitem__))


class _GenerationStep:
    name = "generate"

    def __init__(self, work: GenerationWork, out: Path, fp):
        from anatomy.execution import Output

        self.work, self.fingerprint = work, fp
        self.output = Output.file(out)
        self.n_units = work.n_units
        self.compute_unit = work.compute_unit

    def merge(self, load) -> dict[str, Any]:
        lens = []

        def recs():
            for r in self.work.records(load):
                lens.append(r["n_tokens"])
                yield r

        io.write_jsonl(self.output.files[0], recs())
        return {"n": len(lens), "mean_tokens": float(np.mean(lens)) if lens else 0.0}


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


LABELSHIFT_FILES = ("summary.json", "summary.csv")
LABELSHIFT_PLOTS = ("confusion_matrix.png", "priors.png", "pbar_vs_ctpi.png")


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
                   device: str | None = None, encoder_epochs: int = 3, ranks=None,
                   overwrite: bool = False, merge: bool = False, plots: bool = True,
                   progress: Callable | None = None) -> dict[str, Any] | None:
    """Estimate the category mixture of ``target_model``'s generations; write ``O/X/``.

    Writes ``generations.jsonl`` (unless reading ``cached_generations``; a sharded step:
    ``ranks`` share whole generation batches and the last to finish merges), then, in the
    process that has every generation, ``summary.json`` (``priors`` = the chosen estimator
    with bootstrap point/mean/ci_lo/ci_hi; ``estimates`` = every estimator's point estimate;
    confusion matrices, p-bar, condition numbers, calibration, config), ``summary.csv``,
    ``estimators/<method>/summary.json`` (one folder per estimator, so
    ``benchmark_evaluation.py --compare O/X/estimators/*`` scores them all) and, with
    ``plots``, ``confusion_matrix.png``, ``priors.png``, ``pbar_vs_ctpi.png``. Both outputs
    follow the fingerprint policy of :mod:`anatomy.execution`. Returns the summary, or
    ``None`` in a process that only generated its part.
    """
    from anatomy import execution
    from anatomy.lm import model_source, resolve_device

    ranks = ranks or execution.Ranks()
    if estimator not in ls.METHODS:
        raise InputError(None, f"unknown estimator {estimator!r} ({', '.join(ls.METHODS)})")
    samples_files(samples_dir)  # a damaged samples folder fails before any generation
    out = Path(output_dir) / run_name
    config = {k: (str(v) if isinstance(v, Path) else v) for k, v in {
        "local_samples_dir": samples_dir, "classifier": classifier, "merge_web": merge_web,
        "target_model": target_model, "hf_revision": revision, "num_prompts": num_prompts,
        "max_new_tokens": max_new_tokens, "use_cached_generations": cached_generations,
        "prompt_mode": prompt_mode, "temperature": temperature, "top_k": top_k,
        "estimator": estimator, "n_boot": n_boot, "ci": ci, "seed": seed,
        "val_fraction": val_fraction, "max_per_class": max_per_class,
        "batch_size": batch_size}.items()}
    gen_path = out / "generations.jsonl"

    # 1. generations first: a missing model fails before the classifier is trained
    gen_step = None
    if cached_generations is None:
        if target_model is None:
            raise InputError(None, "no target model (pass --target_model or "
                                   "--use_cached_generations)")
        from anatomy.lm import load_model_config, load_tokenizer

        tok = load_tokenizer(target_model, revision=revision)
        sep = separator_id(load_model_config(target_model, revision), tok) \
            if stop_id is None else int(stop_id)
        dev = resolve_device(device, ranks.local_rank)
        work = GenerationWork(tok, num_prompts, max_new_tokens, sep, batch_size, seed,
                              prompt_mode, temperature, top_k)
        gen_fp = execution.fingerprint(
            "generate", {"model": model_source(target_model, revision)},
            {"revision": revision, "num_prompts": num_prompts,
             "max_new_tokens": max_new_tokens, "batch_size": batch_size, "seed": seed,
             "prompt_mode": prompt_mode, "stop_id": sep, "temperature": temperature,
             "top_k": top_k, "dtype": dtype, "device": dev.type})
        gen_step = _GenerationStep(work, gen_path, gen_fp)
        gen_step.on_cpu = dev.type == "cpu"
        est_inputs = {"samples": samples_dir, "generations": None}
        config["generation_fingerprint"] = gen_fp.digest()
    else:
        est_inputs = {"samples": samples_dir, "generations": cached_generations}
    names = [*LABELSHIFT_FILES, *(f"estimators/{m}/summary.json" for m in ls.METHODS),
             *(LABELSHIFT_PLOTS if plots else ())]
    est_out = execution.Output.folder(out, names)
    est_fp = execution.fingerprint("labelshift", est_inputs,
                                   {**config, "encoder_epochs": encoder_epochs,
                                    "plots": plots})
    state, diffs = execution.output_state(est_out, est_fp)
    if state == "done" and not overwrite:
        log.info("%s: up to date (same inputs and flags), skipped; --overwrite to redo", out)
        return io.read_json(out / "summary.json") if ranks.rank == 0 else None
    if state in ("differs", "unmarked") and not overwrite:
        execution.check_output(est_out, est_fp, overwrite)  # raises, naming what differs

    if gen_step is not None:
        from anatomy.lm import load_causal_lm

        def prepare():
            work.model = load_causal_lm(target_model, revision=revision, dtype=dtype,
                                        device=str(dev))

        res = execution.run_step(gen_step, ranks, overwrite=overwrite, merge_only=merge,
                                 prepare=prepare)
        if not res.lead:
            return None
        texts = read_generations(gen_path)
        gen_stats = {"source": str(gen_path), "n": len(texts),
                     "mean_tokens": res.summary.get("mean_tokens"), "stop_id": sep}
    else:
        if ranks.rank > 0:  # nothing to share out
            return None
        texts = read_generations(cached_generations)
        gen_stats = {"source": str(cached_generations), "n": len(texts)}
    execution.check_output(est_out, est_fp, overwrite=True)  # removes a stale marker
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
    summary["samples_dropped"] = samples.dropped
    summary["samples_provenance"] = samples.provenance
    _write_labelshift(out, summary, ests, cats, plots)
    execution.mark_output(est_out, est_fp, {"estimator": estimator})
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


class MinkppWork:
    """Min-K%++ (k = ``100 * mink_ratio``) of each text's first ``max_tokens`` tokens, as units.

    The membership pipeline's code: :func:`anatomy.lm.tokenize_texts` (no BOS), one batch of
    the :func:`anatomy.lm.length_batches` plan per unit (:func:`anatomy.lm.batch_token_stats`,
    padding masked) and :func:`anatomy.scores.min_k_plus_plus`. Texts of fewer than 2 tokens
    score NaN. Batches never depend on the number of ranks, so neither do the scores, even
    with bf16 or int8 weights (dynamic int8 quantises activations per batch).
    """

    def __init__(self, tokenizer, texts: Sequence[str], mink_ratio: float = 0.1,
                 max_tokens: int = 128, batch_size: int = 16):
        from anatomy.lm import length_batches, tokenize_texts

        if not 0 < mink_ratio <= 1:
            raise InputError(None, f"--mink_ratio must be in (0, 1], got {mink_ratio}")
        self.k = 100.0 * mink_ratio
        self.ids = tokenize_texts(tokenizer, list(texts), max_tokens)
        self.batches = length_batches([len(t) for t in self.ids], batch_size)
        self.n_units = len(self.batches)
        self.model = None  # set before units are computed

    def compute_unit(self, u: int) -> dict[str, Any]:
        from anatomy.lm import batch_token_stats
        from anatomy.scores import min_k_plus_plus

        batch = self.batches[u]
        stats = batch_token_stats(self.model, self.ids, batch)
        sc = [min_k_plus_plus(s.logprob, s.mean, s.var, self.k) if len(s) else np.nan
              for s in stats]
        return {"rows": np.asarray(batch, np.int64), "scores": np.asarray(sc, np.float64)}

    def scores(self, load) -> np.ndarray:
        out = np.full(len(self.ids), np.nan)
        for u in range(self.n_units):
            part = load(u)
            out[part["rows"]] = part["scores"]
        return out


def minkpp_scores(model, tokenizer, texts: Sequence[str], mink_ratio: float = 0.1,
                  max_tokens: int = 128, batch_size: int = 16, progress: bool = True
                  ) -> np.ndarray:
    """:class:`MinkppWork`'s scores of ``texts``, every unit computed in this process."""
    from anatomy.progress import progress as bar

    work = MinkppWork(tokenizer, texts, mink_ratio, max_tokens, batch_size)
    work.model = model
    done = {u: work.compute_unit(u) for u in bar(range(work.n_units), "score", "batch",
                                                work.n_units, None if progress else True)}
    return work.scores(done.__getitem__)


class _MinkppStep:
    name = "run_minkpp_mix"

    def __init__(self, work: MinkppWork, output, fp, finish: Callable[[np.ndarray], dict]):
        self.work, self.output, self.fingerprint, self.finish = work, output, fp, finish
        self.n_units = work.n_units
        self.compute_unit = work.compute_unit

    def merge(self, load) -> dict[str, Any]:
        return self.finish(self.work.scores(load))


def _pool_sizes(samples_dir: Path, counts: Mapping[str, int], merge_web: bool
                ) -> tuple[dict[str, float], str]:
    """Per-category pool sizes the samples were drawn from: the distinct eligible texts in
    the fetch meta file (duplicates do not count), else the sample counts themselves."""
    from anatomy.mixture.slimpajama import STATS_FILE

    meta = samples_dir / STATS_FILE
    if meta.is_file():
        st = io.read_json(meta).get("stats") or {}
        elig = st.get("distinct") or st.get("eligible") or {}
        sizes: dict[str, float] = {}
        for c, n in elig.items():
            key = "web" if merge_web and c.lower() in ("commoncrawl", "c4") else c
            sizes[key] = sizes.get(key, 0.0) + float(n)
        if all(c in sizes and sizes[c] > 0 for c in counts):
            return {c: sizes[c] for c in counts}, f"distinct eligible records ({meta.name})"
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
    blank = 0
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
        else:
            blank += 1
    if not out:
        raise InputError(path, "no reference texts")
    if blank:
        log.info("%s: %d blank reference texts left out", path, blank)
    return out


def world_reference_nonmembers(world: PathLike, n_per_category: int = 200
                               ) -> list[dict[str, Any]]:
    """Known non-members for a miniworld: corpus documents the world never trained on.

    The builder's ``truth/unseen.jsonl.gz`` (:meth:`anatomy.truth.World.unseen`): per
    category, documents that never entered the token stream and are not in the pools, i.e.
    text of the right category that is certainly not a member and not one of the scored
    samples. They come mostly from files the world read past its budget or never read, so
    their distribution differs slightly from the pools'. This uses the world's ground truth;
    on real models supply your own known non-members (e.g. text published after the
    training cut-off).
    """
    from anatomy.truth import World

    w = World.open(world)
    out = w.unseen(n_per_category)
    for cat in w.truth["categories"]:
        got = sum(r["category"] == cat for r in out)
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


MINKPP_FILES = ("summary.json", "per_category.csv", "global_mixture.csv", "scores.jsonl")


def run_minkpp_mix(samples_dir: PathLike, output_dir: PathLike, run_name: str, *,
                   target_model: str, revision: str | None = None, merge_web: bool = False,
                   mink_ratio: float = 0.1, max_tokens: int = 128, half: bool = False,
                   int8: bool = False, reference_nonmembers: PathLike | None = None,
                   world: PathLike | None = None, n_reference: int = 200,
                   n_boot: int = 200, ci: float = 0.90, seed: int = 0, batch_size: int = 16,
                   max_per_class: int | None = None, storey_lambda: float = 0.5,
                   device: str | None = None, ranks=None, overwrite: bool = False,
                   merge: bool = False, progress: bool = True) -> dict[str, Any] | None:
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
    ``int8``: dynamic int8 quantisation (CPU). The scoring is a sharded step
    (:class:`MinkppWork`'s batches shared by ``ranks``); the process that merges writes the
    outputs and returns the summary (others return None).
    """
    from anatomy import execution
    from anatomy.lm import load_causal_lm, load_tokenizer, model_source, resolve_device

    ranks = ranks or execution.Ranks()
    out = Path(output_dir) / run_name
    samples = load_category_samples(samples_dir, merge_web=merge_web,
                                    max_per_class=max_per_class, seed=seed)
    cats = samples.categories
    ref_texts: dict[str | None, list[str]] | None = None
    ref_source = None
    ref_recs = None
    if reference_nonmembers is not None:
        if str(reference_nonmembers) == "world":
            if world is None:
                raise InputError(None, '--reference_nonmembers world needs --world')
            ref_recs = world_reference_nonmembers(world, n_reference)
            ref_source = str(out / "reference_nonmembers.jsonl")
            ref_texts = load_reference_records(ref_recs, cats)
        else:
            ref_source = str(reference_nonmembers)
            ref_texts = load_reference(reference_nonmembers, cats, merge_web)

    if half and int8:
        raise InputError(None, "choose --half or --int8, not both")
    dev = resolve_device(device, ranks.local_rank)
    dtype = "float32"
    if half:
        dtype = "float16" if dev.type == "cuda" else "bfloat16"
    tok = load_tokenizer(target_model, revision=revision)
    all_texts = list(samples.texts)
    ref_slices: dict[str | None, slice] = {}
    if ref_texts:
        for c, t in ref_texts.items():
            ref_slices[c] = slice(len(all_texts), len(all_texts) + len(t))
            all_texts += t
    work = MinkppWork(tok, all_texts, mink_ratio, max_tokens, batch_size)
    config = {"local_samples_dir": str(samples_dir), "merge_web": merge_web,
              "target_model": target_model, "hf_revision": revision, "mink_ratio": mink_ratio,
              "max_tokens": max_tokens, "half": half, "int8": int8, "dtype": dtype,
              "reference_nonmembers": ref_source, "n_boot": n_boot, "ci": ci, "seed": seed,
              "storey_lambda": storey_lambda, "max_per_class": max_per_class}
    from anatomy.truth import UNSEEN

    ref_input = (Path(world) / UNSEEN if str(reference_nonmembers) == "world"
                 else reference_nonmembers)
    fp = execution.fingerprint(
        "run_minkpp_mix", {"samples": samples_dir, "model": model_source(target_model, revision),
                           "reference": ref_input},
        {**config, "reference_nonmembers": str(reference_nonmembers), "n_reference": n_reference,
         "batch_size": batch_size, "device": dev.type})
    variants = ["gmm", *(["calibrated"] if ref_texts else [])]
    files = [*MINKPP_FILES, *(f"variants/minkpp_{v}/summary.json" for v in variants),
             *(["reference_nonmembers.jsonl"] if ref_recs is not None else [])]
    output = execution.Output.folder(out, files)

    def finish(scores: np.ndarray) -> dict[str, Any]:
        if ref_recs is not None:
            io.write_jsonl(out / "reference_nonmembers.jsonl", ref_recs)
        s = _minkpp_summary(scores, samples, ref_texts, ref_slices, sizes_from=samples_dir,
                            merge_web=merge_web, n_boot=n_boot, ci=ci, seed=seed,
                            storey_lambda=storey_lambda, config=config)
        _write_minkpp(out, s, samples, scores[:len(samples.texts)])
        return {"method": s["method"]}

    def prepare():
        work.model = load_causal_lm(target_model, revision=revision, dtype=dtype,
                                    device=str(dev), int8=int8)

    step = _MinkppStep(work, output, fp, finish)
    step.on_cpu = dev.type == "cpu"
    res = execution.run_step(step, ranks, overwrite=overwrite, merge_only=merge,
                             prepare=prepare, show_progress=progress)
    return io.read_json(out / "summary.json") if res.lead else None


def _minkpp_summary(scores: np.ndarray, samples, ref_texts, ref_slices, *, sizes_from: PathLike,
                    merge_web: bool, n_boot: int, ci: float, seed: int, storey_lambda: float,
                    config: dict[str, Any]) -> dict[str, Any]:
    """Rates, the global mixture and its intervals from every text's Min-K%++ score."""
    from anatomy.mixture import gmm

    cats = samples.categories
    n_s = len(samples.texts)
    sample_scores = scores[:n_s]
    by_cat = {c: sample_scores[samples.labels == j] for j, c in enumerate(cats)}
    # texts of fewer than 2 tokens have no score: counted, then left out
    n_unscored = {c: int((~np.isfinite(v)).sum()) for c, v in by_cat.items()}
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
        row = {"category": c, "n": int(by_cat[c].size), "n_unscored": n_unscored[c],
               "n_dropped_blank": samples.dropped.get("blank", {}).get(c, 0),
               "n_dropped_capped": samples.dropped.get("capped", {}).get(c, 0),
               "pi_hat": g["point"],
               "score_mean": float(by_cat[c].mean()), "score_std": float(by_cat[c].std()),
               "gmm_means": g["gmm_means"], "gmm_stds": g["gmm_stds"]}
        if refs is not None:
            cal = gmm.membership_rate_calibrated(by_cat[c], refs[c], lam=storey_lambda,
                                                 seed=seed, n_boot=0)
            row.update(pi_calibrated=cal["point"], n_reference=cal["n_reference"],
                       reference=ref_kind[c],
                       reference_score_mean=float(refs[c].mean()))
        rows.append(row)

    sizes, size_source = _pool_sizes(Path(sizes_from), {c: by_cat[c].size for c in cats},
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
    return summary


def load_reference_records(recs: Sequence[Mapping[str, Any]], categories: Sequence[str]
                           ) -> dict[str | None, list[str]]:
    """In-memory version of :func:`load_reference` for records with a known ``category``;
    records of other categories and blank texts are counted in the log, then left out."""
    out: dict[str | None, list[str]] = {}
    other = blank = 0
    for r in recs:
        if r["category"] not in categories:
            other += 1
        elif not r["text"].strip():
            blank += 1
        else:
            out.setdefault(r["category"], []).append(r["text"])
    if other or blank:
        log.info("reference non-members: %d of other categories and %d blank left out",
                 other, blank)
    return out


def _write_minkpp(out: Path, s: dict, samples, scores: np.ndarray) -> None:
    io.write_json(out / "summary.json", s)
    # one folder per rate estimator, so benchmark_evaluation.py --compare OUT/variants/*
    # scores each under its own name (the summary's "priors" are the primary one's)
    for name, mix in s["mixtures"].items():
        io.write_json(out / "variants" / f"minkpp_{name}" / "summary.json", {
            "method": f"minkpp_{name}", "categories": s["categories"], "priors": mix,
            "estimates": "global_mixture_over_sampled_pool: the mixture of the pool's "
                         "members"})
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
