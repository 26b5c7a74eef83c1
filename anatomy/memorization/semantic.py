"""Semantic and textual matches of samples (pipeline C): snowclones and templates.

Mirrors EleutherAI/semantic-memorization (``working_dirs/rintarou/snowclones_maker.py``,
``templating.py`` and ``query_maker.py``); Prashanth et al. 2024, "Recite, Reconstruct,
Recollect", feature list ("Semantic Matches", "Textual Matches"; the model uses the 0.8
columns). See ``reference/memorization.md`` section 2(d).

- **Semantic matches** (``0_8_snowclones``, ``0_9_snowclones``): per query, the number of
  corpus items whose embedding (all-MiniLM-L6-v2 of the decoded 64-token sample) has cosine
  ``>= t`` with the query's. Exact counts: every query is compared with every corpus row by a
  tiled ``queries @ corpus.T`` of L2-normalised float32 rows, as the published
  ``torch.mm(...) >= threshold``; nothing is truncated to a top k.
- **Textual matches** (``0_8_templates``, ``0_9_templates``): among the corpus items at
  cosine ``>= t``, those whose decoded 32-token prompts are within Levenshtein distance
  ``0 < d < 20`` characters of the query's prompt (rapidfuzz). As published, a query whose
  prompt holds a non-ASCII character gets 0 (``ascii_only``); the neighbours' prompts are not
  checked for ASCII (the published test reads only the query's prompt).

A query that is also in the corpus matches itself (cosine 1), as in the published "pile"
scheme where the corpus is the sample itself: its snowclone counts are at least 1. Its own
prompt is at distance 0, so it never counts as a template. ``exclude_self_ids`` (see
:func:`self_rows`) drops each query's own corpus row instead.

All-zero embeddings stay zero after normalisation (:func:`anatomy.neighbours.l2_normalize`),
so they match nothing; the published division by a zero norm gave NaN, which matches nothing
too.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from anatomy.io import InputError
from anatomy.neighbours import l2_normalize

THRESHOLDS = (0.8, 0.9)  # published cosine thresholds
MAX_DISTANCE = 20  # published: a template is at Levenshtein distance 0 < d < 20 characters
_BLOCK_BYTES = 256 << 20  # similarities held at once: query block x corpus block float32
_QUERY_BLOCK = 4096  # queries per tile (the corpus block then fills _BLOCK_BYTES)


def column_name(threshold: float, kind: str) -> str:
    """The published column name: ``column_name(0.8, "snowclones") == "0_8_snowclones"``."""
    return f"{threshold:g}".replace(".", "_") + f"_{kind}"


def self_rows(query_ids: Sequence[int] | np.ndarray,
              corpus_ids: Sequence[int] | np.ndarray) -> np.ndarray:
    """For each query id, the row of ``corpus_ids`` holding the same id, else -1 (int64).

    The ``exclude_self_ids`` argument of the counting functions, built from sample ids
    (e.g. sequence ids). Corpus ids must be unique.
    """
    q = np.asarray(query_ids).ravel()
    c = np.asarray(corpus_ids).ravel()
    if c.size == 0:
        return np.full(q.size, -1, np.int64)
    order = np.argsort(c, kind="stable")
    cs = c[order]
    if np.any(cs[1:] == cs[:-1]):
        raise InputError(None, "corpus ids must be unique to find each query's own row")
    pos = np.minimum(np.searchsorted(cs, q), cs.size - 1)
    return np.where(cs[pos] == q, order[pos], -1).astype(np.int64)


# ---------------------------------------------------------------------------------------
# tiles of the similarity matrix


def _checked(query_emb: np.ndarray, corpus_emb: np.ndarray, thresholds: Sequence[float],
             exclude_self_ids: np.ndarray | None
             ) -> tuple[np.ndarray, np.ndarray, tuple[float, ...], np.ndarray | None]:
    q = np.asarray(query_emb)
    c = np.asarray(corpus_emb)
    if q.ndim != 2 or c.ndim != 2 or q.shape[1] != c.shape[1]:
        raise InputError(None, f"query embeddings {q.shape} and corpus embeddings {c.shape} "
                               "must be [n, d] arrays of the same dimension")
    ts = tuple(float(t) for t in thresholds)
    if not ts or any(not -1.0 <= t <= 1.0 for t in ts):
        raise InputError(None, f"cosine thresholds must lie in [-1, 1], got {list(ts)}")
    rows = None
    if exclude_self_ids is not None:
        rows = np.asarray(exclude_self_ids, dtype=np.int64).ravel()
        if rows.shape != (len(q),) or np.any((rows < -1) | (rows >= len(c))):
            raise InputError(None, f"exclude_self_ids needs one corpus row (or -1) per query: "
                                   f"{len(q)} values in [-1, {len(c)})")
    return (np.ascontiguousarray(l2_normalize(q)), np.ascontiguousarray(l2_normalize(c)),
            ts, rows)


@contextlib.contextmanager
def _full_fp32():
    """torch matmuls in true float32 inside the block (no TF32 on GPUs that have it)."""
    import torch

    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


def _tiles(q: np.ndarray, c: np.ndarray, block_bytes: int, device: str | None,
           self_row: np.ndarray | None, progress: bool) -> Iterator[tuple[int, int, int, Any]]:
    """Yield ``(a, b, ca, sims)``: the tile ``q[a:b] @ c[ca:ca + n].T`` of similarities.

    A numpy array, or with ``device`` a torch tensor computed there. Each query's own corpus
    row (``self_row``) is set to -2 so that it passes no threshold.
    """
    from anatomy.progress import progress as bar

    nq, nc = len(q), len(c)
    if nq == 0 or nc == 0:
        return
    qb = min(nq, _QUERY_BLOCK)
    cb = max(1, min(nc, block_bytes // (4 * qb)))
    spans = [(a, min(a + qb, nq), ca, min(ca + cb, nc))
             for a in range(0, nq, qb) for ca in range(0, nc, cb)]
    if device is not None:
        import torch

        qt = torch.from_numpy(q).to(torch.device(device))
        ct = torch.from_numpy(c).to(qt.device)
    with _full_fp32() if device is not None else contextlib.nullcontext():
        for a, b, ca, cz in bar(spans, "similarity tiles", "tile", len(spans),
                                None if progress else True):
            sims = qt[a:b] @ ct[ca:cz].T if device is not None else q[a:b] @ c[ca:cz].T
            if self_row is not None:
                r = self_row[a:b]
                hit = np.flatnonzero((r >= ca) & (r < cz))
                if hit.size:
                    sims[_index(sims, hit), _index(sims, r[hit] - ca)] = -2.0
            yield a, b, ca, sims


def _index(sims: Any, idx: np.ndarray) -> Any:
    """``idx`` as an index of ``sims`` (a torch tensor on its device for a tensor)."""
    if isinstance(sims, np.ndarray):
        return idx
    import torch

    return torch.from_numpy(idx).to(sims.device)


def _count_above(sims: Any, t: float) -> np.ndarray:
    """Per tile row, the number of similarities ``>= t`` (compared in float32)."""
    if isinstance(sims, np.ndarray):
        return (sims >= np.float32(t)).sum(1)
    return (sims >= np.float32(t).item()).sum(1).cpu().numpy()


def _pairs_above(sims: Any, t: float, rows_ok: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rows, cols, similarities)`` of the tile cells ``>= t`` in the rows ``rows_ok``."""
    if isinstance(sims, np.ndarray):
        r, c = np.nonzero((sims >= np.float32(t)) & rows_ok[:, None])
        return r, c, sims[r, c]
    import torch

    ok = torch.from_numpy(rows_ok).to(sims.device)[:, None]
    r, c = torch.nonzero((sims >= np.float32(t).item()) & ok, as_tuple=True)
    return r.cpu().numpy(), c.cpu().numpy(), sims[r, c].cpu().numpy()


