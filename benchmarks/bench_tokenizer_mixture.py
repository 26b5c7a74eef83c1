"""Benchmark the merge-list arm of pipeline B: Hayase et al. (2024)'s controlled experiment
(not a test: prints tables, asserts nothing).

For each category set, ``--trials`` byte-level BPE tokenizers are trained with ``tokenizers``
(their ``train_tokenizer_or_dump_frequencies``: ``Digits`` then ``ByteLevel`` pre-tokenization,
here ``256 + --merges`` tokens) on ``--total_bytes`` of text mixed by a mixture drawn
uniformly from the simplex (Smith & Tromble, as their ``sample_from_unit_simplex``). The LP
of ``anatomy.mixture.tokenizer_mixture`` then estimates each mixture from per-category
samples of two kinds:

* ``iid``: held-out documents of the same files the training text came from;
* ``other``: documents of other files of the category (what a real user has: samples of the
  category, never the training documents);
* ``train``: the tokenizer's own training documents (every merge is then exactly the most
  frequent pair, ties aside): the ceiling of the method at this scale, no sampling error.

Category sets (local text only):

* ``world``: the miniworld's six corpus categories (``anatomy.world.corpus``: code, docs,
  data, readme, license, reference);
* ``languages``: six file types of the installed Python and its packages: Python
  (site-packages ``*.py``), C (``*.c``, ``*.h``), C++ (``*.hpp``, ``*.cpp``, ``*.cc``,
  ``*.cuh``, ...), Cython (``*.pyx``, ``*.pxd``, ``*.pxi``), JSON and reStructuredText.

Each category's files are visited in a seeded order, cut into documents
(``anatomy.world.corpus.cut_documents``) and dealt to two halves balanced by bytes: side A
gives the ``iid`` sample (its first ``--sample_bytes``, at most half of A) and the training
pool (the rest, cycled in a per-trial seeded order when a category's share needs more: the
paper's repetition, counted), side B the ``other`` sample. A training pool's last document is cut to
the exact byte target, so the truth is the bytes each category put in.

Baselines (the paper's §5): uniform; random (the mean MSE of 1,000 draws from the simplex);
tokenizer encoding efficiency (TEE: shares proportional to bytes per token on each sample);
token classification (TC: each merged token to the category where it is most frequent per
byte, shares = fractions of tokens). The table gives MSE as the paper does (mean over
categories of the squared error; mean and std of log10 over trials), accuracy (1 - L1/2)
and, per row, how many times lower our geometric-mean MSE is than the best baseline's.
"LP, pair weight w" rows solve the LP with the per-pair slacks weighted w in the objective
(the paper: 1; a lower weight makes it cheaper to excuse a pair that is frequent in a sample
but not in the training text, the shifted samples' main failure); "first T" rows solve over
the first T merges only (the same replay), the other remedy the issue names.

Measured here (the defaults: 20 mixtures per set, 1,000 merges, 1 MB of training text, 300 KB
samples; about 40 minutes, run beside other jobs): log10 MSE / accuracy of the paper's LP vs
the best baseline (TC everywhere): world iid -3.40 / 0.929 vs -1.92 / 0.714 (30x lower MSE),
world other -2.05 / 0.750 (1.4x), languages iid -3.51 / 0.956 (35x), languages other -2.34 /
0.812 (2.4x); pair weight 0.3: 44x, 4.0x, 41x, 3.3x (accuracy 0.951, 0.849, 0.957, 0.847);
first 300 merges: worse on every row; ``train`` samples: every mixture recovered exactly
(MSE <= 1e-12).

The scale part (``--parts scale``) trains one real-size tokenizer (``--scale_merges``
30,000 merges on ``--scale_total_bytes`` 10 MB of the ``languages`` kinds, a seeded mixture),
writes it and two sample folders (other files, 1 MB per kind; the training text) under
``--scale_dir`` in ``infer_tokenizer_mixture.py``'s input format, and solves the LP at each T
of ``--scale_T``: time, rounds, rows kept / added / dropped, objective (against the solver
that keeps every row up to ``--scale_full_upto``), accuracy and peak memory. Measured here
(alone): T = 1k / 3k / 10k 1.0 / 7.2 / 73.2 s, accuracy 0.755 / 0.753 / 0.755, the objective
of keeping every row at 1k and 3k; T = 30k stopped unconverged at 600 s (accuracy 0.756,
1.8 GB); the training text as samples: T = 30k in 2.0 s, accuracy 1.0000.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anatomy import cli  # noqa: E402

EXAMPLES = """examples:
  python benchmarks/bench_tokenizer_mixture.py
  python benchmarks/bench_tokenizer_mixture.py --parts controlled --sets world --trials 5
  python benchmarks/bench_tokenizer_mixture.py --parts scale --scale_T 1000,3000,10000,30000
