"""Nearest neighbours in embedding space: spherical k-means, exact and IVF inner-product search.

One module for every pipeline that compares embeddings: OLMoMIA's clusters (A), semantic
matches (C), SemDeDup (D), consistency filtering and hard-negative mining (E).

- :func:`spherical_kmeans`: faiss k-means on the unit sphere (centroids re-normalised each
  iteration; Dhillon & Modha 2001), single-threaded so a rerun gives the same assignment.
- :func:`exact_search`: the top-k inner products of every query against every row, exact:
  chunked matmul + ``argpartition`` (numpy) or faiss ``IndexFlatIP``. Exact ties (duplicate
  texts embed identically) are broken by the lower row index in both, so results are
  deterministic; the two backends' BLAS kernels round differently, so neighbours whose
  scores differ in the last bits can swap between them (measured: 0.01% of ids).
- :func:`ivf_search`: faiss ``IndexIVFFlat`` (inner product) for large indexes, with its
  recall@k measured against :func:`exact_search` on a seeded sample of the queries
  (:class:`IvfResult.recall`), so an approximate result always says how approximate it is.

Vectors are float32; for cosine similarity pass L2-normalised rows (:func:`l2_normalize`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np

from anatomy.io import InputError

# Rows of the similarity matrix computed at once by the numpy backend: block x n_index
# float32 (4096 x 100k = 1.6 GB would be too much; the block shrinks to fit _MAX_BLOCK_BYTES).
_MAX_BLOCK_BYTES = 256 << 20


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, as float32 (faiss's dtype); all-zero rows stay zero."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1).astype(np.float32)


@contextlib.contextmanager
def faiss_threads(n: int = 1):
    """Run faiss with ``n`` OpenMP threads inside the block (multi-threaded k-means
    reductions vary from run to run; one thread makes them reproducible)."""
    import faiss

    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


def spherical_kmeans(x: np.ndarray, k: int, niter: int = 50,
                     seed: int = 42) -> tuple[np.ndarray, np.ndarray]:
    """faiss spherical k-means; returns ``(centroids (k, d), assignment (n,) int64)``.

    ``x`` should be L2-normalised. Each point is assigned to the centroid of largest inner
    product (cosine, since faiss re-normalises spherical centroids); ties to the lower
    centroid index. Single-threaded so a rerun gives identical assignments.
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if not 1 <= k <= n:
        raise InputError(None, f"cannot make {k} clusters from {n} points; use fewer clusters")
    with faiss_threads(1):
        km = faiss.Kmeans(d, k, niter=niter, seed=seed, spherical=True, verbose=False)
        km.train(x)
        centroids = np.array(km.centroids, dtype=np.float32)
    _, assign = exact_search(x, centroids, 1, backend="faiss")
    return centroids, assign[:, 0]


