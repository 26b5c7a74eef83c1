"""Can the miniworld's model learn to copy? A probe (not a test: prints numbers, asserts nothing).

Trains a fresh model of a preset's architecture on the world's own training rows, with a share
of every batch replaced by teaching rows of one kind, and prints every ``--every`` steps how
many held-out sequences it reproduces exactly (32 continuation tokens after a 32-token prompt,
teacher-forced argmax, which equals greedy reproduction when every token is right) and the
share of continuation tokens right:

- ``periodic``: a unit of 10 distinct single-token words repeated (each token a copy of the
  one 10 back); held out: units never taught;
- ``letters``: boilerplate letters (fixed frames) whose one word, filled into several slots,
  must be copied from the prompt; held out: words never taught;
- ``chain``: a fixed chain of the world's rarest single-token words, taught in windows of 6 to
  24 words; held out: 64-word walks along the chain (each bigram was taught).

What README's miniworld section reports (``--world`` a tiny world, 2 cores):

  python benchmarks/world_copying_probe.py --world data/world-tiny --kind periodic --steps 300
  python benchmarks/world_copying_probe.py --world data/world-tiny --kind letters --steps 300
  python benchmarks/world_copying_probe.py --world data/world-tiny --kind chain --steps 200
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

FRAMES = (
    "Dear{N},\n\nThank you for your report about the build failure. We have reproduced it, "
    "and{N} is now listed as the reporter in the changelog. The fix ships in the next "
    "release; if it does not work for you,{N}, please reopen the issue and mention{N} in "
    "the title.\n\nBest regards,\nThe maintainers",
    "Maintainer:{N}\nStatus: active\n\nThis package is maintained by{N} on behalf of the "
    "community. Questions about the release process go to{N} first, then to the mailing "
    "list. Security reports should never be filed in public; write to{N} directly, and"
    "{N} will answer within a week.",
)


def main() -> int:
    import torch

    from anatomy.lm_training import make_model
    from anatomy.truth import World
    from anatomy.world.presets import get_preset
    from anatomy.world.synthetic import periodic_sequences, single_token_words

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", required=True)
    p.add_argument("--kind", choices=("periodic", "letters", "chain"), required=True)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--share", type=float, default=0.25, help="teaching rows per batch")
    p.add_argument("--preset", default="tiny", help="the architecture (d, layers, batch, lr)")
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.set_num_threads(1)  # beside a build or a test run; the numbers do not depend on it much
    w = World.open(a.world)
    P = get_preset(a.preset)
    L, B, eos = w.truth["seq_len"], P.batch_size, w.truth["eos_token_id"]
    rows = w.stream[: w.truth["n_trained_instances"] * L].reshape(-1, L).astype(np.int64)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(Path(a.world) / "tokenizer" / "tokenizer.json"))
    words = single_token_words(tok)
    rng = np.random.default_rng(a.seed)
    perm = rng.permutation(words)
    taught, held = perm[len(perm) // 5:], perm[: len(perm) // 5]
    if a.kind == "periodic":
        teach = lambda r: periodic_sequences(r, taught, 1, 64 + int(r.integers(10)))[0].tolist()  # noqa: E731
        test = periodic_sequences(np.random.default_rng(99), held, 32)
    elif a.kind == "letters":
        parts = [[tok.encode(x).ids for x in f.split("{N}")] for f in FRAMES]

        def letter(k: int, word: int) -> list[int]:
            out: list[int] = []
            for j, piece in enumerate(parts[k]):
                out += piece + ([int(word)] if j < len(parts[k]) - 1 else [])
            return out

        teach = lambda r: letter(int(r.integers(len(FRAMES))), r.choice(taught))  # noqa: E731
        test = np.array([letter(i % len(FRAMES), held[i])[:64] for i in range(32)])
    else:
        freq = np.bincount(rows.ravel(), minlength=w.truth["vocab_size"])
        chain = rng.permutation(words[np.argsort(freq[words], kind="stable")][: len(words) // 2])

        def teach(r):
            n = int(r.integers(6, 25))
            i = int(r.integers(0, len(chain) - n))
            return chain[i:i + n].tolist()

        starts = np.random.default_rng(99).integers(0, len(chain) - 64, 32)
        test = np.stack([chain[i:i + 64] for i in starts])

    def fill(r) -> np.ndarray:
        out: list[int] = []
        while len(out) < L:
            out += teach(r) + [eos]
        return np.array(out[:L])

    model = make_model(w.truth["vocab_size"], L, P.d_model, P.n_layers, P.n_heads, eos, 1,
                       a.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=P.lr, betas=(0.9, 0.95), weight_decay=0.1)
    warm = max(1, a.steps // 50)
    x_test = torch.from_numpy(np.asarray(test, dtype=np.int64))
    n_teach = int(round(a.share * B))
    t0 = time.time()
    for s in range(a.steps):
        frac = (s - warm) / max(1, a.steps - warm)
        lr = P.lr * ((s + 1) / warm if s < warm else 0.3 + 0.35 * (1 + math.cos(math.pi * frac)))
        for g in opt.param_groups:
            g["lr"] = lr
        batch = [rows[i] for i in rng.integers(0, len(rows), B - n_teach)]
        batch += [fill(rng) for _ in range(n_teach)]
        x = torch.from_numpy(np.stack(batch))
        out = model(input_ids=x)
        loss = torch.nn.functional.cross_entropy(out.logits[:, :-1].flatten(0, 1),
                                                 x[:, 1:].flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if (s + 1) % a.every == 0:
            model.eval()
            with torch.no_grad():
                pred = model(input_ids=x_test).logits.argmax(-1)[:, 31:63]
            model.train()
            ok = (pred == x_test[:, 32:64]).numpy()
            print(f"step {s + 1}: loss {loss.item():.2f}, held-out {a.kind} reproduced "
                  f"{int(ok.all(1).sum())}/{len(ok)}, continuation tokens right "
                  f"{ok.mean():.1%} ({time.time() - t0:.0f}s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