"""

LANGUAGES = {
    "python": (".py",),
    "c": (".c", ".h"),
    "cpp": (".hpp", ".cpp", ".cc", ".cxx", ".cuh", ".cu", ".hh"),
    "cython": (".pyx", ".pxd", ".pxi"),
    "json": (".json",),
    "rst": (".rst",),
}


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--sets", default="world,languages",
                   help="category sets, comma-separated: world, languages")
    p.add_argument("--trials", type=int, default=20, help="tokenizers (mixtures) per set")
    p.add_argument("--total_bytes", type=int, default=1_000_000,
                   help="training text per tokenizer")
    p.add_argument("--merges", type=int, default=1000, help="merges per tokenizer")
    p.add_argument("--sample_bytes", type=int, default=300_000,
                   help="sample text per category and kind")
    p.add_argument("--pair_weights", default="1,0.3",
                   help="objective weights of the per-pair slacks to solve with (the paper: 1; "
                        "the first also for --prefixes)")
    p.add_argument("--prefixes", default="300",
                   help="also solve over only the first T merges (comma-separated)")
    p.add_argument("--competitors", type=int, default=5)
    p.add_argument("--parts", default="controlled,scale",
                   help="controlled (the paper's experiment), scale (one real-size tokenizer "
                        "solved at growing T)")
    g = p.add_argument_group("scale part")
    g.add_argument("--scale_merges", type=int, default=30000,
                   help="merges of the real-size tokenizer")
    g.add_argument("--scale_total_bytes", type=int, default=10_000_000,
                   help="its training text")
    g.add_argument("--scale_sample_bytes", type=int, default=1_000_000,
                   help="samples per category, from other files than the training text")
    g.add_argument("--scale_T", default="1000,3000,10000,30000",
                   help="merge counts to solve at")
    g.add_argument("--scale_full_upto", type=int, default=3000,
                   help="also solve keeping every row up to this T (the full LP's optimum)")
    g.add_argument("--scale_max_seconds", type=float, default=None,
                   help="stop an LP after this many seconds (reported unconverged)")
    g.add_argument("--scale_gap", type=float, default=0.0,
                   help="stop each LP once certified within this relative gap (0: exact)")
    g.add_argument("--scale_kinds", default="other,train",
                   help="sample kinds to solve with (train: only at the largest T)")
    g.add_argument("--scale_dir", default="data/bench/tokenizer_scale",
                   help="where the tokenizer and samples go (inputs of "
                        "infer_tokenizer_mixture.py, reused when present)")
    cli.add_run_args(p, seed=0)
    return p


def _key(seed: int, s: str) -> str:
    return hashlib.sha1(f"{seed}:{s}".encode()).hexdigest()


def world_documents(seed: int, need: int) -> dict[str, list[tuple[str, str]]]:
    """(source, document) pairs per miniworld category, about ``need`` bytes each."""
    from anatomy.world.corpus import CATEGORIES, iter_category

    out = {}
    for cat in CATEGORIES:
        docs, got = [], 0
        for d, _src, _sha in iter_category(cat, seed, min_chars=200, max_chars=2000):
            docs.append((d.source, d.text))
            got += len(d.text.encode("utf-8"))
            if got >= need:
                break
        out[cat] = docs
    return out


def language_documents(seed: int, need: int) -> dict[str, list[tuple[str, str]]]:
    """(file, document) pairs per file type of the installed Python, ``need`` bytes each."""
    import sysconfig

    import numpy as np

    from anatomy.world.corpus import cut_documents

    paths = sysconfig.get_paths()
    roots = sorted({Path(paths[k]) for k in ("stdlib", "purelib", "include") if k in paths})
    files: dict[str, list[Path]] = {c: [] for c in LANGUAGES}
    ext_of = {e: c for c, exts in LANGUAGES.items() for e in exts}
    for root in roots:
        for f in root.rglob("*"):
            c = ext_of.get(f.suffix)
            if c is None or not f.is_file() or f.stat().st_size > 2_000_000:
                continue
            if c == "python" and (root.name != "site-packages" or "tests" in f.parts):
                continue
            files[c].append(f)
    out = {}
    for i, (c, fs) in enumerate(files.items()):
        rng = np.random.default_rng([seed, i])
        docs, got = [], 0
        for f in sorted(set(fs), key=lambda p: _key(seed, p.as_posix())):
            try:
                text = f.read_text(encoding="utf-8").replace("\r\n", "\n")
            except (UnicodeDecodeError, OSError):
                continue
            for d in cut_documents(text, rng, 200, 2000):
                docs.append((f.as_posix(), d))
                got += len(d.encode("utf-8"))
            if got >= need:
                break
        out[c] = docs
    return out


def split_sides(docs: list[tuple[str, str]], seed: int, sample_bytes: int
                ) -> tuple[list[str], list[str], list[str]]:
    """``(iid sample, training pool, other-files sample)`` of one category: sources dealt to
    two sides balanced by bytes (seeded order), side A's documents shuffled into the iid
    sample and the pool, side B's first documents the other sample."""
    import numpy as np

    by_src: dict[str, list[str]] = {}
    for src, d in docs:
        by_src.setdefault(src, []).append(d)
    side = {0: [], 1: []}
    size = [0, 0]
    for src in sorted(by_src, key=lambda s: _key(seed, s)):
        k = 0 if size[0] <= size[1] else 1
        side[k] += by_src[src]
        size[k] += sum(len(d.encode("utf-8")) for d in by_src[src])
    rng = np.random.default_rng(seed)

    def take(ds: list[str], cap: int) -> tuple[list[str], list[str]]:
        order = rng.permutation(len(ds))
        got, head, rest = 0, [], []
        for i in order:
            (head if got < cap else rest).append(ds[i])
            if got < cap:
                got += len(ds[i].encode("utf-8"))
        return head, rest

    iid, pool = take(side[0], min(sample_bytes, size[0] // 2))  # half is left to train on
    other, _ = take(side[1], sample_bytes)
    return iid, pool, other


def simplex(rng, n: int, M: int = 10000):
    """A uniform point of the simplex (Smith & Tromble 2004), as the paper draws mixtures."""
    import numpy as np

    x = np.sort(rng.choice(np.arange(1, M), n - 1, replace=False))
    return np.diff(np.concatenate([[0], x, [M]])) / M


def training_text(pools: dict[str, list[str]], alpha, total: int, rng
                  ) -> tuple[list[str], list[str], dict[str, int], int]:
    """Documents giving each category ``alpha * total`` bytes (its pool in a seeded order,
    cycled when short; the last document cut to the target), each one's category, the bytes
    per category and how many documents were repeats."""
    texts, owner, got, repeats = [], [], {}, 0
    for (c, pool), a in zip(pools.items(), alpha, strict=True):
        want, n, i = int(a * total), 0, 0
        order = rng.permutation(len(pool))
        while n < want:
            d = pool[order[i % len(pool)]]
            repeats += i >= len(pool)
            b = d.encode("utf-8")
            if n + len(b) > want:
                d = b[:want - n].decode("utf-8", "ignore")
                b = d.encode("utf-8")
            texts.append(d)
            owner.append(c)
            n += len(b)
            i += 1
            if not b:
                break
        got[c] = n
    return texts, owner, got, repeats


def train_tokenizer(texts: list[str], merges: int, path: Path) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=256 + merges, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))


