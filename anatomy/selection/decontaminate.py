"""Held out means held out: drop held-out target documents whose word n-grams are in the pool.

A selection is scored by the loss on the target's held-out documents
(:mod:`anatomy.selection.evaluate`). A held-out document whose text is also a pool row (a
license's boilerplate, a duplicated readme) is then partly a retrieval test: a method that
selects that row gets a low loss by memorising it, not by serving the target. Before the
evaluation reads the held-out half, this module removes every held-out document that shares
too much of its text with the pool or with the target's selection half.

The rule (word n-gram overlap, the standard train/test decontamination measure):

* **words**: the text lowercased, then every maximal run of Unicode word characters
  (``re.findall(r"\\w+", text.lower())``): punctuation, whitespace and case are ignored, as
  GPT-3's contamination study does (Brown et al. 2020, App. C: word N-grams with N from 8 to
  13, ignoring punctuation, whitespace and casing; 8 is its minimum, "due to spurious
  collisions at lower values").
* **n-grams** of a document: its ``n`` consecutive words at every position (default n = 8),
  counted with repetition, so the fraction below is the share of the document's positions.
  A pool row's n-grams are those inside the row (a row is one training example); a
  selection-half document's are those inside the document.
* **overlap** of a held-out document: the fraction of its n-grams that occur in any pool
  row or in any selection-half document (one set, the union). GPT-3 flags an example with
  any overlapping N-gram; a fraction with a threshold, as PaLM's clean/contaminated split
  does (Chowdhery et al. 2022, Sec. 8; not re-checked here), keeps documents that merely
  share a stock phrase. A document is **removed when its overlap exceeds** ``threshold``
  (default 0.20); exactly 0.20 is kept. The report says why: its overlap with the pool alone
  exceeds the threshold (``pool``), with the selection half alone (``selection``), with each
  (``both``), or only with the two together (``union``).
* **short documents** (fewer than ``n`` words, at least one): compared on all their words
  as one n-gram of their length, so the overlap is 0 or 1: removed when the whole word
  sequence occurs verbatim in a pool row or a selection-half document. A document with no
  word at all is kept (there is nothing to compare) and counted as ``empty``.

Hashing: each distinct word is hashed once with blake2b (8 bytes; never Python's salted
``hash``), an n-gram's hash is the polynomial ``sum_i h(w_i) P^(n-1-i)`` mod 2^64, computed
for whole blocks of texts at once with numpy. A collision between two different n-grams has
probability about 2^-64 per pair; it can only remove a document, never keep one.

Scale: the held-out n-grams (a few thousand documents) are the hashed set; the pool is
streamed in blocks of rows, each block's n-gram hashes marked against that set
(``np.isin``), so memory does not grow with the pool. Every row the evaluation can train on
(``len(pool)``, i.e. ``--pool_rows``) is read once for all targets together.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from anatomy.io import InputError

log = logging.getLogger("anatomy")
WORD_RE = re.compile(r"\w+")
FEW = 10  # a group left with fewer held-out documents than this gets a warning
_P = np.uint64(0x100000001B3)  # odd (the 64-bit FNV prime), so every power is invertible
REASONS = ("pool", "selection", "both", "union")
RULE_VERSION = 1  # bump when the words, the hash or the rule change (fingerprints)


def words(text: str) -> list[str]:
    """The words of ``text``: lowercase, maximal runs of Unicode word characters."""
    return WORD_RE.findall(text.lower())


class _WordHasher:
    """blake2b-64 of each distinct word, cached (a pool's vocabulary repeats)."""

    def __init__(self) -> None:
        self._cache: dict[str, int] = {}

    def __call__(self, ws: Iterable[str]) -> list[int]:
        c = self._cache
        out = []
        for w in ws:
            h = c.get(w)
            if h is None:
                h = int.from_bytes(hashlib.blake2b(w.encode("utf-8", "surrogatepass"),
                                                   digest_size=8).digest(), "little")
                if len(c) < 4_000_000:
                    c[w] = h
            out.append(h)
        return out


def _encode(texts: Sequence[str], hasher: _WordHasher) -> tuple[np.ndarray, np.ndarray]:
    """All texts' word hashes concatenated (uint64) and each text's word count."""
    per = [hasher(words(t)) for t in texts]
    lengths = np.array([len(p) for p in per], dtype=np.int64)
    flat = np.fromiter((h for p in per for h in p), dtype=np.uint64, count=int(lengths.sum()))
    return flat, lengths


def _windows(flat: np.ndarray, lengths: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every ``k``-word window inside one text, and the text each belongs to."""
    m = len(flat) - k + 1
    if k < 1 or m <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    h = flat[:m].copy()
    for i in range(1, k):
        h *= _P
        h += flat[i:i + m]
    owner = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
    ok = owner[:m] == owner[k - 1:k - 1 + m]
    return h[ok], owner[:m][ok]


@dataclass(frozen=True)
class HeldOutFilter:
    """The decontamination rule's settings (see the module docstring)."""

    n: int = 8
    threshold: float = 0.20
    block_rows: int = 1024  # pool rows decoded and hashed at a time

    def __post_init__(self) -> None:
        if self.n < 1:
            raise InputError(None, f"the decontamination n-gram length must be >= 1, got {self.n}")
        if not 0.0 <= self.threshold <= 1.0:
            raise InputError(None, "the decontamination threshold is a fraction in [0, 1], "
                                   f"got {self.threshold}")

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "threshold": self.threshold, "words": r"lowercase, \w+",
                "hash": "blake2b-64 words, polynomial mod 2^64", "version": RULE_VERSION}


DEFAULT = HeldOutFilter()


class _Docs:
    """The held-out documents of one (target, group): their windows per length."""

    def __init__(self, texts: Sequence[str], n: int, hasher: _WordHasher):
        flat, lengths = _encode(texts, hasher)
        self.lengths = lengths
        self.k = np.where(lengths >= n, n, lengths)  # the window length each doc is read with
        self.by_k: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        h, own = _windows(flat, lengths, n)
        self.by_k[n] = (h, own)  # windows never cross texts: short texts have none
        for k in sorted(set(self.k[(lengths > 0) & (lengths < n)].tolist())):
            h, own = _windows(flat, lengths, k)
            whole = lengths[own] == k  # a short doc of k words is one k-gram
            self.by_k[k] = (h[whole], own[whole])


def _overlap(docs: _Docs, found: dict[int, np.ndarray], keys: dict[int, np.ndarray]
             ) -> np.ndarray:
    """Per document: the fraction of its windows whose hash is marked found."""
    hit = np.zeros(len(docs.lengths), np.float64)
    tot = np.zeros(len(docs.lengths), np.float64)
    for k, (h, own) in docs.by_k.items():
        if not len(h):
            continue
        pos = np.searchsorted(keys[k], h)
        m = found[k][pos]
        hit += np.bincount(own, weights=m.astype(np.float64), minlength=len(hit))
        tot += np.bincount(own, minlength=len(tot))
    return np.divide(hit, tot, out=np.zeros_like(hit), where=tot > 0)


def held_out_overlaps(held: Sequence[Sequence[str]], pool,
                      selection: Sequence[Sequence[str] | None],
                      rule: HeldOutFilter | None = None) -> list[dict[str, np.ndarray]]:
    """For each list of held-out texts: per document, the fraction of its word n-grams found
    in the pool's rows (``pool``), in its selection half (``selection``; NaN when that is
    None) and in either (``any``), and its word count (``words``).

    ``pool`` is anything with ``len()`` and ``texts(start, stop)`` (a
    :class:`~anatomy.selection.pool.CandidatePool`, a ``ListTexts``); every row is read once."""
    rule = rule or DEFAULT
    hasher = _WordHasher()
    n = rule.n
    docs = [_Docs(list(t), n, hasher) for t in held]
    # the held-out windows of every length, deduplicated: the set the pool is marked against
    ks = sorted({k for d in docs for k in d.by_k})
    keys = {k: np.unique(np.concatenate([d.by_k[k][0] for d in docs if k in d.by_k]
                                        or [np.zeros(0, np.uint64)])) for k in ks}
    in_pool = {k: np.zeros(len(keys[k]), bool) for k in ks}
    N = len(pool)
    for a in range(0, N, rule.block_rows):
        flat, lengths = _encode(pool.texts(a, min(N, a + rule.block_rows)), hasher)
        for k in ks:
            if len(keys[k]) and not in_pool[k].all():
                h, _ = _windows(flat, lengths, k)
                in_pool[k] |= np.isin(keys[k], h)
    out = []
    for d, sel in zip(docs, selection, strict=True):
        f_pool = _overlap(d, in_pool, keys)
        if sel is None:
            f_sel = np.full(len(d.lengths), np.nan)
            f_any = f_pool
        else:
            flat, lengths = _encode(list(sel), hasher)
            in_sel = {k: np.isin(keys[k], _windows(flat, lengths, k)[0]) for k in ks}
            f_sel = _overlap(d, in_sel, keys)
            f_any = _overlap(d, {k: in_pool[k] | in_sel[k] for k in ks}, keys)
        out.append({"pool": f_pool, "selection": f_sel, "any": f_any, "words": d.lengths})
    return out


def _reason(p: float, s: float, t: float) -> str:
    over_p, over_s = p > t, (not np.isnan(s)) and s > t
    return "both" if over_p and over_s else "pool" if over_p else \
        "selection" if over_s else "union"


def decontaminate_targets(targets: Sequence[Any], pool, rule: HeldOutFilter | None = None
                          ) -> tuple[list[Any], dict[str, dict[str, Any]]]:
    """Each target with its held-out groups filtered, and per target a report: settings,
    per group the documents before and after, how many were removed and why, and each
    removed document's index (in the group's held-out order) and overlaps.

    A target whose selection texts are its held-out texts (a JSONL file given as the
    target: its selection file is not known here) is compared with the pool only."""
    rule = rule or DEFAULT
    items, held, sel = [], [], []
    reports: dict[str, dict[str, Any]] = {}
    for t in targets:
        distinct = getattr(t, "distinct_halves", True)
        sel_texts = [x for v in t.groups.values() for x in v] if distinct else None
        reports[t.name] = {
            "enabled": True, **rule.to_dict(), "pool_rows": len(pool),
            "selection_half": sel_texts is not None, "docs": 0, "kept": 0, "removed": 0,
            "by_reason": dict.fromkeys(REASONS, 0), "groups": {}}
        for g, texts in t.eval_groups.items():
            items.append((t.name, g))
            held.append(texts)
            sel.append(sel_texts)
    over = held_out_overlaps(held, pool, sel, rule) if items else []
    kept_groups: dict[str, dict[str, list[str]]] = {}
    for (tname, g), texts, o in zip(items, held, over, strict=True):
        rep = reports[tname]
        drop = o["any"] > rule.threshold
        removed = []
        for i in np.flatnonzero(drop):
            r = _reason(float(o["pool"][i]), float(o["selection"][i]), rule.threshold)
            removed.append({"index": int(i), "reason": r, "words": int(o["words"][i]),
                            "pool": round(float(o["pool"][i]), 4),
                            "selection": None if np.isnan(o["selection"][i]) else
                            round(float(o["selection"][i]), 4),
                            "any": round(float(o["any"][i]), 4)})
        by = dict.fromkeys(REASONS, 0)
        for r in removed:
            by[r["reason"]] += 1
        kept = [x for x, d in zip(texts, drop, strict=True) if not d]
        rep["groups"][g] = {"docs": len(texts), "kept": len(kept), "removed": len(removed),
                            "by_reason": by,
                            "short": int(np.sum((o["words"] > 0) & (o["words"] < rule.n))),
                            "empty": int(np.sum(o["words"] == 0)),
                            "removed_docs": removed}
        rep["docs"] += len(texts)
        rep["kept"] += len(kept)
        rep["removed"] += len(removed)
        for r in REASONS:
            rep["by_reason"][r] += by[r]
        if not kept:
            raise InputError(None, f"target {tname}: all {len(texts)} held-out {g} documents "
                                   f"share more than {rule.threshold:.0%} of their word "
                                   f"{rule.n}-grams with the pool or the selection half; "
                                   "nothing is left to evaluate on (--no_decontaminate "
                                   "keeps them)")
        if len(kept) < FEW:
            log.warning("target %s: only %d of %d held-out %s documents are left after "
                        "decontamination: its loss is measured on few documents", tname,
                        len(kept), len(texts), g)
        kept_groups.setdefault(tname, {})[g] = kept
    out = [replace(t, eval_groups=kept_groups.get(t.name, {})) if t.eval_groups else t
           for t in targets]
    return out, reports


def disabled_report() -> dict[str, Any]:
    return {"enabled": False}


def describe(rep: dict[str, Any]) -> str:
    """One line for the table: what was removed from a target's held-out half, and why."""
    if not rep or not rep.get("enabled"):
        return ("held-out documents: not decontaminated (--no_decontaminate): some may "
                "also be in the pool")
    t, n = rep["threshold"], rep["n"]
    why = {"pool": "by the pool alone", "selection": "by the selection half alone",
           "both": "by each of them", "union": "only by the two together"}
    parts = [f"{v} {why[k]}" for k, v in rep["by_reason"].items() if v]
    groups = ""
    if len(rep["groups"]) > 1:
        groups = " (" + ", ".join(f"{g} {v['removed']} of {v['docs']}"
                                  for g, v in rep["groups"].items()) + ")"
    scope = (f"any of the pool's {rep['pool_rows']:,} rows" +
             (" or the selection half" if rep["selection_half"] else
              "; the selection half is not known for a file target"))
    s = (f"held-out documents: {rep['kept']} of {rep['docs']} evaluated; {rep['removed']} "
         f"removed{groups} for sharing more than {t:.0%} of their word {n}-grams with "
         f"{scope}")
    return s + (f" ({', '.join(parts)})" if parts else "")
