"""SemDeDup: semantic deduplication by embedding clusters (DsDm's ``semdedup`` baseline).

Abbas, Tirumala, Simig, Ganguli, Morcos 2023, "SemDeDup: Data-efficient learning at web-scale
through semantic deduplication", as its code (facebookresearch/SemDeDup, one commit) does it:

1. embed every candidate with a pretrained model and L2-normalise (the similarities below
   are raw dot products; :func:`semdedup_embeddings`);
2. spherical k-means (faiss, ``niter`` 100, seed 1234 in the configs; here the shared
   :func:`anatomy.neighbours.spherical_kmeans`);
3. sort each cluster by cosine similarity to its centroid: ``keep_hard`` (the default) puts
   the farthest first, i.e. ascending similarity; ``easy`` reverses it; ``random`` shuffles
   (seeded here). Ties go by row index;
4. within a cluster, ``S = E E^T`` and for each item j ``M_j = max_{i<j} S_ij`` (the
   published upper-triangle max), and j is removed iff ``M_j > 1 - eps``.

Step 4 is sequential and non-transitive (issue #8): j is removed when it matches *any*
earlier item, even one that was itself removed, which differs from the paper's "group the
duplicates, keep one". So the survivor of a group of mutual near-duplicates is its first item,
under ``keep_hard`` the one least similar to the centroid (issue #4). :func:`semdedup_scores`
returns ``score_j = 1 - M_j`` (2.0 for an item with no earlier item: a cluster's first item,
and singletons, which the NeMo-Curator port once dropped by mistake, PR #130): "keep iff
``score_j >= eps``", so an ``eps`` that keeps ``n`` is ``top_n(scores, n)``
(:func:`epsilon_for`, :func:`kept_fraction` for a sweep like the published ``constants.py``).
The published code zeroes the lower triangle, so its ``M_j`` is ``max(0, ...)``; the two agree
for every ``eps`` in ``[0, 1]``.

``mode="components"`` (:func:`semdedup_keep`) is the paper's reading: connected components
of the graph ``S_ij > 1 - eps`` inside each cluster, one survivor each (the first in the
cluster order: under ``keep_hard`` the one least similar to its centroid).

DsDm (Engstrom et al. 2024) used a ~20 %-kept SemDeDup subset and sampled uniformly inside it
(:func:`dsdm_style_select`); its embedding model and ``eps`` are undocumented.

Memory: clusters are processed one at a time, one similarity matrix each, and a cluster whose
matrix would exceed 256 MiB is done in column blocks (a warning says so; more clusters would
be faster). k-means itself holds the embeddings.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import execution, io
from anatomy.io import InputError, PathLike
from anatomy.neighbours import l2_normalize, spherical_kmeans
from anatomy.selection.indices import check_n, top_n, uniform
from anatomy.selection.pool import TextSource

log = logging.getLogger("anatomy")

NO_EARLIER = 2.0  # the score of an item with no earlier item in its cluster: never removed
ORDERS = ("hard", "easy", "random")
MODES = ("chain", "components")
_MAX_BLOCK_BYTES = 256 << 20  # one cluster's similarity block: at most this many bytes
UNIT_BATCHES = 16  # batches per unit of the embedding step

# eps -> kept fraction, for a sweep (the published constants.py tabulates its own dataset's)
DEFAULT_EPS = (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.26, 0.3, 0.4, 0.5)


# ---------------------------------------------------------------------------------------
# embeddings: a model pass as a step of fixed units


def _source_identity(pool: TextSource) -> Any:
    """What identifies the pool in a fingerprint: its own ``identity()`` (a
    :class:`~anatomy.selection.pool.CandidatePool`), else a digest of its texts."""
    ident = getattr(pool, "identity", None)
    if callable(ident):
        return ident()
    h = hashlib.sha256()
    n = len(pool)
    for a in range(0, n, 8192):
        for t in pool.texts(a, min(n, a + 8192)):
            b = t.encode("utf-8", "surrogatepass")
            h.update(len(b).to_bytes(8, "little") + b)
    return {"rows": n, "texts_sha256": h.hexdigest()}


def _causal_embed(model: Any, tokenizer: Any, texts: Sequence[str], batch_size: int,
                  max_length: int, lock: threading.Lock) -> np.ndarray:
    """Mean over the attention mask of a causal LM's last hidden state, fp32 ``[n, d]``.

    The decoder alone (``model.base_model``) is run: its ``last_hidden_state`` is the full
    model's ``hidden_states[-1]`` (after the final norm) without the vocabulary-sized
    logits. Right padding, so the real tokens never attend to a pad.
    """
    import torch

    from anatomy.lm import length_batches, mean_pool

    base = getattr(model, "base_model", None)
    dev = next(model.parameters()).device
    out: np.ndarray | None = None
    for idx in length_batches([len(t) for t in texts], batch_size):
        with lock:  # fast tokenizers refuse concurrent callers
            enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
        enc = {k: enc[k].to(dev) for k in ("input_ids", "attention_mask")}
        with torch.inference_mode():
            if base is not None and base is not model:
                hidden = base(**enc).last_hidden_state
            else:
                hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
        v = mean_pool(hidden, enc["attention_mask"]).cpu().numpy()
        if out is None:
            out = np.zeros((len(texts), v.shape[1]), np.float32)
        out[idx] = v
    assert out is not None
    return out


class _EmbedStep:
    """Pool embeddings as units: unit u = rows ``[u R, (u + 1) R)`` (R = ``unit_rows``),
    embedded in length-sorted batches inside the unit, so the bytes depend only on the rows
    and the flags, never on the number of ranks."""

    name = "semdedup_embeddings"

    def __init__(self, pool: TextSource, out: Path | None, fp: execution.Fingerprint, *,
                 kind: str, batch_size: int, max_length: int, unit_rows: int):
        self.pool, self.kind = pool, kind
        self.batch_size, self.max_length, self.unit_rows = batch_size, max_length, unit_rows
        self.n = len(pool)
        self.n_units = math.ceil(self.n / unit_rows)
        self.output = execution.Output.file(out) if out is not None else None
        self.fingerprint = fp
        self.on_cpu = False
        self.model: Any = None  # an Embedder, or (causal LM, tokenizer): set by prepare
        self.lock = threading.Lock()
        self.result: np.ndarray | None = None  # the in-memory merge

    def compute_unit(self, u: int) -> dict[str, Any]:
        from anatomy.lm import embed_texts

        a = u * self.unit_rows
        b = min(self.n, a + self.unit_rows)
        with self.lock:  # a pool may decode with a (non-reentrant) fast tokenizer
            texts = list(self.pool.texts(a, b))
        if len(texts) != b - a:
            raise InputError(None, f"the pool returned {len(texts)} texts for rows [{a}, {b})")
        if self.kind == "encoder":
            vecs = embed_texts(self.model, texts, batch_size=self.batch_size,
                               max_length=self.max_length, progress=False)
        else:
            lm_model, tok = self.model
            vecs = _causal_embed(lm_model, tok, texts, self.batch_size, self.max_length,
                                 self.lock)
        return {"vecs": l2_normalize(vecs)}

    def merge(self, load: Callable[[int], Any]) -> dict[str, Any]:
        first = load(0)
        shape = (self.n, int(first["vecs"].shape[1]))

        def fill(arr: np.ndarray) -> None:
            for u in range(self.n_units):
                part = first if u == 0 else load(u)
                a = u * self.unit_rows
                arr[a:a + len(part["vecs"])] = part["vecs"]

        if self.output is None:
            self.result = np.empty(shape, np.float32)
            fill(self.result)
        else:
            with io.atomic_npy(self.output.files[0], shape, np.float32) as arr:
                fill(arr)
        return {"shape": list(shape), "kind": self.kind}


def semdedup_embeddings(pool: TextSource, model: str | PathLike | None = None,
                        kind: str = "encoder", batch_size: int = 64, max_length: int = 256,
                        out: PathLike | None = None, ranks: execution.Ranks | None = None, *,
                        unit_rows: int | None = None, device: str | None = None,
                        precision: str = "auto", dtype: str = "float32",
                        identity: Any = None, overwrite: bool = False, merge: bool = False,
                        progress: bool = True) -> np.ndarray | None:
    """L2-normalised float32 ``(len(pool), d)`` embeddings of the pool's texts.

    Args:
        model: an encoder (default the offline all-MiniLM-L6-v2) or, with
            ``kind="causal_lm"``, a causal LM folder or hub name.
        kind: ``"encoder"``: mean pooling of the last hidden state
            (:func:`anatomy.lm.embed_texts`, sentence-transformers' pooling);
            ``"causal_lm"``: the mean of the LM's last hidden state over the attention mask
            (:func:`anatomy.lm.load_causal_lm`, weights in ``dtype``).
        out: an ``.npy`` path: the pass runs as a step of the execution layer (units of
            ``unit_rows`` rows, default 16 batches; rank r of W computes units r, r + W,
            ...; W ranks write the bytes of one; resumable; the last rank merges). Without
            ``out`` everything is computed here, in memory.
        identity: what identifies the pool in the fingerprint (default: ``pool.identity()``
            where it has one, else a sha256 of its texts).

    Returns the embeddings (a memory map of ``out``), or None on a rank whose part is done
    while other ranks' parts are missing.
    """
    from anatomy import lm

    if kind not in ("encoder", "causal_lm"):
        raise InputError(None, f"unknown embedding kind {kind!r} (encoder, causal_lm)")
    n = len(pool)
    if n == 0:
        raise InputError(None, "the pool is empty: nothing to embed")
    if batch_size < 1 or max_length < 1:
        raise InputError(None, f"batch_size and max_length must be >= 1, got {batch_size}, "
                               f"{max_length}")
    unit_rows = unit_rows or UNIT_BATCHES * batch_size
    if unit_rows < 1:
        raise InputError(None, f"unit_rows must be >= 1, got {unit_rows}")
    ranks = ranks or execution.Ranks()
    dev = lm.resolve_device(device, ranks.local_rank)
    if kind == "encoder":
        src = str(lm.default_embedder_path() if model is None else model)
        numerics: dict[str, Any] = {"precision": lm.resolve_precision(dev, precision)}
    else:
        if model is None:
            raise InputError(None, "kind causal_lm needs a model (a causal LM folder or name)")
        src = str(model)
        numerics = {"dtype": dtype}
    params = {"kind": kind, "batch_size": batch_size, "max_length": max_length,
              "unit_rows": unit_rows, "device": dev.type, **numerics}
    fp = execution.fingerprint(
        "semdedup_embeddings", {"model": src},
        {**params, "pool": _source_identity(pool) if identity is None else identity})
    step = _EmbedStep(pool, None if out is None else Path(out), fp, kind=kind,
                      batch_size=batch_size, max_length=max_length, unit_rows=unit_rows)
    step.on_cpu = dev.type == "cpu"

    def prepare() -> None:
        if kind == "encoder":
            step.model = lm.load_embedder(src, device=str(dev), precision=precision)
            return
        m = lm.load_causal_lm(src, dtype=dtype, device=str(dev))
        tok = lm.load_tokenizer(src)
        tok.padding_side = "right"
        if tok.pad_token_id is None:
            if tok.eos_token is None:
                raise InputError(src, "the tokenizer has neither a pad nor an eos token")
            tok.pad_token = tok.eos_token  # masked out of the mean: any id will do
        step.model = (m, tok)

    if out is None:
        execution.run_units(step, prepare=prepare)
        assert step.result is not None
        return step.result
    res = execution.run_step(step, ranks, overwrite=overwrite, merge_only=merge,
                             prepare=prepare, show_progress=progress)
    return io.load_npy(out, mmap=True) if res.final else None


# ---------------------------------------------------------------------------------------
# clusters and the per-cluster triangle max


def _check_embeddings(embeddings: np.ndarray, n_clusters: int) -> np.ndarray:
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise InputError(None, f"embeddings must be a non-empty (N, d) array, got shape "
                               f"{x.shape}")
    if not np.isfinite(x).all():
        bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
        raise InputError(None, f"embedding row {bad[0]} holds NaN or inf ({bad.size} rows)")
    if isinstance(n_clusters, bool) or int(n_clusters) != n_clusters \
            or not 1 <= n_clusters <= len(x):
        raise InputError(None, f"n_clusters must be a whole number in [1, {len(x)}] (the "
                               f"number of embeddings), got {n_clusters!r}")
    # the similarities are dot products: unit rows make them cosines (a no-op if they are)
    return l2_normalize(x)


def _block_width(m: int, max_bytes: int) -> int:
    return max(1, min(m, max_bytes // (4 * max(1, m))))


def earlier_max(e: np.ndarray, max_bytes: int = _MAX_BLOCK_BYTES) -> np.ndarray:
    """``M_j = max_{i<j} e_i . e_j`` for rows ``e`` in cluster order (``-inf`` for j = 0):
    the column max of SemDeDup's upper triangle of ``E E^T``, float32.

    Computed in column blocks ``E[:b] @ E[a:b]^T`` of at most ``max_bytes`` (a cluster of
    100k rows never needs a 40 GB matrix).
    """
    e = np.ascontiguousarray(e, dtype=np.float32)
    m = len(e)
    out = np.full(m, -np.inf, dtype=np.float32)
    w = _block_width(m, max_bytes)
    for a in range(0, m, w):
        b = min(m, a + w)
        if b <= 1:
            continue
        s = e[:b] @ e[a:b].T  # s[i, j - a] = e_i . e_j
        s[np.arange(b)[:, None] >= np.arange(a, b)[None, :]] = -np.inf  # keep i < j only
        out[a:b] = s.max(axis=0)
    return out


def _components(e: np.ndarray, threshold: float, max_bytes: int = _MAX_BLOCK_BYTES
                ) -> np.ndarray:
    """Connected-component labels of the graph ``e_i . e_j > threshold`` (i != j), built
    column block by column block: each block's edges plus a star joining every item to its
    current component's first item, so the edges never need to be held all at once."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    m = len(e)
    labels = np.arange(m)
    w = _block_width(m, max_bytes)
    for a in range(0, m, w):
        b = min(m, a + w)
        if b <= 1:
            continue
        s = e[:b] @ e[a:b].T
        s[np.arange(b)[:, None] >= np.arange(a, b)[None, :]] = -np.inf
        ii, jj = np.nonzero(s > threshold)
        if not len(ii):
            continue
        _, first = np.unique(labels, return_index=True)
        rep = first[labels]  # an item's component, named by a member of it
        rows = np.concatenate([ii, np.arange(m)])
        cols = np.concatenate([jj + a, rep])
        g = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(m, m))
        _, labels = connected_components(g, directed=False)
    return labels