def scores(est: dict[str, float], truth: dict[str, float]) -> tuple[float, float]:
    """``(MSE, accuracy)``: the paper's MSE (mean over categories of the squared error) and
    the evaluator's accuracy, both from ``anatomy.mixture.evaluate.metrics``."""
    import numpy as np

    from anatomy.mixture.evaluate import metrics

    cats = sorted(truth)
    m = metrics(np.array([truth[c] for c in cats]), np.array([est[c] for c in cats]))
    return m["l2"] ** 2 / len(cats), m["accuracy"]


def run_set(name: str, docs: dict[str, list[tuple[str, str]]], args, prefixes: list[int],
            weights: list[float]) -> list[dict]:
    import numpy as np

    from anatomy.mixture import tokenizer_mixture as tm

    cats = sorted(docs)
    sides = {c: split_sides(docs[c], args.seed, args.sample_bytes) for c in cats}
    pools = {c: sides[c][1] for c in cats}
    samples = {"iid": {c: sides[c][0] for c in cats}, "other": {c: sides[c][2] for c in cats}}
    for kind, s in samples.items():
        print(f"[{name}] {kind} samples (KB): " + ", ".join(
            f"{c} {sum(len(t.encode()) for t in s[c]) / 1e3:.0f}" for c in cats))
    print(f"[{name}] training pools (KB): " + ", ".join(
        f"{c} {sum(len(t.encode()) for t in pools[c]) / 1e3:.0f}" for c in cats))
    words: dict[str, tuple] = {}
    rows, clock = [], {"train": 0.0, "replay": 0.0, "lp": 0.0, "baselines": 0.0}
    rng = np.random.default_rng([args.seed, 13])
    lp_main = f"LP, pair weight {weights[0]:g}"
    with tempfile.TemporaryDirectory() as tmp:
        for trial in range(args.trials):
            alpha = simplex(rng, len(cats))
            texts, owner, got, repeats = training_text(pools, alpha, args.total_bytes, rng)
            truth = {c: got[c] / sum(got.values()) for c in cats}
            t0 = time.perf_counter()
            path = Path(tmp) / f"{trial}.json"
            train_tokenizer(texts, args.merges, path)
            clock["train"] += time.perf_counter() - t0
            bpe = tm.load_bpe(path)
            pre = bpe.tokenizer.pre_tokenizer.__getstate__()
            by_cat = {c: [] for c in cats}
            for c, t in zip(owner, texts, strict=True):
                by_cat[c].append(t)
            samples["train"] = by_cat
            for kind, s in samples.items():
                if kind == "train" or words.get(kind, (None,))[0] != pre:  # fixed samples
                    _c, chosen, denoms = tm.choose_samples(  # a share can be tiny in training
                        s, seed=args.seed, min_bytes=1 if kind == "train" else tm.MIN_BYTES)
                    words[kind] = (pre, [tm.words_of(bpe, chosen[c]) for c in cats], denoms)
                _, wc, denoms = words[kind]
                est = {}
                t0 = time.perf_counter()
                rep = tm.MergeReplay(wc, bpe.end_of_word_suffix).run(bpe.merges)
                clock["replay"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                runs = [(None, w) for w in weights] + [(T, weights[0]) for T in prefixes
                                                       if len(bpe.merges) > T]
                for T, w in runs:
                    res = tm.solve_mixture(rep, denoms, args.competitors, merges=T,
                                           pair_weight=w)
                    label = (f"LP, pair weight {w:g}" if T is None
                             else f"LP, pair weight {w:g}, first {T}")
                    est[label] = dict(zip(cats, res.alpha.tolist(), strict=True))
                clock["lp"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                est.update(tm.baseline_mixtures(bpe, s))
                clock["baselines"] += time.perf_counter() - t0
                est["uniform"] = {c: 1 / len(cats) for c in cats}
                draws = [dict(zip(cats, simplex(rng, len(cats)), strict=True))
                         for _ in range(1000)]
                for method, e in est.items():
                    err, acc = scores(e, truth)
                    rows.append({"set": name, "kind": kind, "trial": trial, "method": method,
                                 "mse": err, "acc": acc})
                err, acc = np.mean([scores(d, truth) for d in draws], axis=0)
                rows.append({"set": name, "kind": kind, "trial": trial, "method": "random",
                             "mse": float(err), "acc": float(acc)})
            print(f"[{name}] trial {trial}: truth " + ", ".join(
                f"{c} {truth[c]:.3f}" for c in cats) + f"; {len(bpe.merges)} merges, "
                f"{repeats} repeated documents; LP accuracy " + "/".join(samples) + ": "
                + " / ".join(f"{r['acc']:.3f}" for r in rows
                             if r["trial"] == trial and r["method"] == lp_main))
    print(f"[{name}] time (s): " + ", ".join(f"{k} {v:.1f}" for k, v in clock.items()))
    return rows


def table(rows: list[dict]) -> None:
    import numpy as np

    baselines = ("uniform", "random", "TEE", "TC")
    print("\n| set | samples | method | log10 MSE (mean ± std) | accuracy | best baseline / "
          "this (MSE) |")
    print("|---|---|---|---|---|---|")
    for key in dict.fromkeys((r["set"], r["kind"]) for r in rows):
        group = [r for r in rows if (r["set"], r["kind"]) == key]
        methods = list(dict.fromkeys(r["method"] for r in group))
        logm = {m: np.log10([max(r["mse"], 1e-12) for r in group if r["method"] == m])
                for m in methods}
        best = min(float(logm[m].mean()) for m in baselines)
        for m in [*baselines, *[x for x in methods if x not in baselines]]:
            acc = np.mean([r["acc"] for r in group if r["method"] == m])
            ratio = 10 ** (best - logm[m].mean())
            print(f"| {key[0]} | {key[1]} | {m} | {logm[m].mean():.2f} ± {logm[m].std():.2f} "
                  f"| {acc:.3f} | {ratio:.3g}x |")


def _peak_rss_gb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux


def scale_inputs(args) -> tuple[Path, dict[str, Path], dict[str, float]]:
    """A real-size byte-level BPE (``--scale_merges`` merges on ``--scale_total_bytes`` of the
    six ``languages`` kinds, a seeded mixture) with two sample folders in
    ``infer_tokenizer_mixture.py``'s format: ``other`` (``--scale_sample_bytes`` per kind from
    other files) and ``train`` (the training text itself); the truth is written beside them.
    Built once under ``--scale_dir`` and reused (the files of the installed Python decide the
    text: another environment gives another tokenizer)."""
    import numpy as np

    from anatomy import io

    root = Path(args.scale_dir)
    tok = root / "tokenizer.json"
    dirs = {k: root / f"samples_{k}" for k in ("other", "train")}
    if not (root / "truth.json").is_file():
        t0 = time.perf_counter()
        docs = language_documents(args.seed, 2 * (args.scale_total_bytes
                                                  + args.scale_sample_bytes))
        cats = sorted(docs)
        sides = {c: split_sides(docs[c], args.seed, args.scale_sample_bytes) for c in cats}
        rng = np.random.default_rng([args.seed, 13])
        alpha = simplex(rng, len(cats))
        texts, owner, got, repeats = training_text({c: sides[c][1] for c in cats}, alpha,
                                                   args.scale_total_bytes, rng)
        t1 = time.perf_counter()
        root.mkdir(parents=True, exist_ok=True)
        train_tokenizer(texts, args.scale_merges, tok)
        print(f"[scale] documents {t1 - t0:.1f} s, tokenizer of {args.scale_merges} merges "
              f"trained in {time.perf_counter() - t1:.1f} s ({repeats} repeated documents)")
        by_cat = {c: [t for t, o in zip(texts, owner, strict=True) if o == c] for c in cats}
        for c in cats:
            io.write_jsonl(dirs["other"] / f"{c}.jsonl", ({"text": t} for t in sides[c][2]))
            io.write_jsonl(dirs["train"] / f"{c}.jsonl", ({"text": t} for t in by_cat[c]))
        io.write_json(root / "truth.json", {c: got[c] / sum(got.values()) for c in cats})
    return tok, dirs, io.read_json(root / "truth.json")


def run_scale(args) -> None:
    """The merge-list LP at real size: time, rows and accuracy against T, with samples from
    other files, and the ceiling with the training text as samples."""
    import numpy as np

    from anatomy.mixture import tokenizer_mixture as tm
    from anatomy.mixture.classifier import load_category_samples

    tok, dirs, truth = scale_inputs(args)
    bpe = tm.load_bpe(tok)
    cats = sorted(truth)
    t_true = np.array([truth[c] for c in cats])
    Ts = [int(x) for x in args.scale_T.split(",") if x.strip()]
    print(f"[scale] {tok}: {len(bpe.merges)} merges; truth " + ", ".join(
        f"{c} {truth[c]:.3f}" for c in cats))
    print("\n| samples | T | time (s) | LP rounds | rows kept / added / dropped | objective "
          "| accuracy | peak RSS (GB) |")
    print("|---|---|---|---|---|---|---|---|")
    for kind in [k.strip() for k in args.scale_kinds.split(",") if k.strip()]:
        cs = load_category_samples(dirs[kind])
        samples = cs.by_category()
        _c, chosen, denoms = tm.choose_samples(samples, seed=args.seed, min_bytes=1)
        t0 = time.perf_counter()
        words = [tm.words_of(bpe, chosen[c]) for c in cats]
        t1 = time.perf_counter()
        rep = tm.MergeReplay(words, bpe.end_of_word_suffix).run(bpe.merges[:max(Ts)])
        t2 = time.perf_counter()
        mb = denoms.sum() / 1e6
        print(f"| {kind} ({mb:.1f} MB) | - | pre-tokenization {t1 - t0:.1f}, replay of "
              f"{max(Ts)} merges {t2 - t1:.1f} | | | | | {_peak_rss_gb():.2f} |")
        for T in (Ts if kind == "other" else [max(Ts)]):
            t0 = time.perf_counter()
            r = tm.solve_mixture(rep, denoms, args.competitors, merges=T,
                                 max_seconds=args.scale_max_seconds, gap=args.scale_gap)
            el = time.perf_counter() - t0
            acc = 1 - np.abs(r.alpha - t_true).sum() / 2
            note = {"optimal": "", "gap": " (within the gap)"}.get(
                r.info["stop"], " (stopped, not converged)") + f", gap {r.info['gap']:.1e}"
            print(f"| {kind} | {T} | {el:.1f}{note} | {r.rounds} | {r.constraints:,} / "
                  f"{r.info['rows_added']:,} / {r.info['rows_dropped']:,} | {r.objective:.9g} "
                  f"| {acc:.4f} | {_peak_rss_gb():.2f} |", flush=True)
            if kind == "other" and args.scale_full_upto >= T:
                t0 = time.perf_counter()
                f = tm.solve_mixture(rep, denoms, 10, merges=T, drop_after=0)
                print(f"| {kind}, every row kept | {T} | {time.perf_counter() - t0:.1f} | "
                      f"{f.rounds} | {f.constraints:,} | {f.objective:.9g} (relative "
                      f"difference {abs(f.objective - r.objective) / f.objective:.1e}) | "
                      f"{1 - np.abs(f.alpha - t_true).sum() / 2:.4f} | {_peak_rss_gb():.2f} |",
                      flush=True)
    print(f"\nthe same run as a user makes it: python infer_tokenizer_mixture.py --tokenizer "
          f"{tok} --local_samples_dir {dirs['other']} --merges {max(Ts)}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    parts = {x.strip() for x in args.parts.split(",") if x.strip()}
    if "scale" in parts:
        run_scale(args)
    if "controlled" not in parts:
        return 0
    prefixes = [int(x) for x in args.prefixes.split(",") if x.strip()]
    weights = [float(x) for x in args.pair_weights.split(",") if x.strip()]
    need = 2 * (args.sample_bytes + args.total_bytes)
    rows = []
    for name in [s.strip() for s in args.sets.split(",") if s.strip()]:
        t0 = time.perf_counter()
        if name == "world":
            docs = world_documents(args.seed, need)
        elif name == "languages":
            docs = language_documents(args.seed, need)
        else:
            raise SystemExit(f"unknown set {name!r} (world, languages)")
        print(f"[{name}] documents read in {time.perf_counter() - t0:.1f} s")
        rows += run_set(name, docs, args, prefixes, weights)
    table(rows)
    return 0


if __name__ == "__main__":
    cli.run(main)
