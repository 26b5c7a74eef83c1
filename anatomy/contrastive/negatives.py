"""Positive-aware hard-negative mining for (query, document) pairs (pipeline E, step 3).

Mirrors the intent of nomic contrastors' ``get_negatives.py`` (v1, b0e94ca) and its
``filter_false_negatives.py`` post-filter, with the selection rules of
sentence-transformers' ``util.mine_hard_negatives`` (6.2.0), and without their bugs (the
contrastive reference §1.3, §3.1, §5):

- the corpus is every distinct document (each row's positives, then an optional extra
  corpus), distinct by :func:`~anatomy.contrastive.pairs.normalize_text`; each text is
  embedded once (:mod:`anatomy.contrastive.index`);
- rows whose queries normalise equal are one query with several positives; its negatives
  exclude **every** positive of every such row, **by entry and by normalised text**
  (a duplicate of a positive is the same entry), and the query text itself (contrastors'
  dict-vs-string bug returned the positive as negative #1 instead);
- empty or whitespace-only texts are data, not errors: counted, never indexed, never a
  negative; a row whose query or own document is empty is counted and not mined;
- the window ``range_max`` defaults to ST's (``hard_negatives.py:365-376``):
  ``range_min + num_negatives + max_positives``, with ``10 * num_negatives`` when a margin or
  ``max_score`` is set (ST's ``min_score`` widens it only with a cross-encoder, which we do
  not have); ``max_positives`` is ST's: the most rows (positives) of one exact query text;
- candidates are the query's top ``range_max + E`` hits in score order (``E``: ST's
  ``max_positives``, or more where a query excludes more entries, so ``range_max``
  candidates remain after the exclusions); the thresholds remove candidates (``absolute_margin``:
  ``neg + m > pos``; ``relative_margin``: ``neg > pos - |pos| m``, NV-Retriever's
  TopK-PercPos for m = 0.05, right for negative scores too (ST #3819); ``max_score``,
  ``min_score``), measured against the query's lowest positive score as ST does; of the
  first ``range_max`` survivors the first ``range_min`` are skipped (ST's rule: the window
  counts survivors); then the top ``num_negatives`` (``sampling_strategy="top"``) or a
  seeded sample (``"random"``), in descending score order;
- ``below_positive`` (the contrastors format's default): contrastors'
  ``filter_false_negatives.py:49-53`` post-filter, keeping only negatives scoring strictly
  below the positive (here the query's lowest positive), counted as ``false_negatives``;
- fill-up: a row with fewer than ``min_negatives`` gets random corpus documents that obey
  the same exclusions and thresholds (``fill="random"``, contrastors' behaviour), is
  dropped (``"drop"``), or is kept short (``"keep"``); every case is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anatomy.contrastive.pairs import Pairs, normalize_text
from anatomy.io import InputError

OUTPUT_FORMATS = ("contrastors", "triplet", "n-tuple", "labeled-pair", "labeled-list")
FILL_POLICIES = ("random", "drop", "keep")
SHARD_ROWS = 100_000  # contrastors' shard size


@dataclass
class MineOptions:
    num_negatives: int = 20
    range_min: int = 0
    range_max: int | None = None
    relative_margin: float | None = None
    absolute_margin: float | None = None
    max_score: float | None = None
    min_score: float | None = None
    sampling_strategy: str = "top"
    min_negatives: int | None = None  # None: num_negatives
    fill: str = "random"
    seed: int = 0
    # contrastors' false-negative post-filter (negatives strictly below the positive);
    # None: on for the contrastors format, off for ST's formats (resolved by the caller)
    below_positive: bool | None = None

    @property
    def widened(self) -> bool:
        """ST widens the default window tenfold for a margin or ``max_score``; for
        ``min_score`` only with a cross-encoder (``hard_negatives.py:366-371``)."""
        return any(v is not None for v in (self.relative_margin, self.absolute_margin,
                                           self.max_score))

    def window(self, max_positives: int = 0) -> int:
        """``range_max``; unset: ST 6.2.0's default (``hard_negatives.py:365-376``),
        ``range_min + num_negatives + max_positives`` (``10 * num_negatives`` when
        :attr:`widened`)."""
        if self.range_max is not None:
            return int(self.range_max)
        return (self.range_min + self.num_negatives * (10 if self.widened else 1)
                + max_positives)

    def check(self) -> None:
        if self.num_negatives < 1:
            raise InputError(None, f"--k (negatives per query) must be >= 1, got "
                                   f"{self.num_negatives}")
        if self.range_min < 0:
            raise InputError(None, f"--range_min must be >= 0, got {self.range_min}")
        if self.range_min >= self.window():
            raise InputError(None, f"--range_min {self.range_min} must be below --range_max "
                                   f"{self.window()}")
        if self.num_negatives > self.window() - self.range_min:
            raise InputError(None, f"cannot mine {self.num_negatives} negatives from ranks "
                                   f"[{self.range_min}, {self.window()}): raise --range_max")
        if self.sampling_strategy not in ("top", "random"):
            raise InputError(None, f'unknown --sampling_strategy "{self.sampling_strategy}" '
                                   "(top, random)")
        if self.fill not in FILL_POLICIES:
            raise InputError(None, f'unknown --fill "{self.fill}" ({", ".join(FILL_POLICIES)})')
        m = self.min_negatives
        if m is not None and not 0 <= m <= self.num_negatives:
            raise InputError(None, f"--min_negatives must be in [0, --k={self.num_negatives}], "
                                   f"got {m}")


@dataclass
class Corpus:
    """Distinct documents: entry e has normalised key ``keys[e]``, text ``texts[e]`` and
    embedding-table row ``rows[e]`` (its first occurrence)."""

    keys: list[str]
    texts: list[str]
    rows: np.ndarray
    entry_of_key: dict[str, int]
    from_pairs: int  # entries [0, from_pairs) come from the rows' positives
    empty_extra: int = 0  # empty / whitespace-only texts of the extra corpus, not indexed

    def __len__(self) -> int:
        return len(self.keys)


def build_corpus(pairs: Pairs, pos_rows: Sequence[np.ndarray], extra: Sequence[str] = (),
                 extra_rows: np.ndarray | None = None) -> Corpus:
    """The rows' documents first (row order: each row's own document, then its other
    positives), then the extra corpus, each normalised key once; an empty or
    whitespace-only text is never an entry (counted by :func:`empty_texts`)."""
    keys: list[str] = []
    texts: list[str] = []
    rows: list[int] = []
    pos: dict[str, int] = {}
    empty_extra = 0

    def add(text: str, row: int) -> None:
        key = normalize_text(text)
        if key and key not in pos:
            pos[key] = len(keys)
            keys.append(key)
            texts.append(text)
            rows.append(int(row))

    for docs, r in zip(pairs.positives, pos_rows, strict=True):
        for t, row in zip(docs, r, strict=True):
            add(t, row)
    n_pairs = len(keys)
    if extra:
        assert extra_rows is not None
        for t, row in zip(extra, extra_rows, strict=True):
            empty_extra += not normalize_text(t)
            add(t, row)
    return Corpus(keys, texts, np.asarray(rows, np.int64), pos, n_pairs, empty_extra)


def empty_texts(pairs: Pairs, corpus: Corpus | None = None,
                rows: Sequence[int] | None = None) -> dict[str, int]:
    """Empty or whitespace-only texts (data, not errors) among ``rows`` (default: all):
    rows whose query or own document is empty (not mined: ``rows_skipped``), other
    positives that are empty (not indexed), and empty extra-corpus texts."""
    q = d = both = other = 0
    for i in range(len(pairs)) if rows is None else rows:
        query, docs = pairs.queries[i], pairs.positives[i]
        eq, ed = not normalize_text(query), not normalize_text(docs[0])
        q += eq
        d += ed
        both += eq or ed
        other += sum(not normalize_text(t) for t in docs[1:])
    return {"queries": q, "documents": d, "rows_skipped": both, "other_positives": other,
            "extra_corpus": corpus.empty_extra if corpus is not None else 0}


@dataclass
class QueryGroups:
    """Rows whose queries normalise equal: one query with all their positives."""

    group_of_row: np.ndarray  # [n_rows]; -1: an empty query or document, not mined
    first_row: np.ndarray  # [n_groups]: the row whose query text represents the group
    excluded: list[np.ndarray]  # per group: corpus entries never to return as negatives
    query_entry: np.ndarray  # [n_groups] the corpus entry equal to the query text, or -1
    # ST's max_positives (hard_negatives.py:353-356): the most rows of one exact query text
    # (copies included, as pandas' groupby().count() counts them), a row's list of
    # positives counting each
    max_positives: int = 1
    # rows with an empty positive after the first: which of their positives are empty
    empty_positive: dict[int, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.first_row)


def group_queries(pairs: Pairs, corpus: Corpus) -> QueryGroups:
    gid: dict[str, int] = {}
    group_of_row = np.full(len(pairs), -1, np.int64)
    first: list[int] = []
    excl: list[set[int]] = []
    q_entry: list[int] = []
    per_query: dict[str, int] = {}
    empty_pos: dict[int, np.ndarray] = {}
    skip = pairs.empty_rows()
    for i, (q, docs) in enumerate(zip(pairs.queries, pairs.positives, strict=True)):
        if skip[i]:
            continue  # an empty query or document: counted (empty_texts), not mined
        key = normalize_text(q)
        empty = np.asarray([not normalize_text(d) for d in docs], bool)
        if empty.any():
            empty_pos[i] = empty
        per_query[q] = per_query.get(q, 0) + int((~empty).sum())
        g = gid.get(key)
        if g is None:
            g = gid[key] = len(first)
            first.append(i)
            e = corpus.entry_of_key.get(key)
            excl.append(set() if e is None else {e})  # the query text itself
            q_entry.append(-1 if e is None else e)
        group_of_row[i] = g
        for d in docs:
            e = corpus.entry_of_key.get(normalize_text(d))
            if e is not None:  # an empty extra positive is no entry
                excl[g].add(e)
    return QueryGroups(group_of_row, np.asarray(first, np.int64),
                       [np.asarray(sorted(s), np.int64) for s in excl],
                       np.asarray(q_entry, np.int64), max(per_query.values(), default=1),
                       empty_pos)


def search_depth(opts: MineOptions, groups: QueryGroups, n_corpus: int) -> int:
    """Hits to retrieve per query: ST's ``range_max + max_positives``
    (``hard_negatives.py:535``), or the window plus the most entries any query excludes
    where that is more (the query text itself, or a case variant's positives)."""
    most = max((len(e) for e in groups.excluded), default=0)
    window = opts.window(groups.max_positives)
    return max(1, min(n_corpus, window + max(most, groups.max_positives)))


@dataclass
class Mined:
    """Per group: chosen corpus entries and their scores (descending), and counts."""

    entries: list[np.ndarray]
    scores: list[np.ndarray]
    filled: np.ndarray  # [n_groups] how many of each group's negatives are random fill-ups
    min_pos: np.ndarray  # [n_groups] the lowest positive score (the margins' reference)
    counts: dict[str, int]


def _threshold_mask(scores: np.ndarray, min_pos: float, opts: MineOptions,
                    below_positive: bool = False) -> tuple[np.ndarray, dict[str, int]]:
    """True where a candidate survives every threshold; removals counted per rule, in
    ST's order (absolute margin, relative margin, max score, min score), then contrastors'
    ``score < pos`` when ``below_positive``."""
    keep = np.ones(len(scores), bool)
    removed: dict[str, int] = {}
    rules = []
    if opts.absolute_margin is not None:
        rules.append(("absolute_margin", scores + opts.absolute_margin > min_pos))
    if opts.relative_margin is not None:
        rules.append(("relative_margin",
                      scores > min_pos - abs(min_pos) * opts.relative_margin))
    if opts.max_score is not None:
        rules.append(("max_score", scores > opts.max_score))
    if opts.min_score is not None:
        rules.append(("min_score", scores < opts.min_score))
    if below_positive:
        rules.append(("false_negatives", scores >= min_pos))
    for name, bad in rules:
        hit = bad & keep
        removed[name] = int(hit.sum())
        keep &= ~bad
    return keep, removed


def mine(emb: np.ndarray, corpus: Corpus, groups: QueryGroups, query_rows: np.ndarray,
         pos_rows: Sequence[np.ndarray], hit_ids: np.ndarray, hit_scores: np.ndarray,
         opts: MineOptions) -> Mined:
    """Select each query group's negatives from its ranked hits (see the module docstring).

    ``query_rows``/``pos_rows``: embedding-table rows of each row's query and positives;
    ``hit_ids``/``hit_scores`` ``[n_groups, depth]``: corpus entries by descending score.
    """
    opts.check()
    n_g = len(groups)
    window = opts.window(groups.max_positives)
    want = opts.num_negatives
    need = want if opts.min_negatives is None else opts.min_negatives
    below = bool(opts.below_positive)
    counts = {"candidates": 0, "excluded_positive": 0, "excluded_query": 0, "range_min": 0,
              "absolute_margin": 0, "relative_margin": 0, "max_score": 0, "min_score": 0,
              "false_negatives": 0, "short_groups": 0, "filled_groups": 0,
              "filled_negatives": 0, "unfillable_groups": 0}
    # each group's positive scores, against the group's query embedding
    q_of_group = query_rows[groups.first_row]
    min_pos = np.full(n_g, np.inf, np.float32)
    for i, g in enumerate(groups.group_of_row):
        if g < 0:
            continue
        r = pos_rows[i]
        if i in groups.empty_positive:  # a list's empty positive is no positive
            r = r[~groups.empty_positive[i]]
        s = emb[r] @ emb[q_of_group[g]]
        min_pos[g] = min(min_pos[g], float(s.min()))
    entries: list[np.ndarray] = []
    scores: list[np.ndarray] = []
    filled = np.zeros(n_g, np.int64)
    corpus_emb: np.ndarray | None = None
    for g in range(n_g):
        ids, sc = hit_ids[g], hit_scores[g]
        valid = ids >= 0
        ids, sc = ids[valid], sc[valid]
        excl = groups.excluded[g]
        is_excl = np.isin(ids, excl)
        is_query = ids == groups.query_entry[g]
        counts["excluded_query"] += int((is_query & is_excl).sum())
        counts["excluded_positive"] += int((is_excl & ~is_query).sum())
        ids, sc = ids[~is_excl], sc[~is_excl]
        keep, removed = _threshold_mask(sc, float(min_pos[g]), opts)
        for k_, v in removed.items():
            counts[k_] += v
        ids, sc = ids[keep][:window], sc[keep][:window]
        counts["candidates"] += len(ids)
        counts["range_min"] += min(len(ids), opts.range_min)
        ids, sc = ids[opts.range_min:], sc[opts.range_min:]
        if opts.sampling_strategy == "random" and len(ids) > want:
            rng = np.random.default_rng([opts.seed, g])
            pick = np.sort(rng.choice(len(ids), want, replace=False))  # rank order kept
            ids, sc = ids[pick], sc[pick]
        ids, sc = ids[:want], sc[:want]
        if below:  # contrastors' post-filter: only negatives strictly below the positive
            ok = sc < min_pos[g]
            counts["false_negatives"] += int((~ok).sum())
            ids, sc = ids[ok], sc[ok]
        if len(ids) < need:
            counts["short_groups"] += 1
            if opts.fill == "random":
                if corpus_emb is None:
                    corpus_emb = np.asarray(emb[corpus.rows])
                add_i, add_s = _fill(corpus_emb, emb[q_of_group[g]], ids, excl, want - len(ids),
                                     float(min_pos[g]), opts, g)
                if len(add_i):
                    counts["filled_groups"] += 1
                    counts["filled_negatives"] += len(add_i)
                    filled[g] = len(add_i)
                if len(ids) + len(add_i) < need:
                    counts["unfillable_groups"] += 1
                ids, sc = np.concatenate([ids, add_i]), np.concatenate([sc, add_s])
                order = np.lexsort((ids, -sc))
                ids, sc = ids[order], sc[order]
        entries.append(ids.astype(np.int64))
        scores.append(sc.astype(np.float32))
    return Mined(entries, scores, filled, min_pos, counts)


def _fill(corpus_emb: np.ndarray, q: np.ndarray, chosen: np.ndarray, excl: np.ndarray,
          n: int, min_pos: float, opts: MineOptions, g: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` random corpus entries outside ``chosen`` and ``excl`` that pass the
    thresholds (and the post-filter), drawn in a seeded order (one permutation per group)."""
    rng = np.random.default_rng([opts.seed, g, 1])
    order = rng.permutation(len(corpus_emb))
    banned = np.concatenate([chosen, excl])
    order = order[~np.isin(order, banned)]
    got_i: list[np.ndarray] = []
    got_s: list[np.ndarray] = []
    have = 0
    step = max(64, 4 * n)
    for a in range(0, len(order), step):
        cand = order[a:a + step]
        s = corpus_emb[cand] @ q
        keep, _ = _threshold_mask(s, min_pos, opts, bool(opts.below_positive))
        got_i.append(cand[keep][:n - have])
        got_s.append(s[keep][:n - have])
        have += len(got_i[-1])
        if have >= n:
            break
    if not got_i:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(got_i).astype(np.int64), np.concatenate(got_s).astype(np.float32)


# ---------------------------------------------------------------------------------------
# outputs


def contrastors_records(pairs: Pairs, rows: Sequence[int], corpus: Corpus, groups: QueryGroups,
                        mined: Mined, pos_scores: np.ndarray, negatives_key: str,
                        drop_short: bool, need: int) -> tuple[list[dict[str, Any]], int]:
    """contrastors' records: the input record + ``negatives_key`` (texts), ``pos_score``,
    ``scores`` (one per negative) and the ``metadata`` objective; rows short of ``need``
    negatives are left out when ``drop_short``; every other row is written, copies too
    (contrastors keeps every line), except rows with an empty query or document (counted
    by :func:`empty_texts`). Returns (records, rows dropped)."""
    meta = {"objective": {"self": [], "paired": [],
                          "triplet": [[pairs.query_key, pairs.document_key, negatives_key]]}}
    out = []
    dropped = 0
    for i in rows:
        g = groups.group_of_row[i]
        if g < 0:
            continue
        ents = mined.entries[g]
        if drop_short and len(ents) < need:
            dropped += 1
            continue
        rec = pairs.records[i]
        if isinstance(rec, dict):
            rec = dict(rec)
        else:  # list lines and HF rows become objects with the named keys
            rec = {pairs.query_key: pairs.queries[i], pairs.document_key: pairs.documents[i]}
        rec[negatives_key] = [corpus.texts[e] for e in ents]
        rec["pos_score"] = round(float(pos_scores[i]), 6)
        rec["scores"] = [round(float(s), 6) for s in mined.scores[g]]
        rec["metadata"] = meta
        out.append(rec)
    return out, dropped


def st_pairs(pairs: Pairs, rows: Sequence[int], groups: QueryGroups
             ) -> tuple[list[tuple[str, list[tuple[str, int]]]], int]:
    """sentence-transformers' order of (query, positive) pairs: each distinct query text in
    first-seen order with its distinct positive texts in first-seen order, each pair once
    (``hard_negatives.py:428-433, 565-580``: queries and positives deduplicated by exact
    text). Returns ([(query, [(positive, first row)])], rows left out as repeated pairs)."""
    order: dict[str, dict[str, int]] = {}
    repeated = 0
    for i in rows:
        if groups.group_of_row[i] < 0:
            continue
        docs = order.setdefault(pairs.queries[i], {})
        d = pairs.documents[i]
        if d in docs:
            repeated += 1
        else:
            docs[d] = int(i)
    return [(q, list(docs.items())) for q, docs in order.items()], repeated


def st_columns(pairs: Pairs, rows: Sequence[int], corpus: Corpus, groups: QueryGroups,
               mined: Mined, pos_scores: np.ndarray, fmt: str, num_negatives: int,
               output_scores: bool, drop_short: bool, need: int
               ) -> tuple[dict[str, list], int, int]:
    """sentence-transformers' output formats as columns (anchor/positive named by the
    query and document keys), over :func:`st_pairs` (each (query, positive) pair once, in
    ST's order): ``triplet`` one row per negative, ``n-tuple`` rows with all
    ``num_negatives`` (others dropped, as ST does), ``labeled-pair`` each query's positives
    (label 1) then its negatives (label 0), ``labeled-list`` ([positive, negatives...],
    [1, 0, ...]) per pair; ``output_scores`` replaces labels by scores as ST does.
    Returns (columns, pairs dropped short, rows left out as repeated pairs)."""
    qk, dk = pairs.query_key, pairs.document_key
    cols: dict[str, list] = {qk: [], dk: []}
    dropped = 0
    if fmt == "triplet":
        cols["negative"] = []
        if output_scores:
            cols["scores"] = []
    elif fmt == "n-tuple":
        for j in range(num_negatives):
            cols[f"negative_{j + 1}"] = []
        if output_scores:
            cols["scores"] = []
    elif fmt == "labeled-pair":
        cols["score" if output_scores else "label"] = []
    elif fmt == "labeled-list":
        cols["scores" if output_scores else "labels"] = []
    else:
        raise InputError(None, f'unknown output format "{fmt}" ({", ".join(OUTPUT_FORMATS)})')
    ordered, repeated = st_pairs(pairs, rows, groups)
    for q, docs in ordered:
        g = int(groups.group_of_row[docs[0][1]])  # one exact query: one group
        ents, sc = mined.entries[g], mined.scores[g]
        if drop_short and len(ents) < need:
            dropped += len(docs)
            continue
        if fmt == "labeled-pair":
            lab = "score" if output_scores else "label"
            for d, i in docs:
                cols[qk].append(q)
                cols[dk].append(d)
                cols[lab].append(float(pos_scores[i]) if output_scores else 1)
            for e, s in zip(ents, sc, strict=True):
                cols[qk].append(q)
                cols[dk].append(corpus.texts[e])
                cols[lab].append(float(s) if output_scores else 0)
            continue
        for d, i in docs:
            ps = float(pos_scores[i])
            if fmt == "triplet":
                for e, s in zip(ents, sc, strict=True):
                    cols[qk].append(q)
                    cols[dk].append(d)
                    cols["negative"].append(corpus.texts[e])
                    if output_scores:
                        cols["scores"].append([ps, float(s)])
            elif fmt == "n-tuple":
                if len(ents) < num_negatives:
                    dropped += 1
                    continue
                cols[qk].append(q)
                cols[dk].append(d)
                for j, e in enumerate(ents[:num_negatives]):
                    cols[f"negative_{j + 1}"].append(corpus.texts[e])
                if output_scores:
                    cols["scores"].append([ps, *map(float, sc[:num_negatives])])
            else:  # labeled-list
                if not len(ents):
                    dropped += 1
                    continue
                cols[qk].append(q)
                cols[dk].append([d, *(corpus.texts[e] for e in ents)])
                cols["scores" if output_scores else "labels"].append(
                    [ps, *map(float, sc)] if output_scores else [1] + [0] * len(ents))
    return cols, dropped, repeated


def leak_check(pairs: Pairs, rows: Sequence[int], corpus: Corpus, groups: QueryGroups,
               mined: Mined) -> dict[str, int]:
    """An independent count of negatives that equal (by normalised text) a positive of any
    row with the same normalised query, or the query itself: must be zero."""
    pos_keys: dict[int, set[str]] = {}
    for i in range(len(pairs)):
        g = int(groups.group_of_row[i])
        if g < 0:
            continue
        s = pos_keys.setdefault(g, {normalize_text(pairs.queries[i])})
        s.update(normalize_text(d) for d in pairs.positives[i])
    leaks = dup_leaks = 0
    for i in rows:
        g = int(groups.group_of_row[i])
        if g < 0:
            continue
        exact = set(pairs.positives[i])
        for e in mined.entries[g]:
            t = corpus.texts[e]
            if t in exact:
                leaks += 1
            elif normalize_text(t) in pos_keys[g]:
                dup_leaks += 1
    return {"negatives_equal_to_a_positive": leaks,
            "negatives_duplicating_a_positive_or_query": dup_leaks}