def _check(queries: np.ndarray, index: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    q = np.ascontiguousarray(queries, dtype=np.float32)
    x = np.ascontiguousarray(index, dtype=np.float32)
    if q.ndim != 2 or x.ndim != 2 or q.shape[1] != x.shape[1]:
        raise InputError(None, f"queries {q.shape} and index {x.shape} must be [n, d] arrays "
                               "of the same dimension")
    if not 1 <= k <= len(x):
        raise InputError(None, f"k must be in [1, {len(x)}] (the index size), got {k}")
    return q, x


def _topk_rows(sims: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row, by score descending then column ascending (vectorised).

    The k-th largest score of each row is found by ``np.partition``; every column at or above
    it is a candidate. A row with more than k candidates has ties at the boundary (duplicate
    texts embed identically): those rows keep their lowest-index tied columns.
    """
    n_q, n = sims.shape
    if k < n:
        kth = -np.partition(-sims, k - 1, axis=1)[:, k - 1:k]
        mask = sims >= kth
        counts = mask.sum(1)
        ids = np.empty((n_q, k), np.int64)
        simple = counts == k
        if simple.any():
            ids[simple] = np.nonzero(mask[simple])[1].reshape(-1, k)
        for r in np.flatnonzero(~simple):
            c = np.flatnonzero(mask[r])
            ids[r] = c[np.lexsort((c, -sims[r, c]))][:k]
    else:
        ids = np.broadcast_to(np.arange(n, dtype=np.int64), sims.shape).copy()
    scores = np.take_along_axis(sims, ids, 1)
    order = np.lexsort((ids, -scores), axis=1)
    ids = np.take_along_axis(ids, order, 1)
    return np.take_along_axis(scores, order, 1).astype(np.float32), ids


def exact_search(queries: np.ndarray, index: np.ndarray, k: int, backend: str = "numpy",
                 block: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` inner products: ``(scores [n_q, k] float32, ids [n_q, k] int64)``.

    Rows are sorted by score, ties by the lower index, with either backend:

    - ``numpy``: ``queries[a:b] @ index.T`` in float64, rounded to float32, a block of
      queries at a time (at most 256 MiB of similarities), top-k by ``argpartition``;
    - ``faiss``: ``IndexFlatIP`` (the same float32 dot products through BLAS), re-ranked so
      that ties are ordered by index too.
    """
    q, x = _check(queries, index, k)
    if backend == "faiss":
        import faiss

        ip = faiss.IndexFlatIP(x.shape[1])
        ip.add(x)
        # ask for a few more than k, then settle ties at the boundary by index
        kk = min(len(x), k + 8)
        scores, ids = ip.search(q, kk)
        out_s = np.empty((len(q), k), np.float32)
        out_i = np.empty((len(q), k), np.int64)
        for r in range(len(q)):
            boundary = scores[r, k - 1]
            if kk > k and scores[r, kk - 1] >= boundary:  # ties beyond what we fetched
                s, i = _topk_rows((q[r:r + 1] @ x.T), k)
                out_s[r], out_i[r] = s[0], i[0]
                continue
            order = np.lexsort((ids[r], -scores[r]))[:k]
            out_s[r], out_i[r] = scores[r, order], ids[r, order]
        return out_s, out_i
    if backend != "numpy":
        raise InputError(None, f"unknown search backend {backend!r} (numpy, faiss)")
    if block is None:
        block = max(1, min(len(q), _MAX_BLOCK_BYTES // (8 * max(1, len(x)))))
    parts_s, parts_i = [], []
    x64 = x.astype(np.float64)
    for a in range(0, len(q), block):
        # float64 products rounded to float32: a float32 GEMM may give two identical rows
        # scores a bit apart (the kernel's edge tiles sum in another order; seen once in CI),
        # which would break the ties-by-index rule
        sims = (q[a:a + block].astype(np.float64) @ x64.T).astype(np.float32)
        s, i = _topk_rows(sims, k)
        parts_s.append(s)
        parts_i.append(i)
    if not parts_s:
        return np.zeros((0, k), np.float32), np.zeros((0, k), np.int64)
    return np.concatenate(parts_s), np.concatenate(parts_i)


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k found in its approximate top-k."""
    a, e = np.asarray(approx_ids), np.asarray(exact_ids)
    if a.shape != e.shape or a.ndim != 2:
        raise ValueError(f"id arrays must have the same [n, k] shape, got {a.shape}, {e.shape}")
    if a.size == 0:
        return float("nan")
    hits = [len(np.intersect1d(x, y)) for x, y in zip(a, e, strict=True)]
    return float(np.mean(hits) / a.shape[1])


@dataclass
class IvfResult:
    scores: np.ndarray  # [n_q, k] float32
    ids: np.ndarray  # [n_q, k] int64 (-1 where a probed list held fewer than k rows)
    recall: float  # recall@k against exact search on ``recall_sample`` queries
    recall_sample: int
    nlist: int
    nprobe: int


def ivf_search(queries: np.ndarray, index: np.ndarray, k: int, nlist: int | None = None,
               nprobe: int = 8, seed: int = 0, recall_sample: int = 256,
               train_size: int | None = None) -> IvfResult:
    """Approximate top-``k`` inner products with faiss ``IndexIVFFlat``, recall measured.

    ``nlist`` inverted lists (default ``4 * sqrt(n)``, faiss's guideline) trained by k-means
    on a seeded sample of ``train_size`` rows (default ``min(n, 64 * nlist)``); each query
    visits ``nprobe`` lists. The recall@k of the result against :func:`exact_search` is
    measured on ``recall_sample`` queries drawn with ``seed`` (all when fewer).
    """
    import faiss

    q, x = _check(queries, index, k)
    n, d = x.shape
    nlist = int(nlist or max(1, round(4 * np.sqrt(n))))
    if not 1 <= nlist <= n:
        raise InputError(None, f"nlist must be in [1, {n}], got {nlist}")
    rng = np.random.default_rng(seed)
    m = min(n, train_size or 64 * nlist)
    train = x[np.sort(rng.choice(n, m, replace=False))] if m < n else x
    with faiss_threads(1):
        quantizer = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.seed = int(seed)
        ivf.cp.min_points_per_centroid = 1  # small indexes: no "please provide" warning
        ivf.train(train)
    ivf.add(x)
    ivf.nprobe = min(nprobe, nlist)
    scores, ids = ivf.search(q, k)
    s = min(len(q), recall_sample)
    pick = np.sort(rng.choice(len(q), s, replace=False)) if s < len(q) else np.arange(len(q))
    _, exact = exact_search(q[pick], x, k)
    return IvfResult(scores.astype(np.float32), ids.astype(np.int64),
                     recall_at_k(ids[pick], exact), s, nlist, ivf.nprobe)


def _topk_torch(sims, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of each row of a torch matrix, by score descending then column ascending:
    ``torch.topk`` for k + 1 candidates; a row whose k-th and (k+1)-th scores tie is settled
    exactly by :func:`_topk_rows` (duplicate texts embed identically)."""
    import torch

    n = sims.shape[1]
    kk = min(n, k + 1)
    s, i = torch.topk(sims, kk, dim=1, sorted=True)
    s_np = s[:, :k].cpu().numpy()
    i_np = i[:, :k].cpu().numpy().astype(np.int64)
    order = np.lexsort((i_np, -s_np), axis=1)
    s_np = np.take_along_axis(s_np, order, 1)
    i_np = np.take_along_axis(i_np, order, 1)
    if kk > k:
        for r in torch.nonzero(s[:, k - 1] == s[:, k]).flatten().tolist():
            s_np[r], i_np[r] = (a[0] for a in _topk_rows(sims[r:r + 1].cpu().numpy(), k))
    return s_np.astype(np.float32), i_np


def _ranks_of(sims: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """1-based rank of column ``t[i]`` in row ``i`` (ties by lower column), and its score."""
    has = t >= 0
    tc = np.where(has, t, 0)
    own = sims[np.arange(len(sims)), tc] if sims.shape[1] else np.zeros(len(sims), np.float32)
    above = np.count_nonzero(sims > own[:, None], axis=1)
    equal = np.count_nonzero(sims == own[:, None], axis=1)  # the target itself, and ties
    before = np.zeros(len(sims), np.int64)
    for r in np.flatnonzero(has & (equal > 1)):  # exact ties are rare: settle them one by one
        before[r] = np.count_nonzero(sims[r, :tc[r]] == own[r])
    ranks = np.where(has, 1 + above + before, -1).astype(np.int64)
    return ranks, np.where(has, own, np.nan).astype(np.float32)


def first_copies(index: np.ndarray) -> np.ndarray | None:
    """For each row, the lowest row holding the same vector bit for bit; None when every row
    is distinct (the common case, so callers skip the extra work).

    Identical rows (copies of a text, or texts equal within ``max_length`` tokens) must tie
    exactly, yet a float32 GEMM may score them differently by column (its tiles sum in
    another order: 0.5907634 vs 0.59076345 for one embedding, issue 23); scoring each
    distinct vector once and copying its column restores the tie.
    """
    x = np.ascontiguousarray(index)
    if x.ndim != 2 or len(x) < 2:
        return None
    rows = x.view(np.dtype((np.void, x.dtype.itemsize * x.shape[1]))).ravel()
    _, first, inverse = np.unique(rows, return_index=True, return_inverse=True)
    if len(first) == len(x):
        return None
    return first[inverse.ravel()].astype(np.int64)


def rank_search(queries: np.ndarray, index: np.ndarray, targets: np.ndarray | None = None,
                k: int = 0, device: str | None = None, block: int | None = None,
                copies: np.ndarray | None | bool = True) -> dict[str, np.ndarray]:
    """Exact search that also ranks a known row: one similarity matrix, two answers.

    For query ``i`` and its target row ``targets[i]`` (``-1``: none):

    - ``ranks[i]``: the 1-based position of the target in the query's ranking by inner
      product, ties by the lower row index (the order :func:`exact_search` returns), so
      "the target is among the top k" is exactly ``ranks <= k`` for every k at once;
    - ``own[i]``: the target's score (NaN without one);
    - with ``k > 0``, ``scores``/``ids`` ``[n_q, k]``: the top-k hits, ties by lower index.

    The similarities are computed in query blocks of at most 256 MiB: on the CPU by numpy
    (BLAS; measured here faster than torch's matmul, and its comparisons 5x faster), the top
    k by ``torch.topk`` on the same matrix (15x faster than ``argpartition``); on ``device``
    (e.g. ``"cuda"``) all in torch. Ranks and hits come from the same matrix, so they agree.

    Identical index rows tie exactly (each distinct vector is scored once, see
    :func:`first_copies`): ``copies`` is that function's answer when the caller already has
    it (one index, many query chunks), ``True`` to compute it here, ``None``/``False`` to
    skip the check.
    """
    import torch

    n_idx = len(index)
    if k:
        q, x = _check(queries, index, min(k, n_idx) if n_idx else k)
        k = min(k, n_idx)
    else:
        q = np.ascontiguousarray(queries, dtype=np.float32)
        x = np.ascontiguousarray(index, dtype=np.float32)
    t = np.full(len(q), -1, np.int64) if targets is None else np.asarray(targets, np.int64)
    if len(t) != len(q):
        raise ValueError(f"{len(t)} targets for {len(q)} queries")
    if (t >= n_idx).any():
        raise ValueError(f"a target row is out of range for an index of {n_idx} rows")
    if block is None:
        block = max(1, min(max(1, len(q)), _MAX_BLOCK_BYTES // (4 * max(1, n_idx))))
    out = {"ranks": np.empty(len(q), np.int64), "own": np.empty(len(q), np.float32),
           "scores": np.empty((len(q), k), np.float32), "ids": np.empty((len(q), k), np.int64)}
    gpu = device is not None and torch.device(device).type != "cpu"
    if copies is True:
        copies = first_copies(x)
    expand = None  # column j of the full matrix = column expand[j] of the distinct one
    if copies is not None and copies is not False:
        distinct = np.unique(copies)
        expand = np.searchsorted(distinct, copies)
        x = x[distinct]
    if gpu:
        xt = torch.from_numpy(x).to(device)
        cols = torch.arange(n_idx, device=device)[None, :]
        expand_t = None if expand is None else torch.from_numpy(expand).to(device)
    for a in range(0, len(q), block):
        b = min(len(q), a + block)
        if not gpu:
            sims = q[a:b] @ x.T
            if expand is not None:
                sims = sims[:, expand]
            out["ranks"][a:b], out["own"][a:b] = _ranks_of(sims, t[a:b])
            if k:
                out["scores"][a:b], out["ids"][a:b] = _topk_torch(torch.from_numpy(sims), k)
            continue
        sims_t = torch.from_numpy(q[a:b]).to(device) @ xt.T
        if expand_t is not None:
            sims_t = sims_t[:, expand_t]
        tt = torch.from_numpy(t[a:b]).to(device)
        has = tt >= 0
        tc = torch.where(has, tt, torch.zeros_like(tt))
        own = sims_t.gather(1, tc[:, None])
        r = 1 + (sims_t > own).sum(1) + ((sims_t == own) & (cols < tc[:, None])).sum(1)
        out["ranks"][a:b] = torch.where(has, r, torch.full_like(r, -1)).cpu().numpy()
        out["own"][a:b] = np.where(t[a:b] >= 0, own[:, 0].cpu().numpy(), np.nan)
        if k:
            out["scores"][a:b], out["ids"][a:b] = _topk_torch(sims_t, k)
    return out
