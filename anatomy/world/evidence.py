"""Evidence that the miniworld's model learned what the truth file says it saw.

- Membership: AUROC of the loss attack (mean token log-likelihood) for passages planted k
  times in the member window against documents seen once in the non-member window, at every
  checkpoint; the controls are drawn from the same candidate passages as the planted
  ones and planted once in [T2, T3). Expected (measured on the prototype, see the foundation
  issue): near 0.5 for k=1, rising with k at the first checkpoint, fading at later ones.
- Memorization: planted passages whose 32-token suffix is reproduced exactly by greedy
  decoding from their 32-token prefix (memorization score 1.0, Biderman et al. 2023), at every
  checkpoint, per plant kind, and the memorized samples per category each plant is built for
  (recitation, reconstruction, recollection: truth.json ``intended``).
- Copying: the loss on tokens a model could copy from earlier in its context against tokens it
  could not (:func:`copying_evidence`).
"""

from __future__ import annotations

import numpy as np

from anatomy.truth import World

PREFIX = SUFFIX = 32


def membership_evidence(world: World) -> dict:
    from anatomy.lm import load_causal_lm, token_stats
    from anatomy.metrics import auroc

    t = world.truth
    controls = [r["doc"] for r in world.planted("mia_control")]
    mia = world.planted("mia")
    counts = sorted({r["planted"] for r in mia})
    seqs = [world.doc_tokens(r["doc"]).tolist() for r in mia] + \
        [world.doc_tokens(d).tolist() for d in controls]
    out = {"n_controls": len(controls), "counts": counts, "auroc": {}}
    for c in t["checkpoints"]:
        model = load_causal_lm(world.root / c["path"])
        ll = np.array([float(s.logprob.mean()) for s in token_stats(model, seqs, 32,
                                                                     progress=False)])
        ctrl = ll[len(mia):]
        row = {}
        for k in counts:
            mine = ll[: len(mia)][[r["planted"] == k for r in mia]]
            row[str(k)] = auroc(np.r_[mine, ctrl], np.r_[np.ones(len(mine)), np.zeros(len(ctrl))])
        out["auroc"][str(c["step"])] = row
    return out


def memorization_evidence(world: World) -> dict:
    """Greedy reproduction of every memorization plant's first 64 tokens, at every checkpoint:
    per plant kind, the passages and their mean score and exact count; per category the plant
    is built for (truth ``intended``), the memorized *samples*: a memorized passage counts once
    for each of its trained copies that starts a sequence (what pipeline C samples)."""
    from anatomy.lm import greedy_continuations, load_causal_lm

    kinds = {k: [r for r in world.planted(k) if r["length"] >= PREFIX + SUFFIX]
             for k in world.memorization_plants}
    starts = {k: {p["doc"]: len(p["sequence_ids"])
                  for p in world.planted_sequence_starts(k, PREFIX, SUFFIX)} for k in kinds}
    out = {}
    for c in world.truth["checkpoints"]:
        model = load_causal_lm(world.root / c["path"])
        row: dict = {"kinds": {}, "memorized_samples": {}}
        for kind, rows in kinds.items():
            if not rows:
                continue
            toks = [world.doc_tokens(r["doc"]) for r in rows]
            gen = greedy_continuations(model, [x[:PREFIX].tolist() for x in toks], SUFFIX)
            scores = [float(np.mean(np.array(g) == x[PREFIX:PREFIX + SUFFIX]))
                      for g, x in zip(gen, toks, strict=True)]
            row["kinds"][kind] = {"n": len(rows), "copies": rows[0]["count"],
                                  "mean_score": float(np.mean(scores)),
                                  "exact": int(sum(s == 1.0 for s in scores))}
            for r, s in zip(rows, scores, strict=True):
                cat = r.get("intended", "unknown")
                row["memorized_samples"].setdefault(cat, 0)
                row["memorized_samples"][cat] += starts[kind].get(r["doc"], 0) * (s == 1.0)
        out[str(c["step"])] = row
    return out


def copying_evidence(world: World, n: int = 64, seed: int = 0) -> dict:
    """Does the model copy in context? Sequences of a unit of ``PERIOD`` distinct single-token
    words repeated (never trained on): mean loss on the tokens of the first period (nothing to
    copy) against the tokens after it (each a copy of the one ``PERIOD`` back), at every
    checkpoint. A model with induction heads has a far lower loss on the copies; equal losses
    mean it learned no copying (why the world's reconstruct and recollect plants are
    near-duplicates rather than copying tasks: anatomy/world/synthetic.py)."""
    import torch
    from transformers import AutoTokenizer

    from anatomy.lm import load_causal_lm
    from anatomy.world.synthetic import PERIOD, periodic_sequences, single_token_words

    tok = AutoTokenizer.from_pretrained(str(world.root / "tokenizer"))
    words = single_token_words(tok.backend_tokenizer)
    seqs = torch.from_numpy(periodic_sequences(np.random.default_rng(seed), words, n))
    out = {"n": n, "period": PERIOD, "loss": {}}
    for c in world.truth["checkpoints"]:
        model = load_causal_lm(world.root / c["path"])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=seqs).logits.float(), -1)
        nll = -logp[:, :-1].gather(-1, seqs[:, 1:, None])[..., 0].numpy()  # predicts t + 1
        out["loss"][str(c["step"])] = {"first_period": float(nll[:, : PERIOD - 1].mean()),
                                       "copyable": float(nll[:, PERIOD - 1:].mean())}
    return out


def measure_evidence(root) -> dict:
    """Both measurements, written to ``ROOT/evidence.json`` and returned."""
    from anatomy import io

    world = World.open(root)
    ev = {"membership": membership_evidence(world), "memorization": memorization_evidence(world),
          "copying": copying_evidence(world)}
    io.write_json(world.root / "evidence.json", ev)
    return ev


def format_evidence(ev: dict) -> str:
    m = ev["membership"]
    lines = [f"membership: loss-attack AUROC, planted k times in the member window vs "
             f"{m['n_controls']} once-seen non-members",
             "  step " + "".join(f"{'k=' + str(k):>8}" for k in m["counts"])]
    for step, row in m["auroc"].items():
        lines.append(f"  {step:>4} " + "".join(f"{row[str(k)]:8.2f}" for k in m["counts"]))
    cats = sorted({c for row in ev["memorization"].values() for c in row["memorized_samples"]})
    lines.append("memorization: memorized samples (plant copies starting a sequence) by the "
                 "category each plant is built for; exact passages / passages per kind")
    lines.append("  step " + "".join(f"{c:>16}" for c in cats) + "  "
                 + "  ".join(ev["memorization"][next(iter(ev["memorization"]))]["kinds"]))
    for step, row in ev["memorization"].items():
        lines.append(f"  {step:>4} " + "".join(f"{row['memorized_samples'].get(c, 0):16d}"
                                                for c in cats) + "  "
                     + "  ".join(f"{r['exact']}/{r['n']}".rjust(len(k))
                                 for k, r in row["kinds"].items()))
    if "copying" in ev:
        cp = ev["copying"]
        lines.append(f"copying: loss on repeated {cp['period']}-word units (first period vs "
                     "copyable tokens): " + ", ".join(
                         f"step {s} {v['first_period']:.2f} vs {v['copyable']:.2f}"
                         for s, v in cp["loss"].items()))
    return "\n".join(lines)
