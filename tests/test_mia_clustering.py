"""anatomy.mia.clustering: k-means, greedy de-duplication and the OLMoMIA splits (olmomia.md
section 5) on synthetic clustered data: gaussian blobs on the unit sphere, 4 per class."""

from __future__ import annotations

import itertools
import random

import numpy as np
import pytest

from anatomy.io import InputError
from anatomy.mia.clustering import (
    SPLITS,
    build_splits,
    greedy_dedup,
    plot_distance_histogram,
    split_records,
)
from anatomy.neighbours import l2_normalize, spherical_kmeans
from tests.ties import assert_ranking_equal_up_to_ties

D = 16
SIZES = (60, 60, 60, 8)  # the last blob is too small to give a valid cluster
M, K, MIN_DIST = 21, 4, 0.2  # 11 members + 10 non-members


def _naive_dedup(x: np.ndarray, min_dist: float) -> np.ndarray:
    # Independent computation: the published double loop, one float64 dot per pair.
    x = x.astype(np.float64)
    keep = np.ones(len(x), dtype=bool)
    for i in range(len(x)):
        if keep[i]:
            for j in range(i + 1, len(x)):
                if keep[j] and 1 - float(np.dot(x[i], x[j])) < min_dist:
                    keep[j] = False
    return keep


@pytest.fixture(scope="module")
def world():
    rng = np.random.default_rng(0)
    cm = l2_normalize(rng.standard_normal((4, D)))
    # Non-member blob 0 sits near member blob 0 (a hard pair); the others are elsewhere.
    cn = l2_normalize(np.concatenate([cm[:1] + 0.3 * rng.standard_normal((1, D)),
                                      rng.standard_normal((3, D))]))

    def blobs(centers):
        return np.concatenate([c + 0.2 * rng.standard_normal((n, D))
                               for c, n in zip(centers, SIZES, strict=True)])

    mem, non = blobs(cm), blobs(cn)
    # Interleave classes in the pool, as a pool need not be sorted by label here.
    vecs = np.concatenate([mem, non]).astype(np.float32) * rng.uniform(0.5, 3, (376, 1))
    labels = np.r_[np.ones(len(mem), int), np.zeros(len(non), int)]
    perm = rng.permutation(len(vecs))
    return vecs[perm], labels[perm]


@pytest.fixture(scope="module")
def splits(world):
    return build_splits(*world, M, num_cluster=K, min_inter_dist=MIN_DIST, niter=20)


def test_l2_normalize():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(l2_normalize(x), [[0.6, 0.8], [0.0, 0.0]])
    assert l2_normalize(x).dtype == np.float32


def test_greedy_dedup_equals_naive_loop():
    rng = np.random.default_rng(1)
    for n, d, t in ((1, 4, 0.5), (50, 3, 0.3), (300, 8, 0.6), (257, 5, 0.1)):
        x = l2_normalize(rng.standard_normal((n, d))).astype(np.float64)
        keep = greedy_dedup(x, t, block=64)  # small blocks: exercise the blocking
        np.testing.assert_array_equal(keep, _naive_dedup(x, t))
        k = x[keep]
        dist = 1 - k @ k.T
        assert (dist[np.triu_indices(len(k), 1)] >= t).all()
        assert keep[0]


def test_spherical_kmeans_deterministic(world):
    vecs, labels = world
    x = l2_normalize(vecs[labels == 1])
    c1, a1 = spherical_kmeans(x, K, niter=20)
    c2, a2 = spherical_kmeans(x, K, niter=20)
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(c1, c2)
    assert c1.shape == (K, D) and a1.dtype == np.int64
    # Independent check: assignment is the argmax of inner products with the centroids (in
    # float64 here; faiss assigned in float32, so up to near-ties, tests/ties.py).
    sims = x.astype(np.float64) @ c1.astype(np.float64).T
    assert_ranking_equal_up_to_ties(a1, sims.argmax(1), sims)
    with pytest.raises(InputError, match="cannot make 500 clusters"):
        spherical_kmeans(x, 500)


