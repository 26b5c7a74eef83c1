"""anatomy.neighbours: exact top-k against a brute-force sort, both backends, ties by index;
IVF recall against exact search; k-means assignment against an explicit argmax. Ids computed
in float32 (faiss) are compared with the float64 reference up to near-ties of its scores
(``tests/ties.py``): two distinct rows of this data score 1.3e-7 apart for one query."""

from __future__ import annotations

import numpy as np
import pytest

from anatomy.io import InputError
from anatomy.neighbours import (
    exact_search,
    ivf_search,
    l2_normalize,
    recall_at_k,
    spherical_kmeans,
)
from tests.ties import assert_ranking_equal_up_to_ties


def _brute(q: np.ndarray, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    # independent computation: float64 dot products, a full Python sort by (-score, index)
    sims = q.astype(np.float64) @ x.astype(np.float64).T
    ids = np.array([sorted(range(len(x)), key=lambda j, r=r: (-sims[r, j], j))[:k]
                    for r in range(len(q))])
    return np.take_along_axis(sims, ids, 1), ids


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    x = l2_normalize(rng.standard_normal((700, 24)))
    x[[10, 20, 30]] = x[3]  # duplicates: exact ties, broken by index
    x[40] = x[41]
    return x


@pytest.mark.parametrize("backend", ["numpy", "faiss"])
@pytest.mark.parametrize("k", [1, 5, 50])
def test_exact_search_equals_brute_force(data, backend, k):
    q = data[:60]
    s, i = exact_search(q, data, k, backend=backend, block=17)
    want_s, want_i = _brute(q, data, k)
    # exact ties (the duplicated rows) by index; rows within float32 rounding either way
    sims = q.astype(np.float64) @ data.astype(np.float64).T
    assert_ranking_equal_up_to_ties(i, want_i, sims, what=f"{backend}, k={k}: ")
    np.testing.assert_allclose(s, want_s, atol=1e-5)
    assert s.dtype == np.float32 and i.dtype == np.int64
    assert i[3, :4].tolist() == [3, 10, 20, 30] or k < 4


def test_exact_search_whole_index_is_a_full_sort(data):
    # k = n: every row fully sorted; scores are float64 products rounded to float32 (a
    # float32 GEMM can score the duplicated rows 3, 10, 20, 30 a bit apart), ties by index
    q = data[:20]
    s, i = exact_search(q, data, len(data))
    sims = (q.astype(np.float64) @ data.astype(np.float64).T).astype(np.float32)
    want = np.array([sorted(range(len(data)), key=lambda j, r=r: (-sims[r, j], j))
                     for r in range(len(q))])
    np.testing.assert_array_equal(i, want)


def test_exact_search_checks_inputs(data):
    with pytest.raises(InputError, match="k must be"):
        exact_search(data[:2], data, 0)
    with pytest.raises(InputError, match="same dimension"):
        exact_search(data[:2, :5], data, 1)
    with pytest.raises(InputError, match="backend"):
        exact_search(data[:2], data, 1, backend="annoy")


def test_ivf_recall_is_measured_against_exact(data):
    q = data[:200]
    res = ivf_search(q, data, 10, nlist=16, nprobe=16, recall_sample=50, seed=1)
    assert res.recall == pytest.approx(1.0)  # every list probed: exact
    _, exact = exact_search(q, data, 10)
    low = ivf_search(q, data, 10, nlist=16, nprobe=1, recall_sample=200, seed=1)
    assert low.recall == pytest.approx(recall_at_k(low.ids, exact))  # all 200 sampled
    assert low.recall < 1.0 and low.nprobe == 1


def test_recall_at_k():
    assert recall_at_k(np.array([[1, 2], [3, 4]]), np.array([[2, 1], [3, 5]])) == 0.75


def test_spherical_kmeans_assigns_to_the_nearest_centroid(data):
    c, a = spherical_kmeans(data, 7, niter=10, seed=3)
    assert c.shape == (7, 24) and a.shape == (700,)
    sims = data.astype(np.float64) @ c.astype(np.float64).T  # faiss assigned in float32
    assert_ranking_equal_up_to_ties(a, sims.argmax(1), sims)
    c2, a2 = spherical_kmeans(data, 7, niter=10, seed=3)
    np.testing.assert_array_equal(a, a2)
