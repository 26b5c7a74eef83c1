"""Easy / Medium / Hard / Random / Mix splits of a member / non-member pool by embedding clusters.

Source: Kim et al. (arXiv 2410.07582), ``olmomia/clustering.py`` of ``gyuwankim/em-mia``; see
``shared/reference/olmomia.md`` section 5. Per class: faiss spherical k-means
(:func:`anatomy.neighbours.spherical_kmeans`; K=50, 50
iterations, seed 42) on L2-normalised embeddings, then a greedy de-duplication inside each
cluster (kept points are pairwise at cosine distance >= ``min_inter_dist``). A cluster is
valid when enough points survive (ceil(M/2) members, floor(M/2) non-members). Valid
(member, non-member) cluster pairs are sorted by mean cross distance: Easy takes the farthest
pair, Hard the closest (at or above ``min_cross_dist``), Medium the middle one. Inside the
pair Easy keeps the points farthest from the other cluster, Hard the closest, Medium a
random draw (seeds 43 / 44). Random and Mix-1/Mix-2 (random draws from the whole pool, mixed
with Hard; section 5 "Random and Mix") have no published script; they are defined here.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from anatomy.io import InputError, PathLike, atomic_write
from anatomy.neighbours import l2_normalize, spherical_kmeans

SPLITS = ("easy", "medium", "hard", "random", "mix1", "mix2")


@dataclass
class SplitResult:
    """One benchmark split: pool row indices, members first, plus its distance statistics."""

    name: str
    members: np.ndarray  # pool row indices (label 1), in output order
    nonmembers: np.ndarray  # pool row indices (label 0), in output order
    cross_dist: float  # mean cosine distance over all (member, non-member) pairs
    within_member_dist: float  # mean over distinct member pairs
    within_nonmember_dist: float
    member_cluster: int | None = None  # k-means cluster the members came from, if one
    nonmember_cluster: int | None = None
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def rows(self) -> np.ndarray:
        return np.concatenate([self.members, self.nonmembers])

    def stats(self) -> dict[str, Any]:
        return {"split": self.name, "members": len(self.members),
                "nonmembers": len(self.nonmembers), "cross_dist": self.cross_dist,
                "within_member_dist": self.within_member_dist,
                "within_nonmember_dist": self.within_nonmember_dist,
                "member_cluster": self.member_cluster,
                "nonmember_cluster": self.nonmember_cluster}


def greedy_dedup(x: np.ndarray, min_dist: float, block: int = 1024) -> np.ndarray:
    """Keep mask of the greedy scan: each kept point removes every later point closer than
    ``min_dist`` in cosine distance ``1 - dot``; removed points remove nothing.

    ``x`` must be L2-normalised. Kept points are pairwise >= ``min_dist`` apart. The
    similarity matrix is built ``block`` rows at a time (block x n floats), and the scan
    does one vectorised mask update per kept point.
    """
    x = np.asarray(x)
    n = len(x)
    alive = np.ones(n, dtype=bool)
    for b0 in range(0, n, block):
        b1 = min(b0 + block, n)
        if not alive[b0:b1].any():
            continue
        close = (1 - x[b0:b1] @ x[b0:].T) < min_dist  # (b1-b0, n-b0)
        for i in range(b0, b1):
            if alive[i]:
                alive[i + 1:] &= ~close[i - b0, i - b0 + 1:]
    return alive


def _mean_dist(a: np.ndarray, b: np.ndarray) -> float:
    """Mean cosine distance over all pairs of rows of ``a`` and ``b`` (normalised)."""
    if len(a) == 0 or len(b) == 0:
        return float("nan")
    return float(1 - (a.sum(0, dtype=np.float64) @ b.sum(0, dtype=np.float64))
                 / (len(a) * len(b)))


def _mean_within(a: np.ndarray) -> float:
    """Mean cosine distance over distinct pairs (i < j) of rows of ``a``."""
    n = len(a)
    if n < 2:
        return float("nan")
    s = a.sum(0, dtype=np.float64)
    diag = float((a.astype(np.float64) ** 2).sum())
    return float(1 - (s @ s - diag) / (n * (n - 1)))


def _result(name: str, x: np.ndarray, members: np.ndarray, nonmembers: np.ndarray,
            mc: int | None = None, nc: int | None = None) -> SplitResult:
    members = np.asarray(members, dtype=np.int64)
    nonmembers = np.asarray(nonmembers, dtype=np.int64)
    return SplitResult(name, members, nonmembers, _mean_dist(x[members], x[nonmembers]),
                       _mean_within(x[members]), _mean_within(x[nonmembers]), mc, nc)


def _survivors(x: np.ndarray, rows: np.ndarray, k: int, niter: int, seed: int,
               min_dist: float) -> list[np.ndarray]:
    """Per k-means cluster of ``x[rows]``, the pool rows that survive de-duplication."""
    _, assign = spherical_kmeans(x[rows], k, niter=niter, seed=seed)
    out = []
    for c in range(k):
        r = rows[assign == c]  # dataset order: the greedy scan is order-dependent
        out.append(r[greedy_dedup(x[r], min_dist)])
    return out


def medium_draw(members: np.ndarray, nonmembers: np.ndarray, m_mem: int, m_non: int,
                seed: int) -> tuple[list[int], list[int]]:
    """Medium's uniform draw inside its cluster pair, as published (em-mia
    ``olmomia/clustering.py:141-142``: ``random.seed(args.seed + 1)``, ``random.sample`` of
    the member cluster's positions, then ``seed + 2`` for the non-members); ``random.sample``
    picks the same positions from a list as from a range of its length."""
    pm = random.Random(seed + 1).sample(np.asarray(members).tolist(), m_mem)
    pn = random.Random(seed + 2).sample(np.asarray(nonmembers).tolist(), m_non)
    return pm, pn


def build_splits(vecs: np.ndarray, labels: np.ndarray, num_sample: int, num_cluster: int = 50,
                 min_inter_dist: float = 0.6, seed: int = 42,
                 min_cross_dist: float | None = None, niter: int = 50,
                 random_seed: int = 0) -> dict[str, SplitResult]:
    """The six splits of ``num_sample`` M rows each: easy, medium, hard, random, mix1, mix2.

    Args:
        vecs: (N, d) pool embeddings, rows in pool order (normalised here).
        labels: (N,) 1 = member, 0 = non-member. (The published script assumes the first
            N//2 rows are members, which mislabels one row when N is odd; labels avoid it.)
        num_sample: M; every split has ceil(M/2) members then floor(M/2) non-members.
        num_cluster, niter, seed: the k-means of each class (published 50, 50, 42).
        min_inter_dist: de-duplication threshold in cosine distance (README: 0.6).
        min_cross_dist: Hard/Medium only use pairs whose mean cross distance is at least
            this (the sorted pair list is cut at its insertion index h; None means h = 0).
        random_seed: Random split draws members with ``random.Random(random_seed)`` and
            non-members with ``random.Random(random_seed + 1)`` from the whole pool.

    Easy = the last (farthest) pair, Medium = pair ``(h + npairs) // 2``, Hard = pair h.
    Medium draws with :func:`medium_draw` (the published seeds, ``seed + 1`` and
    ``seed + 2``). Mix-1 = Random members + Hard
    non-members; Mix-2 = Hard members + Random non-members.
    """
    x = l2_normalize(vecs)
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise InputError(None, f"{len(labels)} labels for {len(x)} vectors")
    if not np.isin(labels, (0, 1)).all():
        raise InputError(None, "labels must be 1 (member) or 0 (non-member)")
    m_mem, m_non = (num_sample + 1) // 2, num_sample // 2
    if m_non < 1:
        raise InputError(None, f"num_sample must be at least 2, got {num_sample}")
    mem_rows, non_rows = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    if len(mem_rows) < m_mem or len(non_rows) < m_non:
        raise InputError(None, f"the pool has {len(mem_rows)} members and {len(non_rows)} "
                               f"non-members; a split of {num_sample} needs {m_mem} and {m_non}")

    mem_surv = _survivors(x, mem_rows, num_cluster, niter, seed, min_inter_dist)
    non_surv = _survivors(x, non_rows, num_cluster, niter, seed, min_inter_dist)
    valid_m = [c for c, r in enumerate(mem_surv) if len(r) >= m_mem]
    valid_n = [c for c, r in enumerate(non_surv) if len(r) >= m_non]
    if not valid_m or not valid_n:
        best_m = max(len(r) for r in mem_surv)
        best_n = max(len(r) for r in non_surv)
        raise InputError(None, f"no cluster pair can supply {num_sample} rows: {len(valid_m)} of "
                               f"{num_cluster} member clusters keep >= {m_mem} points after "
                               f"de-duplication at min_inter_dist {min_inter_dist} (largest "
                               f"{best_m}), {len(valid_n)} of {num_cluster} non-member clusters "
                               f"keep >= {m_non} (largest {best_n}); use a smaller num_sample, "
                               "a smaller min_inter_dist, fewer clusters or a larger pool")

    # Mean cross distance of every valid pair via cluster sums: mean(a @ b.T) = sa.sb/(na nb).
    sums_m = np.stack([x[mem_surv[c]].sum(0, dtype=np.float64) / len(mem_surv[c])
                       for c in valid_m])
    sums_n = np.stack([x[non_surv[c]].sum(0, dtype=np.float64) / len(non_surv[c])
                       for c in valid_n])
    pair_dist = (1 - sums_m @ sums_n.T).ravel()  # i-major, as a nested loop enumerates
    order = np.argsort(pair_dist, kind="stable")
    sorted_dist = pair_dist[order]
    npairs = len(order)
    h = 0 if min_cross_dist is None else int(np.searchsorted(sorted_dist, min_cross_dist))
    if h >= npairs:
        raise InputError(None, f"no valid cluster pair has mean cross distance >= "
                               f"{min_cross_dist} (largest {sorted_dist[-1]:.4f}); lower "
                               "min_cross_dist")

    def pair(rank: int) -> tuple[int, int]:
        i, j = divmod(int(order[rank]), len(valid_n))
        return valid_m[i], valid_n[j]

    splits: dict[str, SplitResult] = {}
    for name, rank in (("easy", npairs - 1), ("medium", (h + npairs) // 2), ("hard", h)):
        mc, nc = pair(rank)
        rm, rn = mem_surv[mc], non_surv[nc]
        if name == "medium":
            pm, pn = medium_draw(rm, rn, m_mem, m_non, seed)
        else:
            d = 1 - x[rm] @ x[rn].T
            sm, sn = d.mean(1), d.mean(0)
            if name == "easy":  # farthest first
                sm, sn = -sm, -sn
            pm = rm[np.argsort(sm, kind="stable")[:m_mem]]
            pn = rn[np.argsort(sn, kind="stable")[:m_non]]
        splits[name] = _result(name, x, pm, pn, mc, nc)
        splits[name].info = {"pair_rank": rank, "npairs": npairs, "h": h,
                             "pair_cross_dist": float(sorted_dist[rank])}

    rand_m = random.Random(random_seed).sample(mem_rows.tolist(), m_mem)
    rand_n = random.Random(random_seed + 1).sample(non_rows.tolist(), m_non)
    hard = splits["hard"]
    splits["random"] = _result("random", x, rand_m, rand_n)
    splits["mix1"] = _result("mix1", x, rand_m, hard.nonmembers, None, hard.nonmember_cluster)
    splits["mix2"] = _result("mix2", x, hard.members, rand_n, hard.member_cluster, None)
    info = {"valid_member_clusters": len(valid_m), "valid_nonmember_clusters": len(valid_n)}
    for s in splits.values():
        s.info = {**info, **s.info}
    return {name: splits[name] for name in SPLITS}


def split_records(pool_records: list[dict[str, Any]],
                  split: SplitResult) -> Iterator[dict[str, Any]]:
    """The split's pool records, members first, each as stored plus ``"pool_row"``."""
    for r in split.rows.tolist():
        yield {**pool_records[r], "pool_row": r}


def _pair_distances(a: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """Cosine distances of all pairs across ``a`` and ``b``, or of distinct pairs within ``a``."""
    if b is None:
        i, j = np.triu_indices(len(a), k=1)
        return 1 - (a @ a.T)[i, j]
    return (1 - a @ b.T).ravel()


def plot_distance_histogram(vecs: np.ndarray, labels: np.ndarray, path: PathLike,
                            max_points: int = 2000, seed: int = 0, bins: int = 100) -> None:
    """PNG histogram of within-member, within-non-member and cross cosine distances.

    Classes larger than ``max_points`` are subsampled (``np.random.default_rng(seed)``):
    a pool of 50k per class would need 10^9 distances. Every given row counts; the published
    plot filtered on cluster labels ``> 0``, which dropped cluster 0 as well as the removed
    duplicates (olmomia.md section 5). Pass a subset of rows to plot, e.g., one split.
    """
    from matplotlib.figure import Figure  # no pyplot: no global figure state, no GUI backend

    x = l2_normalize(vecs)
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    groups = []
    for lab in (1, 0):
        rows = np.flatnonzero(labels == lab)
        if len(rows) > max_points:
            rows = np.sort(rng.choice(rows, max_points, replace=False))
        groups.append(x[rows])
    mem, non = groups
    series = [("member-member", _pair_distances(mem, None)),
              ("non-member-non-member", _pair_distances(non, None)),
              ("member-non-member", _pair_distances(mem, non))]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    edges = np.linspace(0, 2, bins + 1)
    for name, d in series:
        ax.hist(d, bins=edges, density=True, histtype="step", linewidth=1.5,
                label=f"{name} (mean {d.mean():.3f})" if len(d) else name)
    ax.set_xlabel("cosine distance (1 - cos)")
    ax.set_ylabel("density")
    ax.set_xlim(0, max(1.2, float(max((d.max() for _, d in series if len(d)), default=1.2))))
    ax.legend()
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100, metadata={"Software": None})
