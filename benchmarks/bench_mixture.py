"""Benchmark pipeline B's model-dependent steps (not a test: prints numbers, asserts nothing).

1. The TF-IDF + logistic-regression domain classifier: fit and predict time on
   --n_classes x --n_docs documents. The documents are real local text, the miniworld's
   corpus sources (anatomy.world.corpus): its six categories, with "code" split in two (the
   Python source of the pinned wheels, "code", and of the pinned sdists, "code_pkg"). Consecutive
   corpus documents of a class are joined into texts of log-uniform length 300..2000
   characters (what fetch_category_samples.py keeps by default); a class whose text runs out
   is reused with its lines shuffled (a seeded variation), and the script says how often.
2. Generation throughput of the miniworld's final model: --gen_n samples of
   --gen_tokens new tokens, batched (--batch_size) vs one prompt at a time, in generated
   tokens per second (samples stop at the document separator, as in run_labelshift.py).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from anatomy import cli  # noqa: E402

EXAMPLES = """examples:
  python benchmarks/bench_mixture.py --world data/world
  python benchmarks/bench_mixture.py --world data/world --n_docs 1000 --gen_n 16
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--n_docs", type=int, default=5000, help="documents per class")
    p.add_argument("--n_classes", type=int, default=7, choices=range(2, 8), metavar="2..7",
                   help="classes (the 6 corpus categories, code split in two)")
    p.add_argument("--gen_n", type=int, default=32, help="samples generated")
    p.add_argument("--gen_tokens", type=int, default=64, help="new tokens per sample at most")
    p.add_argument("--batch_size", type=int, default=32, help="batched generation batch size")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    cli.add_run_args(p, seed=0)
    return p


def corpus_texts(n_docs: int, n_classes: int, seed: int) -> tuple[list[str], list[int], dict]:
    """``n_docs`` texts per class from the corpus sources; also the reuse count per class."""
    import numpy as np

    from anatomy.world.corpus import CATEGORIES, iter_category
    from anatomy.world.sources import SOURCES

    sdist_code = {s.pin for s in SOURCES if s.sdist and "code" in s.take}
    rng = np.random.default_rng(seed)
    classes = [*CATEGORIES, "code_pkg"][:n_classes]
    pieces: dict[str, list[str]] = {c: [] for c in classes}
    budget = {c: n_docs * 1300 for c in classes}  # characters: mean of logU(300, 2000) ~ 900
    have = dict.fromkeys(classes, 0)
    for cat in CATEGORIES:
        fed = [c for c in classes if c == cat or (cat == "code" and c == "code_pkg")]
        for d, _src, _sha in iter_category(cat, seed) if fed else ():
            c = "code_pkg" if cat == "code" and d.source.partition(":")[0] in sdist_code else cat
            if c in fed and have[c] < budget[c]:
                pieces[c].append(d.text)
                have[c] += len(d.text)
            if all(have[x] >= budget[x] for x in fed):
                break
    texts, labels, reused = [], [], {}
    for j, c in enumerate(classes):
        src, i, out, n_reuse = pieces[c], 0, [], 0
        if not src:
            raise SystemExit(f"no corpus text for class {c}")
        while len(out) < n_docs:
            target = int(np.exp(rng.uniform(np.log(300), np.log(2000))))
            buf = ""
            while len(buf) < target:
                piece = src[i % len(src)]
                if i >= len(src):  # a second pass over the class: vary the text
                    lines = piece.splitlines()
                    piece = "\n".join(lines[k] for k in rng.permutation(len(lines)))
                    n_reuse += 1
                buf += piece + "\n\n"
                i += 1
            out.append(buf[:2000])
        texts += out
        labels += [j] * n_docs
        reused[c] = n_reuse
    return texts, labels, reused


def bench_classifier(args) -> None:
    import numpy as np

    from anatomy.classifiers import TfidfClassifier

    t = time.perf_counter()
    texts, labels, reused = corpus_texts(args.n_docs, args.n_classes, args.seed)
    t_data = time.perf_counter() - t
    chars = sum(map(len, texts))
    print(f"classifier data: {args.n_classes} classes x {args.n_docs} texts, "
          f"{chars / len(texts):.0f} chars/text, built in {t_data:.1f} s; "
          f"pieces reused with shuffled lines: {reused}")
    clf = TfidfClassifier()
    t = time.perf_counter()
    clf.fit(texts, np.asarray(labels), seed=args.seed)
    t_fit = time.perf_counter() - t
    t = time.perf_counter()
    Z = clf.logits(texts)
    t_pred = time.perf_counter() - t
    acc = float(np.mean(Z.argmax(1) == np.asarray(labels)))
    n = len(texts)
    print(f"tfidf fit     {t_fit:7.1f} s  ({n / t_fit:8.0f} texts/s)")
    print(f"tfidf predict {t_pred:7.1f} s  ({n / t_pred:8.0f} texts/s); "
          f"training-set accuracy {acc:.3f}; predict/fit time ratio {t_pred / t_fit:.2f}")


def bench_generation(args) -> None:
    import torch

    from anatomy.lm import load_causal_lm, load_tokenizer
    from anatomy.mixture.pipeline import generate_texts

    if args.threads:
        torch.set_num_threads(args.threads)
    world = cli.require_world(args)
    model = load_causal_lm(world / "model", device="cpu")
    tok = load_tokenizer(world / "model")
    rates = {}
    for label, bs in ((f"batched (batch {args.batch_size})", args.batch_size),
                      ("one prompt at a time", 1)):
        t = time.perf_counter()
        recs = generate_texts(model, tok, args.gen_n, args.gen_tokens, batch_size=bs,
                              seed=args.seed, progress=False)
        dt = time.perf_counter() - t
        toks = sum(r["n_tokens"] for r in recs)
        rates[bs] = toks / dt
        print(f"generate {label:24s} {args.gen_n} samples, {toks} tokens in {dt:6.1f} s: "
              f"{toks / dt:8.1f} tokens/s")
    print(f"batched / one-at-a-time throughput ratio: "
          f"{rates[args.batch_size] / rates[1]:.1f}x (torch threads {torch.get_num_threads()})")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    bench_classifier(args)
    bench_generation(args)
    return 0


if __name__ == "__main__":
    cli.run(main)
