"""Scoring throughput: the one-pass engine against the published per-example loop and a bare
batched forward, and the ReCaLL matrix with and without prefix-cache reuse.

On the same model and texts it times (median of --repeats, after a warm-up):

(a) ours: ``lm.token_stats`` (length-sorted batches, padding masked) + ``scores.all_scores``,
    i.e. loss, zlib, Min-K% and Min-K%++ for k = 10..50 of every text;
(b) the published style (em-mia ``run.py`` / ``modeling_utils.infer``, as mimir): one text at
    a time, a forward pass, then each score computed separately from the logits;
(c) a bare batched forward pass (logits only) with the same batches as (a);

and prints tokens/s with the ratios a/b (goal >= 1.6) and c/a (goal <= 1.2: the statistics
cost at most 20% on top of the forward pass). Then ``emmia.recall_matrix`` (each prefix's KV
cache computed once, reused for every target batch) against ``recall_matrix_naive``
(prefix + target recomputed for every pair). Default model and texts: the miniworld's final
checkpoint and texts from its pools; without a world, a random-init OLMo-shaped model on
random tokens. A benchmark, not a test: it prints, it does not assert.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from anatomy import io  # noqa: E402

EXAMPLES = """examples:
  python benchmarks/bench_scoring.py --world data/world
  python benchmarks/bench_scoring.py --n 64 --repeats 2          # random-init model
  python benchmarks/bench_scoring.py --model data/world/model \\
      --data data/miniworld-small_control.jsonl
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, epilog=EXAMPLES,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default="data/world", help="miniworld (model + pools)")
    p.add_argument("--model", default=None, help="HF model folder (default: WORLD/model)")
    p.add_argument("--data", default=None, help='JSONL with "input" or "text" fields')
    p.add_argument("--n", type=int, default=256, help="texts")
    p.add_argument("--max_tokens", type=int, default=128, help="truncate texts (OLMoMIA: 64/128)")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--prefixes", type=int, default=32, help="ReCaLL matrix rows")
    p.add_argument("--targets", type=int, default=64, help="ReCaLL matrix columns")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    return p


# ---------------------------------------------------------------------------------------
# inputs


def _texts_from_jsonl(paths, n: int) -> list[str]:
    out: list[str] = []
    for path in paths:
        for rec in io.iter_jsonl(path):
            t = rec.get("input", rec.get("text"))
            if isinstance(t, str) and t.strip():
                out.append(t)
                if len(out) == n:
                    return out
    return out


def load_inputs(args):
    """(model, token id lists, texts, description)."""
    import torch

    from anatomy import lm

    world = Path(args.world)
    model_path = args.model or (str(world / "model") if (world / "model").is_dir() else None)
    if model_path is not None:
        model = lm.load_causal_lm(model_path, device=args.device)
        tok = lm.load_tokenizer(model_path)
        if args.data:
            texts = _texts_from_jsonl([args.data], args.n)
        else:
            pools = sorted((world / "pools").glob("train/chunk*/*.jsonl*"))
            if not pools:
                raise io.InputError(world, "no pools here: pass --data JSONL")
            texts = _texts_from_jsonl(pools, args.n)
        ids = lm.tokenize_texts(tok, texts, args.max_tokens)
        keep = [i for i, x in enumerate(ids) if len(x) >= 2]
        return model, [ids[i] for i in keep], [texts[i] for i in keep], model_path
    from transformers import OlmoConfig, OlmoForCausalLM

    torch.manual_seed(args.seed)
    vocab = 4096
    cfg = OlmoConfig(vocab_size=vocab, hidden_size=256, intermediate_size=1024,
                     num_hidden_layers=4, num_attention_heads=4, max_position_embeddings=512,
                     pad_token_id=1, bos_token_id=None, eos_token_id=0)
    model = OlmoForCausalLM(cfg).eval().to(lm.resolve_device(args.device))
    rng = np.random.default_rng(args.seed)
    ids = [rng.integers(2, vocab, size=int(rng.integers(args.max_tokens // 2,
                                                        args.max_tokens + 1))).tolist()
           for _ in range(args.n)]
    texts = [" ".join(map(str, x)) for x in ids]
    return model, ids, texts, "random-init OLMo (d=256, 4 layers, vocab 4096; no world found)"


# ---------------------------------------------------------------------------------------
# the three ways to score


def ours(model, ids, texts, batch_size):
    from anatomy.lm import token_stats
    from anatomy.scores import all_scores

    stats = token_stats(model, ids, batch_size=batch_size, progress=False)
    return [all_scores(s, t) for s, t in zip(stats, texts, strict=True)]


