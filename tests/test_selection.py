"""Selection rules, get_indices' contract, DsDm's released score files, candidate datasets.

Independent checks: top-n against a full Python sort by (-score, index); the Gumbel top-k's
inclusion frequencies against the exact Plackett-Luce first-draw probabilities; the candidate
dataset's rows against the token files read with plain numpy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from anatomy.io import InputError
from anatomy.selection import get_candidate_dataset, get_indices
from anatomy.selection import indices as rules
from anatomy.selection.published import published_scores, published_semdedup


def test_top_n_order_ties_and_nesting():
    rng = np.random.default_rng(0)
    s = rng.integers(0, 20, size=500).astype(np.float32)  # many ties
    s[[3, 77]] = np.nan
    full = sorted((i for i in range(500) if not np.isnan(s[i])), key=lambda i: (-s[i], i))
    for n in (1, 7, 100, 498):
        got = rules.top_n(s, n)
        assert got.tolist() == full[:n]
    with pytest.raises(InputError, match="more than the 498 eligible"):
        rules.top_n(s, 499)
    with pytest.raises(InputError, match="positive"):
        rules.top_n(s, 0)  # the published get_indices returns every row here


def test_gumbel_top_k_is_seeded_sampling_in_proportion():
    w = np.log(np.array([8.0, 4.0, 2.0, 1.0, 1.0]))
    a, b = rules.gumbel_top_n(w, 3, seed=4), rules.gumbel_top_n(w, 3, seed=4)
    assert a.tolist() == b.tolist() and len(set(a.tolist())) == 3
    # the first pick of a Gumbel top-k is a draw from softmax(w): frequencies over seeds
    first = np.bincount([rules.gumbel_top_n(w, 1, seed=s)[0] for s in range(4000)],
                        minlength=5) / 4000
    np.testing.assert_allclose(first, np.exp(w) / np.exp(w).sum(), atol=0.025)


def test_uniform_and_pareto_rules():
    u = rules.uniform(100, 30, seed=1)
    assert len(set(u.tolist())) == 30 and u.min() >= 0 and u.max() < 100
    assert u.tolist() == rules.uniform(100, 30, seed=1).tolist()
    assert u.tolist() != rules.uniform(100, 30, seed=2).tolist()
    s = np.linspace(0, 1, 200)
    k = rules.pareto_keep(s, 50, seed=0)
    assert len(set(k.tolist())) == 50
    assert np.all(np.diff(s[k]) <= 0)  # best first
    assert s[k].mean() > 0.6  # the rule favours high scores


def test_get_indices_contract_and_errors():
    scores = np.random.default_rng(0).normal(size=300).astype(np.float32)
    for method in ("dsdm", "classifier", "dsir", "semdedup"):
        t = None if method == "semdedup" else "x"
        idx = get_indices(method, 40, t, scores=scores, seed=3, rule="topk")
        assert len(idx) == 40 and len(set(idx.tolist())) == 40 and idx.dtype == np.int64
        assert idx.min() >= 0 and idx.max() < 300
        assert idx.tolist() == get_indices(method, 40, t, scores=scores, seed=3,
                                           rule="topk").tolist()
        if method != "dsir":  # deterministic top-n: sorted by score, nested across n
            assert np.all(np.diff(scores[idx]) <= 0)
            assert get_indices(method, 10, t, scores=scores, rule="topk").tolist() == \
                idx[:10].tolist()
    assert len(get_indices("random", 40, scores=scores)) == 40
    with pytest.raises(InputError, match="unknown method"):
        get_indices("bm25", 10, "x", scores=scores)
    with pytest.raises(InputError, match="more than"):
        get_indices("dsdm", 301, "x", scores=scores)
    with pytest.raises(InputError, match="untargeted"):
        get_indices("random", 10, "x", scores=scores)
    with pytest.raises(InputError, match="targeted method"):
        get_indices("dsir", 10, None, scores=scores)


def _save(path: Path, t: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(t, str(path))


def test_published_score_files(tmp_path):
    rng = np.random.default_rng(0)
    raw = {t: rng.normal(scale=s, size=50).astype(np.float32)
           for t, s in (("jeopardy", 1.0), ("squad", 3.1), ("lambada", 2.3))}
    for t, a in raw.items():
        _save(tmp_path / "dsdm" / f"{t}.pt", torch.from_numpy(a))
    mix = published_scores(tmp_path, "dsdm", "lm_task_mix")
    np.testing.assert_allclose(mix, np.mean(list(raw.values()), axis=0), rtol=1e-6)
    z = published_scores(tmp_path, "dsdm", "lm_task_mix", standardize=True)
    np.testing.assert_allclose(
        z, np.mean([(a - a.mean()) / a.std() for a in raw.values()], axis=0), rtol=1e-5)
    idx = get_indices("dsdm", 5, "lm_task_mix", scores=mix)
    assert idx.tolist() == np.argsort(-mix, kind="stable")[:5].tolist()
    with pytest.raises(InputError, match="gpt3_mix"):
        published_scores(tmp_path, "dsdm", "gpt3_mix")
    (tmp_path / "dsir").mkdir()
    (tmp_path / "dsir" / "squad.pt").write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 867796123\n")
    with pytest.raises(InputError, match="LFS pointer"):
        published_scores(tmp_path, "dsir", "squad")
    _save(tmp_path / "sdd.pt", torch.tensor([9, 2, 5], dtype=torch.int32))
    kept = published_semdedup(tmp_path)
    assert kept.tolist() == [2, 5, 9]
    sel = get_indices("semdedup", 2, scores=np.full(10, np.nan), among=kept, seed=0)
    assert set(sel.tolist()) <= {2, 5, 9} and len(sel) == 2


def test_candidate_dataset_from_world_parquet_and_disk(tiny_world, tmp_path):
    import datasets

    from anatomy.selection.pool import open_pool

    ds = get_candidate_dataset(tiny_world, cache_dir=tmp_path / "cache")
    t = __import__("json").loads((tiny_world / "truth.json").read_text())
    L = t["seq_len"]
    rows = np.concatenate([np.fromfile(tiny_world / p, dtype="<u2")[
        : (tiny_world / p).stat().st_size // 2 // L * L].reshape(-1, L) for p in t["token_files"]])
    assert len(ds) == len(rows)
    sel = ds.select([5, 0, len(rows) - 1])
    np.testing.assert_array_equal(np.array(sel["input_ids"]), rows[[5, 0, len(rows) - 1]])
    assert ds.cache_files  # memory-mapped Arrow, not loaded in memory

    # parquet shards (as the hub's data/train-XXXXX-of-N.parquet): row i = i-th in name order
    shard_dir = tmp_path / "c4" / "data"
    shard_dir.mkdir(parents=True)
    for k, (a, b) in enumerate(((0, 40), (40, 90))):
        datasets.Dataset.from_dict({"input_ids": rows[a:b].astype(np.int64).tolist()}
                                   ).to_parquet(str(shard_dir / f"train-{k:05d}-of-00002.parquet"))
    pq = get_candidate_dataset(tmp_path / "c4", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(np.array(pq.select([0, 45, 89])["input_ids"]),
                                  rows[[0, 45, 89]])
    disk = tmp_path / "disk"
    datasets.Dataset.from_dict({"input_ids": rows[:30].tolist()}).save_to_disk(str(disk))
    assert len(get_candidate_dataset(disk)) == 30
    pool = open_pool(tiny_world, rows=64, cache_dir=tmp_path / "cache")
    assert len(pool) == 64 and pool.seq_len == L
    np.testing.assert_array_equal(pool.token_matrix([3, 1]), rows[[3, 1]])
    assert len(pool.texts(0, 10)) == 10
    shares = pool.category_shares()
    assert abs(sum(shares.values()) - 1) < 1e-3
    with pytest.raises(InputError, match="pool has"):
        open_pool(tiny_world, rows=10**9, cache_dir=tmp_path / "cache")
    with pytest.raises(InputError):
        get_candidate_dataset(tmp_path / "nothing-here")
