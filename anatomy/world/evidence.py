"""Evidence that the miniworld's model learned what the truth file says it saw.

- Membership: AUROC of the loss attack (mean token log-likelihood) for passages planted k
  times in the member window against documents seen once in the non-member window, at every
  checkpoint; the controls are drawn from the same candidate passages as the planted
  ones and planted once in [T2, T3). Expected (measured on the prototype, see the foundation
  issue): near 0.5 for k=1, rising with k at the first checkpoint, fading at later ones.
- Memorization: fraction of planted passages whose 32-token suffix is reproduced exactly by
  greedy decoding from their 32-token prefix (memorization score 1.0, Biderman et al. 2023),
  at T2 (the dense plants end there) and at the final checkpoint, for dense and spread plants.
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
    """Greedy-reproduction scores at T2 (right after the dense plants) and at the end."""
    from anatomy.lm import greedy_continuations, load_causal_lm

    ckpts = world.truth["checkpoints"]
    out = {}
    for c in (ckpts[-2], ckpts[-1]):
        model = load_causal_lm(world.root / c["path"])
        row = {}
        for kind in ("mem_dense", "mem_spread", "mem_late"):
            rows = world.planted(kind)
            toks = [world.doc_tokens(r["doc"]) for r in rows]
            gen = greedy_continuations(model, [x[:PREFIX].tolist() for x in toks], SUFFIX)
            scores = [float(np.mean(np.array(g) == x[PREFIX:PREFIX + SUFFIX]))
                      for g, x in zip(gen, toks, strict=True)]
            row[kind] = {"n": len(rows), "copies": rows[0]["count"] if rows else 0,
                         "mean_score": float(np.mean(scores)),
                         "exact": int(sum(s == 1.0 for s in scores))}
        out[str(c["step"])] = row
    return out


def measure_evidence(root) -> dict:
    """Both measurements, written to ``ROOT/evidence.json`` and returned."""
    from anatomy import io

    world = World.open(root)
    ev = {"membership": membership_evidence(world), "memorization": memorization_evidence(world)}
    io.write_json(world.root / "evidence.json", ev)
    return ev


def format_evidence(ev: dict) -> str:
    m = ev["membership"]
    lines = [f"membership: loss-attack AUROC, planted k times in the member window vs "
             f"{m['n_controls']} once-seen non-members",
             "  step " + "".join(f"{'k=' + str(k):>8}" for k in m["counts"])]
    for step, row in m["auroc"].items():
        lines.append(f"  {step:>4} " + "".join(f"{row[str(k)]:8.2f}" for k in m["counts"]))
    for step, row in ev["memorization"].items():
        for kind, r in row.items():
            lines.append(f"memorization at step {step}: {kind} ({r['n']} passages x "
                         f"{r['copies']} copies) mean score {r['mean_score']:.2f}, "
                         f"exact {r['exact']}/{r['n']}")
    return "\n".join(lines)