def published_loop(model, ids, texts, ks=(10, 20, 30, 40, 50)):
    """em-mia's run.py: per text ``infer`` (forward + cross-entropy LL), then Zlib, then
    softmax/log_softmax/mu/sigma and a top-k per ratio for Min-K and Min-K++."""
    import torch
    import torch.nn.functional as F

    dev = next(model.parameters()).device
    out = []
    for seq, text in zip(ids, texts, strict=True):
        x = torch.tensor([seq], device=dev)
        with torch.no_grad():
            logits = model(x).logits[0, :-1]
        labels = x[0, 1:]
        ll = -F.cross_entropy(logits, labels).item()
        pred = {"loss": ll, "zlib": ll / len(zlib.compress(bytes(text, "utf-8")))}
        logits = logits.to(torch.float32)
        probs = F.softmax(logits, dim=-1)
        logprobs = F.log_softmax(logits, dim=-1)
        tlp = logprobs.gather(dim=-1, index=labels.unsqueeze(-1)).squeeze(-1)
        mu = (probs * logprobs).sum(-1)
        sigma = (probs * torch.square(logprobs)).sum(-1) - torch.square(mu)
        ntlp = (tlp - mu) / sigma.sqrt()
        for name, v in (("mink", tlp), ("minkpp", ntlp)):
            for k in ks:
                c = max(1, int(len(logits) * k / 100))
                pred[f"{name}_{k}"] = v.topk(c, largest=False)[0].mean().item()
        out.append(pred)
    return out


def bare_forward(model, ids, batch_size):
    import torch

    from anatomy.lm import _padded, length_batches

    dev = next(model.parameters()).device
    for idx in length_batches([len(x) for x in ids], batch_size):
        x, mask = _padded([ids[i] for i in idx], dev)
        with torch.inference_mode():
            logits = model(input_ids=x, attention_mask=mask, use_cache=False).logits
        if dev.type == "cuda":
            torch.cuda.synchronize()
        del logits


def timed(fn, repeats: int) -> float:
    """Median wall time of ``repeats`` calls after one warm-up call."""
    import torch

    fn()
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import torch

    from anatomy.lm import token_stats
    from anatomy.mia.emmia import recall_matrix, recall_matrix_naive

    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    model, ids, texts, what = load_inputs(args)
    n_tok = sum(len(x) for x in ids)
    dev = next(model.parameters()).device
    print(f"model: {what} on {dev} ({torch.get_num_threads()} threads)")
    print(f"texts: {len(ids)}, {n_tok} tokens (<= {args.max_tokens} each), "
          f"batch size {args.batch_size}, median of {args.repeats}")
    a = timed(lambda: ours(model, ids, texts, args.batch_size), args.repeats)
    b = timed(lambda: published_loop(model, ids, texts), args.repeats)
    c = timed(lambda: bare_forward(model, ids, args.batch_size), args.repeats)
    # the two ways agree (sanity, printed): same Min-K%++ 20% up to batching/rounding
    diff = max(abs(p["minkpp_20"] - q["minkpp_20"]) for p, q in
               zip(ours(model, ids[:16], texts[:16], args.batch_size),
                   published_loop(model, ids[:16], texts[:16]), strict=True))
    print("\n| scorer | tokens/s | time (s) |\n|---|---:|---:|")
    for name, t in (("(a) one-pass engine, every score", a),
                    ("(b) per-example loop (em-mia style)", b),
                    ("(c) bare batched forward (logits only)", c)):
        print(f"| {name} | {n_tok / t:,.0f} | {t:.3f} |")
    print(f"\nthroughput a/b = {b / a:.2f}x (goal >= 1.6)   c/a = {a / c:.2f} (goal <= 1.2)   "
          f"max |Min-K%++20 (a) - (b)| = {diff:.1e}")

    m = min(len(ids), args.targets)
    prefixes, targets = ids[:min(args.prefixes, len(ids))], ids[:m]
    ll = np.array([np.mean(s.logprob, dtype=np.float64) for s in
                   token_stats(model, targets, batch_size=args.batch_size, progress=False)])
    rc = timed(lambda: recall_matrix(model, prefixes, targets, batch_size=args.batch_size,
                                     progress=False, target_ll=ll), args.repeats)
    rn = timed(lambda: recall_matrix_naive(model, prefixes, targets, batch_size=args.batch_size,
                                           progress=False, target_ll=ll), args.repeats)
    print(f"\nReCaLL matrix {len(prefixes)} prefixes x {m} targets: cached {rc:.3f} s, "
          f"naive {rn:.3f} s, speed-up {rn / rc:.2f}x")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except io.InputError as e:
        print(f"error: {e.message}", file=sys.stderr)
        sys.exit(2)