# ---------------------------------------------------------------------------------------
# counting


class _Prompts:
    """Query and corpus prompts prepared for the template count: ids of identical strings
    (distance 0 without computing it), lengths (``|len a - len b| <= d`` prunes pairs) and
    the ASCII rule."""

    def __init__(self, query_prompts: Sequence[str], corpus_prompts: Sequence[str],
                 n_query: int, n_corpus: int, max_distance: int, ascii_only: bool,
                 workers: int):
        if len(query_prompts) != n_query or len(corpus_prompts) != n_corpus:
            raise InputError(None, f"need one prompt per embedding: {len(query_prompts)} "
                                   f"query prompts for {n_query} queries, "
                                   f"{len(corpus_prompts)} corpus prompts for {n_corpus} rows")
        if max_distance < 1:
            raise InputError(None, f"max_distance must be >= 1, got {max_distance}")
        self.q = np.asarray(list(query_prompts), dtype=object)
        self.c = np.asarray(list(corpus_prompts), dtype=object)
        ids: dict[str, int] = {}
        self.q_id = np.fromiter((ids.setdefault(s, len(ids)) for s in self.q), np.int64,
                                len(self.q))
        self.c_id = np.fromiter((ids.setdefault(s, len(ids)) for s in self.c), np.int64,
                                len(self.c))
        self.q_len = np.fromiter((len(s) for s in self.q), np.int64, len(self.q))
        self.c_len = np.fromiter((len(s) for s in self.c), np.int64, len(self.c))
        self.eligible = (np.fromiter((s.isascii() for s in self.q), bool, len(self.q))
                         if ascii_only else np.ones(len(self.q), bool))
        self.max_distance, self.workers = int(max_distance), int(workers)

    def within(self, qi: np.ndarray, ci: np.ndarray) -> np.ndarray:
        """Boolean per pair: Levenshtein distance of the prompts in ``(0, max_distance)``."""
        from rapidfuzz.distance import Levenshtein
        from rapidfuzz.process import cpdist

        ok = ((self.q_id[qi] != self.c_id[ci])
              & (np.abs(self.q_len[qi] - self.c_len[ci]) < self.max_distance))
        out = np.zeros(len(qi), bool)
        idx = np.flatnonzero(ok)
        if idx.size:
            # distances above the cutoff come back as cutoff + 1 = max_distance
            d = cpdist(self.q[qi[idx]].tolist(), self.c[ci[idx]].tolist(),
                       scorer=Levenshtein.distance, score_cutoff=self.max_distance - 1,
                       workers=self.workers)
            out[idx] = (d > 0) & (d < self.max_distance)
        return out