def test_split_sizes_labels_and_order(world, splits):
    vecs, labels = world
    assert tuple(splits) == SPLITS
    recs = [{"input": f"t{i}", "label": int(lab)} for i, lab in enumerate(labels)]
    for name, s in splits.items():
        assert len(s.members) == 11 and len(s.nonmembers) == 10, name
        assert (labels[s.members] == 1).all() and (labels[s.nonmembers] == 0).all(), name
        assert len(set(s.rows.tolist())) == M, name
        out = list(split_records(recs, s))
        assert [r["label"] for r in out] == [1] * 11 + [0] * 10  # members first
        assert out[0] == {**recs[s.members[0]], "pool_row": int(s.members[0])}


def test_difficulty_ordering(splits):
    e, m, h = splits["easy"], splits["medium"], splits["hard"]
    assert e.cross_dist > h.cross_dist
    assert e.info["pair_cross_dist"] >= m.info["pair_cross_dist"] >= h.info["pair_cross_dist"]
    # Hard is the planted close pair (member blob 0, non-member blob 0): its points are close.
    assert h.cross_dist < 0.6 < e.cross_dist
    for s in (e, m, h):  # cluster splits draw from de-duplicated survivors
        assert s.within_member_dist >= MIN_DIST and s.within_nonmember_dist >= MIN_DIST


def _independent_survivors(x, rows):
    _, a = spherical_kmeans(x[rows], K, niter=20)
    return [rows[a == c][_naive_dedup(x[rows[a == c]], MIN_DIST)] for c in range(K)]