def _cluster(x: np.ndarray, n_clusters: int, seed: int, niter: int
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(centroids, assignment, similarity to the own centroid)``."""
    centroids, assign = spherical_kmeans(x, int(n_clusters), niter=niter, seed=seed)
    sim = np.einsum("ij,ij->i", x, centroids[assign]).astype(np.float32)
    return centroids, assign, sim


def _ordered_clusters(assign: np.ndarray, sim: np.ndarray, k: int, order: str, seed: int
                      ) -> Iterator[tuple[int, np.ndarray]]:
    """``(cluster, its rows in SemDeDup's order)`` for every non-empty cluster."""
    by_cluster = np.argsort(assign, kind="stable")  # rows ascending inside each cluster
    bounds = np.searchsorted(assign[by_cluster], np.arange(k + 1))
    for c in range(k):
        rows = by_cluster[bounds[c]:bounds[c + 1]]
        if not len(rows):
            continue
        if order == "hard":  # keep_hard: farthest from the centroid first
            rows = rows[np.lexsort((rows, sim[rows]))]
        elif order == "easy":
            rows = rows[np.lexsort((rows, -sim[rows]))]
        else:
            rng = np.random.default_rng(np.random.SeedSequence([int(seed), c, 0x5DD]))
            rows = rows[rng.permutation(len(rows))]
        yield c, rows


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise InputError(None, f"unknown order {order!r} ({', '.join(ORDERS)})")


def _warn_big(sizes: np.ndarray, max_bytes: int) -> int:
    big = int(np.sum(4 * sizes.astype(np.int64) ** 2 > max_bytes))
    if big:
        log.warning("semdedup: %d clusters (largest %d rows) exceed a %d MiB similarity "
                    "matrix and are computed in column blocks; more clusters would be faster",
                    big, int(sizes.max()), max_bytes >> 20)
    return big


def semdedup_scores(embeddings: np.ndarray, n_clusters: int, seed: int = 1234,
                    niter: int = 100, order: str = "hard", *,
                    max_block_bytes: int = _MAX_BLOCK_BYTES
                    ) -> tuple[np.ndarray, dict[str, Any]]:
    """SemDeDup scores: ``score_j = 1 - max_{i before j in j's cluster} cos(e_i, e_j)``.

    ``2.0`` when j is first in its cluster (never removed). Keep iff ``score >= eps`` is the
    published "remove iff ``M > 1 - eps``", so ``top_n(scores, n)`` is the eps that keeps n.

    ``info``: ``assignment`` (N,) int64, ``centroids`` (k, d), ``centroid_similarity`` (N,)
    (cosine to the own centroid), ``position`` (N,) (the place in the cluster order),
    ``cluster_sizes`` (k,), ``chunked_clusters`` (how many needed column blocks), and the
    parameters.
    """
    _check_order(order)
    x = _check_embeddings(embeddings, n_clusters)
    k = int(n_clusters)
    centroids, assign, sim = _cluster(x, k, seed, niter)
    sizes = np.bincount(assign, minlength=k)
    scores = np.full(len(x), NO_EARLIER, dtype=np.float32)
    position = np.zeros(len(x), dtype=np.int64)
    for _, rows in _ordered_clusters(assign, sim, k, order, seed):
        position[rows] = np.arange(len(rows))
        if len(rows) > 1:
            m = earlier_max(x[rows], max_block_bytes)
            scores[rows[1:]] = (np.float32(1.0) - m[1:]).astype(np.float32)
    info = {"assignment": assign, "centroids": centroids, "centroid_similarity": sim,
            "position": position, "cluster_sizes": sizes,
            "chunked_clusters": _warn_big(sizes, max_block_bytes), "n_clusters": k,
            "empty_clusters": int(np.sum(sizes == 0)), "order": order, "seed": seed,
            "niter": niter}
    return scores, info


def semdedup_keep(embeddings: np.ndarray, n_clusters: int, eps: float,
                  mode: str = "chain", seed: int = 1234, niter: int = 100,
                  order: str = "hard", *, max_block_bytes: int = _MAX_BLOCK_BYTES
                  ) -> tuple[np.ndarray, dict[str, Any]]:
    """A keep mask (N,) bool for one ``eps``.

    ``mode="chain"``: the published rule, remove j iff ``M_j > 1 - eps``
    (``semdedup_scores(...) >= eps``). ``mode="components"``: connected components of
    ``cos > 1 - eps`` inside each cluster, keeping each component's first item in the
    cluster order (under ``order="hard"`` the one least similar to its centroid, ties by
    index). The components rule keeps exactly one of every group, whatever the order; the
    chain rule can keep two ends of a chain whose middle comes last.
    """
    if mode not in MODES:
        raise InputError(None, f"unknown mode {mode!r} ({', '.join(MODES)})")
    if not np.isfinite(eps):
        raise InputError(None, f"eps must be a number, got {eps!r}")
    if mode == "chain":
        scores, info = semdedup_scores(embeddings, n_clusters, seed, niter, order,
                                       max_block_bytes=max_block_bytes)
        info["eps"] = float(eps)
        return scores >= eps, info
    _check_order(order)
    x = _check_embeddings(embeddings, n_clusters)
    k = int(n_clusters)
    centroids, assign, sim = _cluster(x, k, seed, niter)
    sizes = np.bincount(assign, minlength=k)
    keep = np.zeros(len(x), dtype=bool)
    n_groups = 0
    for _, rows in _ordered_clusters(assign, sim, k, order, seed):
        labels = _components(x[rows], 1.0 - float(eps), max_block_bytes)
        _, first = np.unique(labels, return_index=True)  # first position of each component
        keep[rows[first]] = True
        n_groups += int(np.sum(np.bincount(labels) > 1))
    info = {"assignment": assign, "centroids": centroids, "centroid_similarity": sim,
            "cluster_sizes": sizes, "chunked_clusters": _warn_big(sizes, max_block_bytes),
            "n_clusters": k, "duplicate_groups": n_groups, "order": order, "seed": seed,
            "niter": niter, "eps": float(eps)}
    return keep, info


# ---------------------------------------------------------------------------------------
# eps and selections


def epsilon_for(scores: np.ndarray, n: int) -> float:
    """The ``eps`` that keeps ``n`` rows (``scores >= eps``): the n-th largest score.

    Exactly ``n`` unless scores tie at the boundary (exact duplicates); ``top_n(scores, n)``
    is always exactly n, ties broken by index. An ``eps`` above 1 means no ``eps`` in the
    paper's range keeps so few.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise InputError(None, f"scores must be 1-D, got shape {s.shape}")
    n = check_n(n, int(np.sum(~np.isnan(s))), "scored rows")
    return float(s[top_n(s, n)[-1]])


def kept_fraction(scores: np.ndarray, eps_list: Sequence[float] = DEFAULT_EPS
                  ) -> dict[float, float]:
    """``{eps: fraction of rows kept}`` (``scores >= eps``): the published ``constants.py``
    sweep, for this pool."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise InputError(None, f"scores must be a non-empty 1-D array, got shape {s.shape}")
    return {float(e): float(np.mean(s >= e)) for e in eps_list}


def dsdm_style_select(scores: np.ndarray, keep_fraction: float, n: int, seed: int
                      ) -> np.ndarray:
    """DsDm's SemDeDup selection: the eps that keeps ``keep_fraction`` of the rows (~0.20
    in DsDm's ``sdd.pt``), then ``n`` drawn uniformly, seeded, inside the kept set (the
    published ``get_indices`` draws unseeded, and fails for n above the kept count).
    The kept set is ``top_n(scores, round(keep_fraction * N))``, so ties never make it
    larger."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or s.size == 0:
        raise InputError(None, f"scores must be a non-empty 1-D array, got shape {s.shape}")
    if not 0 < keep_fraction <= 1:
        raise InputError(None, f"keep_fraction must be in (0, 1], got {keep_fraction}")
    k = max(1, round(keep_fraction * len(s)))
    kept = np.sort(top_n(s, k))
    return uniform(len(s), n, seed, among=kept)