def _count(query_emb: np.ndarray, corpus_emb: np.ndarray, thresholds: Sequence[float],
           prompts: dict[str, Any] | None, exclude_self_ids: np.ndarray | None,
           block_bytes: int, device: str | None, progress: bool) -> dict[str, np.ndarray]:
    """One pass over the tiles: snowclone counts per threshold, and template counts when
    ``prompts`` (the arguments of :class:`_Prompts`) are given."""
    q, c, ts, rows = _checked(query_emb, corpus_emb, thresholds, exclude_self_ids)
    snow = {t: np.zeros(len(q), np.int64) for t in ts}
    tmpl = {t: np.zeros(len(q), np.int64) for t in ts}
    p = _Prompts(n_query=len(q), n_corpus=len(c), **prompts) if prompts is not None else None
    t_min = min(ts)
    for a, b, ca, sims in _tiles(q, c, block_bytes, device, rows, progress):
        for t in ts:
            snow[t][a:b] += _count_above(sims, t)
        if p is None:
            continue
        r, col, s = _pairs_above(sims, t_min, p.eligible[a:b])
        if r.size == 0:
            continue
        ok = p.within(a + r, ca + col)
        r, s = r[ok], s[ok]
        for t in ts:
            tmpl[t][a:b] += np.bincount(r[s >= np.float32(t)], minlength=b - a)
    out = {column_name(t, "snowclones"): snow[t] for t in ts}
    if p is not None:
        out.update({column_name(t, "templates"): tmpl[t] for t in ts})
    return out


def semantic_matches(query_emb: np.ndarray, corpus_emb: np.ndarray,
                     thresholds: Sequence[float] = THRESHOLDS,
                     exclude_self_ids: np.ndarray | None = None,
                     block_bytes: int = _BLOCK_BYTES, device: str | None = None,
                     progress: bool = False) -> dict[str, np.ndarray]:
    """Semantic matches: per query, the number of corpus rows at cosine ``>= t`` (int64).

    Source: ``number_of_snowclone`` in EleutherAI/semantic-memorization's
    ``working_dirs/rintarou/snowclones_maker.py`` (normalise, ``torch.mm``, count
    ``>= threshold``). Returns ``{"0_8_snowclones": ..., "0_9_snowclones": ...}`` for the
    default thresholds (:func:`column_name`).

    Exact: the similarities are computed tile by tile (``block_bytes`` of float32 at a time)
    over all query-corpus pairs, no top-k. A query present in the corpus counts itself, as
    published; ``exclude_self_ids`` (one corpus row per query, -1 for none; see
    :func:`self_rows`) leaves each query's own row out. ``device`` (e.g. ``"cuda"``) runs the
    matmuls with torch there in true float32 (no TF32); both embeddings are copied to it.
    """
    return _count(query_emb, corpus_emb, thresholds, None, exclude_self_ids, block_bytes,
                  device, progress)