def test_pairs_and_picks_match_independent_computation(world, splits):
    vecs, labels = world
    x = l2_normalize(vecs).astype(np.float64)
    sm = _independent_survivors(x, np.flatnonzero(labels == 1))
    sn = _independent_survivors(x, np.flatnonzero(labels == 0))
    valid_m = [c for c in range(K) if len(sm[c]) >= 11]
    valid_n = [c for c in range(K) if len(sn[c]) >= 10]
    # The 8-point member blob cannot be valid (k-means need not recover every blob exactly).
    assert len(valid_m) <= 3 and len(valid_m) * len(valid_n) >= 4
    assert splits["easy"].info["valid_member_clusters"] == len(valid_m)
    assert splits["easy"].info["valid_nonmember_clusters"] == len(valid_n)
    # Mean cross distance of every pair as an explicit mean of the distance matrix.
    pairs = sorted(((float(np.mean(1 - x[sm[i]] @ x[sn[j]].T)), i, j)
                    for i, j in itertools.product(valid_m, valid_n)))
    picks = {"easy": pairs[-1], "medium": pairs[len(pairs) // 2], "hard": pairs[0]}
    for name, (_, i, j) in picks.items():
        s = splits[name]
        assert (s.member_cluster, s.nonmember_cluster) == (i, j), name
    # Easy: farthest members first; Hard: closest first.
    for name, sign in (("easy", -1), ("hard", 1)):
        s = splits[name]
        i, j = s.member_cluster, s.nonmember_cluster
        d = 1 - x[sm[i]] @ x[sn[j]].T
        np.testing.assert_array_equal(s.members, sm[i][np.argsort(sign * d.mean(1))[:11]])
        np.testing.assert_array_equal(s.nonmembers, sn[j][np.argsort(sign * d.mean(0))[:10]])
    # Medium: the published global-random calls random.seed(43/44); random.sample(...).
    s = splits["medium"]
    state = random.getstate()
    try:
        random.seed(43)
        want_m = random.sample(sm[s.member_cluster].tolist(), 11)
        random.seed(44)
        want_n = random.sample(sn[s.nonmember_cluster].tolist(), 10)
    finally:
        random.setstate(state)
    assert s.members.tolist() == want_m and s.nonmembers.tolist() == want_n


def test_random_and_mix(world, splits):
    vecs, labels = world
    r, h = splits["random"], splits["hard"]
    assert r.members.tolist() == random.Random(0).sample(np.flatnonzero(labels == 1).tolist(), 11)
    assert r.nonmembers.tolist() == random.Random(1).sample(
        np.flatnonzero(labels == 0).tolist(), 10)
    np.testing.assert_array_equal(splits["mix1"].members, r.members)
    np.testing.assert_array_equal(splits["mix1"].nonmembers, h.nonmembers)
    np.testing.assert_array_equal(splits["mix2"].members, h.members)
    np.testing.assert_array_equal(splits["mix2"].nonmembers, r.nonmembers)


def test_deterministic_rerun(world, splits):
    again = build_splits(*world, M, num_cluster=K, min_inter_dist=MIN_DIST, niter=20)
    for name in SPLITS:
        np.testing.assert_array_equal(again[name].rows, splits[name].rows)
        assert again[name].stats() == splits[name].stats()


def test_min_cross_dist_moves_hard(world, splits):
    cut = splits["hard"].info["pair_cross_dist"] + 1e-6
    s = build_splits(*world, M, num_cluster=K, min_inter_dist=MIN_DIST, niter=20,
                     min_cross_dist=cut)
    assert s["hard"].info["h"] == 1 and s["hard"].info["pair_cross_dist"] >= cut
    assert s["easy"].member_cluster == splits["easy"].member_cluster
    with pytest.raises(InputError, match="no valid cluster pair has mean cross distance"):
        build_splits(*world, M, num_cluster=K, min_inter_dist=MIN_DIST, niter=20,
                     min_cross_dist=2.5)


def test_no_valid_pair_message(world):
    with pytest.raises(InputError) as e:
        build_splits(*world, 120, num_cluster=K, min_inter_dist=MIN_DIST, niter=20)
    msg = str(e.value)
    assert "0 of 4 member clusters keep >= 60" in msg and "non-member clusters keep >= 60" in msg
    assert "smaller num_sample" in msg and "smaller min_inter_dist" in msg


def test_bad_labels(world):
    vecs, labels = world
    with pytest.raises(InputError, match="labels must be 1"):
        build_splits(vecs, labels * 2, M)


def test_histogram_png(tmp_path, world):
    vecs, labels = world
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    plot_distance_histogram(vecs, labels, a, max_points=100)
    plot_distance_histogram(vecs, labels, b, max_points=100)
    data = a.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    assert data == b.read_bytes()  # byte-identical reruns
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]  # no temp files


def test_medium_draws_with_the_published_seeds(world, monkeypatch):
    """Medium's draw follows --seed as published (em-mia olmomia/clustering.py:141-142,
    transcribed here: random.seed(seed + 1); random.sample(range(len(cluster)), m), then
    seed + 2 for the non-members), not fixed seeds 43/44: at seed 7 the draws differ from
    43/44's."""
    from anatomy.mia import clustering

    rm, rn = np.arange(100, 160), np.arange(300, 345)
    state = random.getstate()
    try:
        random.seed(7 + 1)
        want_m = rm[np.array(random.sample(range(len(rm)), 11))].tolist()
        random.seed(7 + 2)
        want_n = rn[np.array(random.sample(range(len(rn)), 10))].tolist()
    finally:
        random.setstate(state)
    assert clustering.medium_draw(rm, rn, 11, 10, 7) == (want_m, want_n)
    assert clustering.medium_draw(rm, rn, 11, 10, 42) != (want_m, want_n)
    seen = []
    real = clustering.medium_draw
    monkeypatch.setattr(clustering, "medium_draw",
                        lambda *a: seen.append(a[-1]) or real(*a))
    build_splits(*world, M, num_cluster=K, min_inter_dist=MIN_DIST, niter=20, seed=7)
    assert seen == [7]