def textual_matches(query_emb: np.ndarray, corpus_emb: np.ndarray,
                    query_prompts: Sequence[str], corpus_prompts: Sequence[str],
                    threshold: float = 0.8, max_distance: int = MAX_DISTANCE,
                    ascii_only: bool = True, exclude_self_ids: np.ndarray | None = None,
                    workers: int = 1, block_bytes: int = _BLOCK_BYTES,
                    device: str | None = None, progress: bool = False) -> np.ndarray:
    """Textual matches: per query, the corpus rows at cosine ``>= threshold`` whose prompt is
    within Levenshtein distance ``0 < d < max_distance`` characters of the query's (int64).

    Source: ``number_of_snowclones`` in EleutherAI/semantic-memorization's
    ``working_dirs/rintarou/templating.py`` (``0_8_templates`` / ``0_9_templates`` with
    threshold 0.8 / 0.9); the prompts are the decoded first 32 tokens (``query_maker.py``).
    With ``ascii_only`` (published) a query whose prompt has a non-ASCII character gets 0.

    Distances are computed only for the above-threshold pairs of each tile, with rapidfuzz's
    ``process.cpdist`` (``Levenshtein.distance``, ``score_cutoff = max_distance - 1``,
    ``workers`` threads); pairs with identical prompts (d = 0) or lengths ``max_distance`` or
    more apart (d >= the length difference) are settled without computing a distance.
    """
    prompts = dict(query_prompts=query_prompts, corpus_prompts=corpus_prompts,
                   max_distance=max_distance, ascii_only=ascii_only, workers=workers)
    out = _count(query_emb, corpus_emb, (threshold,), prompts, exclude_self_ids, block_bytes,
                 device, progress)
    return out[column_name(float(threshold), "templates")]


def match_columns(query_emb: np.ndarray, corpus_emb: np.ndarray,
                  query_prompts: Sequence[str], corpus_prompts: Sequence[str],
                  thresholds: Sequence[float] = THRESHOLDS, max_distance: int = MAX_DISTANCE,
                  ascii_only: bool = True, exclude_self_ids: np.ndarray | None = None,
                  workers: int = 1, block_bytes: int = _BLOCK_BYTES,
                  device: str | None = None, progress: bool = False) -> dict[str, np.ndarray]:
    """:func:`semantic_matches` and :func:`textual_matches` for every threshold in one pass
    over the similarity matrix: ``0_8_snowclones``, ``0_9_snowclones``, ``0_8_templates``,
    ``0_9_templates`` (int64) for the published thresholds."""
    prompts = dict(query_prompts=query_prompts, corpus_prompts=corpus_prompts,
                   max_distance=max_distance, ascii_only=ascii_only, workers=workers)
    return _count(query_emb, corpus_emb, thresholds, prompts, exclude_self_ids, block_bytes,
                  device, progress)


def semantic_columns(embedder: Any, texts: Sequence[str], prompts: Sequence[str],
                     corpus_texts: Sequence[str] | None = None,
                     corpus_prompts: Sequence[str] | None = None, batch_size: int = 64,
                     progress: bool = False, thresholds: Sequence[float] = THRESHOLDS,
                     max_distance: int = MAX_DISTANCE, ascii_only: bool = True,
                     exclude_self_ids: np.ndarray | None = None, workers: int = 1,
                     device: str | None = None) -> dict[str, np.ndarray]:
    """Embed the samples (and the corpus) and count semantic and textual matches.

    ``embedder`` is an :class:`anatomy.lm.Embedder` (:func:`anatomy.lm.load_embedder`; the
    published one is all-MiniLM-L6-v2), ``texts`` the decoded samples (64 tokens published)
    and ``prompts`` their decoded 32-token prompts. Without ``corpus_texts`` the corpus is the
    samples themselves (the published "pile" scheme: every sample matches itself, so its
    snowclone counts are >= 1) and nothing is embedded twice. The similarity tiles run on
    ``device`` (default: the embedder's device when it is a GPU, else numpy on the CPU).
    Returns the four columns of :func:`match_columns`, int64.
    """
    from anatomy.lm import embed_texts

    if len(texts) != len(prompts):
        raise InputError(None, f"{len(texts)} texts but {len(prompts)} prompts")
    if (corpus_texts is None) != (corpus_prompts is None):
        raise InputError(None, "give both corpus_texts and corpus_prompts, or neither")
    if device is None:
        dev = getattr(embedder, "device", None)
        device = str(dev) if getattr(dev, "type", "cpu") == "cuda" else None
    q = embed_texts(embedder, list(texts), batch_size=batch_size, progress=progress)
    if corpus_texts is None:
        c, c_prompts = q, prompts
    else:
        c = embed_texts(embedder, list(corpus_texts), batch_size=batch_size, progress=progress)
        c_prompts = corpus_prompts
    return match_columns(q, c, list(prompts), list(c_prompts), thresholds, max_distance,
                         ascii_only, exclude_self_ids, workers, device=device,
                         progress=progress)
