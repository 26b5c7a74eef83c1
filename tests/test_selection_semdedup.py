"""anatomy.selection.semdedup: SemDeDup's per-cluster triangle max, its eps rule, the
components variant, DsDm's "20 % kept then uniform" selection and the embedding step.

Independent computations used: a brute-force SemDeDup (centroid = normalised mean for one
cluster, the order by a Python sort, M_j by a double loop) and a breadth-first search for the
components; planted near-duplicates (synthetic vectors, and real MiniLM embeddings of 30
sentences with one word changed); a causal LM's embeddings against its own unpadded
``hidden_states[-1]``.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

from anatomy.execution import Ranks
from anatomy.io import InputError
from anatomy.selection import semdedup as sd
from anatomy.selection.indices import top_n
from anatomy.selection.pool import ListTexts


def unit_vectors(gram: np.ndarray) -> np.ndarray:
    """Rows whose pairwise dot products are ``gram`` (its Cholesky factor)."""
    return np.linalg.cholesky(np.asarray(gram, dtype=np.float64)).astype(np.float32)


def brute_force(x: np.ndarray, eps: float) -> tuple[list[int], list[float], set[int]]:
    """One cluster: the hard order, M_j (None when no earlier item) and the rows removed by
    the published rule, all with Python loops in float64."""
    x = np.asarray(x, dtype=np.float64)
    c = x.mean(0) / np.linalg.norm(x.mean(0))
    order = sorted(range(len(x)), key=lambda i: (float(x[i] @ c), i))
    M, removed = [], set()
    for pos, j in enumerate(order):
        earlier = [float(x[i] @ x[j]) for i in order[:pos]]
        M.append(max(earlier) if earlier else None)
        if earlier and max(earlier) > 1 - eps:
            removed.add(j)
    return order, M, removed


def bfs_components(x: np.ndarray, threshold: float) -> list[set[int]]:
    x = np.asarray(x, dtype=np.float64)
    seen, comps = set(), []
    for s in range(len(x)):
        if s in seen:
            continue
        comp, todo = {s}, [s]
        while todo:
            i = todo.pop()
            for j in range(len(x)):
                if j not in comp and j != i and x[i] @ x[j] > threshold:
                    comp.add(j)
                    todo.append(j)
        seen |= comp
        comps.append(comp)
    return comps


# x ~ y and y ~ z above 0.9, x !~ z: a chain whose middle y is the most central
CHAIN3 = [[1.0, 0.93, 0.80], [0.93, 1.0, 0.91], [0.80, 0.91, 1.0]]
# the same chain plus w, which pulls the centroid towards z so that y comes before z
CHAIN4 = [[1.0, 0.60, 0.70, 0.88], [0.60, 1.0, 0.92, 0.80], [0.70, 0.92, 1.0, 0.92],
          [0.88, 0.80, 0.92, 1.0]]  # rows: w, x, y, z


def test_three_item_chain_against_brute_force():
    """Under keep_hard the chain's middle is the most central, so it comes last: the
    published rule removes it and keeps both ends (x !~ z); components keep one."""
    x = unit_vectors(CHAIN3)
    eps = 0.1
    scores, info = sd.semdedup_scores(x, 1, niter=5)
    order, M, removed = brute_force(x, eps)
    assert order == [2, 0, 1]  # z (least central), x, then y
    np.testing.assert_array_equal(info["position"][order], [0, 1, 2])
    want = np.array([sd.NO_EARLIER if m is None else 1 - m for m in M])
    np.testing.assert_allclose(scores[order], want, atol=1e-6)
    keep = scores >= eps
    assert set(np.flatnonzero(~keep)) == removed == {1}
    comp_keep, _ = sd.semdedup_keep(x, 1, eps, mode="components", niter=5)
    assert [set(c) for c in bfs_components(x, 1 - eps)] == [{0, 1, 2}]
    assert np.flatnonzero(comp_keep).tolist() == [2]  # the first in the hard order


def test_chain_removes_an_item_whose_only_match_was_removed():
    """Issue #8 through the whole pipeline: in the hard order w, x, y, z, y is removed for
    matching x, then z for matching y (z's similarity to the kept w and x is below 0.9)."""
    x = unit_vectors(CHAIN4)
    eps = 0.1
    scores, _ = sd.semdedup_scores(x, 1, niter=5)
    order, M, removed = brute_force(x, eps)
    assert order == [0, 1, 2, 3]
    assert removed == {2, 3}
    assert max(CHAIN4[3][i] for i in (0, 1)) < 1 - eps < CHAIN4[3][2]  # z matches only y
    want = np.array([sd.NO_EARLIER if m is None else 1 - m for m in M])
    np.testing.assert_allclose(scores[order], want, atol=1e-6)
    assert set(np.flatnonzero(scores < eps)) == removed
    # earlier_max on rows already in order, chunked one column at a time, is the same
    m = sd.earlier_max(x[order], max_bytes=4)
    assert m[0] == -np.inf
    np.testing.assert_allclose(m[1:], [mm for mm in M[1:]], atol=1e-6)


def test_dense_cluster_against_brute_force_chunked_or_not():
    """40 random unit vectors in 3-d (many pairs above 0.9): the chain's removed set and the
    components' survivors (each component's least central member) match the brute force,
    with whole similarity matrices and with 3-column blocks."""
    x = sd.l2_normalize(np.random.default_rng(5).normal(size=(40, 3)))
    eps = 0.1
    order, _, removed = brute_force(x, eps)
    c = x.astype(np.float64).mean(0)
    central = x.astype(np.float64) @ (c / np.linalg.norm(c))
    comps = bfs_components(x, 1 - eps)
    assert 3 <= len(comps) < 30  # a non-trivial graph
    survivors = {min(comp, key=lambda i: (central[i], i)) for comp in comps}
    for max_bytes in (1 << 20, 4 * 40 * 3):
        scores, _ = sd.semdedup_scores(x, 1, niter=5, max_block_bytes=max_bytes)
        assert set(np.flatnonzero(scores < eps)) == removed
        keep, info = sd.semdedup_keep(x, 1, eps, mode="components", niter=5,
                                      max_block_bytes=max_bytes)
        assert set(np.flatnonzero(keep)) == survivors
        assert info["duplicate_groups"] == sum(len(comp) > 1 for comp in comps)
    assert len(removed) < 40 - len(survivors)  # the chain keeps more than one per group


@pytest.fixture(scope="module")
def planted():
    """300 random unit vectors in 32-d plus 8 groups of a base and 2 near-copies (cos ~0.99):
    random pairs have |cos| < 0.7, so eps = 0.1 removes exactly the copies."""
    rng = np.random.default_rng(0)
    base = rng.normal(size=(300, 32))
    rows, group = [base], list(range(300))
    for g in range(8):
        rows.append(base[g * 30] + 0.08 * rng.normal(size=(2, 32)))
        group += [g * 30] * 2
    x = sd.l2_normalize(np.concatenate(rows))
    return x, np.array(group)


def test_planted_duplicates_one_survivor_each(planted, caplog):
    x, group = planted
    n = len(x)
    scores, info = sd.semdedup_scores(x, 6, niter=20)
    assign = info["assignment"]
    groups = [np.flatnonzero(group == g) for g in np.unique(group) if (group == g).sum() > 1]
    assert len(groups) == 8
    assert all(len(np.unique(assign[g])) == 1 for g in groups)  # a group shares a cluster
    sim = np.einsum("ij,ij->i", x, info["centroids"][assign])
    np.testing.assert_allclose(sim, info["centroid_similarity"], atol=1e-6)
    assert np.all(np.bincount(assign, minlength=6) == info["cluster_sizes"])
    keep = scores >= 0.1
    assert keep.sum() == n - 16
    for g in groups:
        assert keep[g].sum() == 1
        assert g[keep[g]][0] == g[np.argmin(sim[g])]  # keep_hard: least similar survives
    # components agree here (the groups are cliques); "easy" keeps the most similar
    comp, cinfo = sd.semdedup_keep(x, 6, 0.1, mode="components", niter=20)
    np.testing.assert_array_equal(comp, keep)
    assert cinfo["duplicate_groups"] == 8
    easy, _ = sd.semdedup_keep(x, 6, 0.1, order="easy", niter=20)
    rand, _ = sd.semdedup_keep(x, 6, 0.1, order="random", niter=20)
    for g in groups:
        assert g[easy[g]].tolist() == [g[np.argmax(sim[g])]]
        assert rand[g].sum() == 1
    # eps for n, top_n and the sweep
    eps = sd.epsilon_for(scores, n - 16)
    assert (scores >= eps).sum() == n - 16
    np.testing.assert_array_equal(np.sort(top_n(scores, n - 16)), np.flatnonzero(keep))
    table = sd.kept_fraction(scores, [0.0, 0.05, 0.1, 0.5, 1.0, 2.0])
    assert list(table.values()) == sorted(table.values(), reverse=True)
    assert table[0.1] == pytest.approx((n - 16) / n)
    assert table[2.0] == pytest.approx(6 / n)  # only each cluster's first item
    # column-blocked clusters give the same scores, and say so
    with caplog.at_level(logging.WARNING, logger="anatomy"):
        s_small, i_small = sd.semdedup_scores(x, 6, niter=20, max_block_bytes=4 * 60 * 8)
    assert i_small["chunked_clusters"] == 6 and "column blocks" in caplog.text
    np.testing.assert_allclose(s_small, scores, atol=1e-6)


def test_dsdm_style_select(planted):
    x, _ = planted
    scores, _ = sd.semdedup_scores(x, 6, niter=20)
    kept = set(top_n(scores, round(0.2 * len(x))).tolist())
    idx = sd.dsdm_style_select(scores, 0.2, 30, seed=0)
    assert len(idx) == 30 == len(set(idx.tolist())) and set(idx.tolist()) <= kept
    np.testing.assert_array_equal(idx, sd.dsdm_style_select(scores, 0.2, 30, seed=0))
    assert not np.array_equal(idx, sd.dsdm_style_select(scores, 0.2, 30, seed=1))
    with pytest.raises(InputError, match="more than"):
        sd.dsdm_style_select(scores, 0.2, len(kept) + 1, seed=0)
    with pytest.raises(InputError, match="keep_fraction"):
        sd.dsdm_style_select(scores, 0.0, 5, seed=0)


def test_bad_input(planted):
    x, _ = planted
    for k in (0, len(x) + 1, 2.5):
        with pytest.raises(InputError, match="n_clusters"):
            sd.semdedup_scores(x, k)
    with pytest.raises(InputError, match=r"\(N, d\)"):
        sd.semdedup_scores(x[0], 1)
    bad = x.copy()
    bad[3, 0] = np.nan
    with pytest.raises(InputError, match="row 3"):
        sd.semdedup_scores(bad, 2)
    with pytest.raises(InputError, match="unknown order"):
        sd.semdedup_scores(x, 2, order="hardest")
    with pytest.raises(InputError, match="unknown mode"):
        sd.semdedup_keep(x, 2, 0.1, mode="greedy")
    with pytest.raises(InputError, match="more than"):
        sd.epsilon_for(np.zeros(5), 6)
    with pytest.raises(InputError, match="pool is empty"):
        sd.semdedup_embeddings(ListTexts([]))
    with pytest.raises(InputError, match="unknown embedding kind"):
        sd.semdedup_embeddings(ListTexts(["a"]), kind="bow")
    with pytest.raises(InputError, match="needs a model"):
        sd.semdedup_embeddings(ListTexts(["a"]), kind="causal_lm")


# ---------------------------------------------------------------------------------------
# real embeddings: the offline MiniLM

BASE = [
    "The river flooded the old mill after three days of heavy rain.",
    "She baked a chocolate cake for her grandmother's ninetieth birthday.",
    "Quantum computers use qubits that can exist in superposition.",
    "The football team won the championship in a dramatic penalty shootout.",
    "Tax returns must be filed before the end of April each year.",
    "A young fox crept silently through the snowy forest at dawn.",
    "The new smartphone has a larger battery and a faster processor.",
    "Medieval castles were built with thick stone walls and moats.",
    "He planted tomatoes, peppers and basil in the backyard garden.",
    "The orchestra performed Beethoven's ninth symphony last night.",
    "Volcanic eruptions can release huge clouds of ash into the sky.",
    "Our flight to Tokyo was delayed by four hours because of fog.",
    "The library opens at nine and closes at six on weekdays.",
    "Regular exercise lowers the risk of heart disease and stroke.",
    "The detective found a hidden letter inside the antique desk.",
    "Bitcoin prices fell sharply after the regulatory announcement.",
    "Penguins huddle together to stay warm during Antarctic winters.",
    "The students painted a colourful mural on the school wall.",
    "Fresh bread was sold at the village market every Saturday.",
    "The spacecraft entered orbit around Mars after a long journey.",
]
COPIES = {  # one word changed (or added)
    0: ["The river flooded the old mill after three days of heavy storms.",
        "The river flooded the old mill after four days of heavy rain."],
    3: ["The football team won the championship in a dramatic penalty shoot-out.",
        "The soccer team won the championship in a dramatic penalty shootout."],
    7: ["Medieval castles were built with thick stone walls and deep moats.",
        "Medieval castles were made with thick stone walls and moats."],
    12: ["The library opens at nine and closes at five on weekdays.",
         "The library opens at eight and closes at six on weekdays."],
    16: ["Penguins huddle together to keep warm during Antarctic winters.",
         "Emperor penguins huddle together to stay warm during Antarctic winters."],
}


@pytest.fixture(scope="module")
def sentences():
    texts, group = list(BASE), list(range(len(BASE)))
    for g, cs in COPIES.items():
        texts += cs
        group += [g] * len(cs)
    return texts, np.array(group)


def test_minilm_near_copies_removed(sentences):
    """Measured: near-copies have cosine >= 0.82, distinct sentences <= 0.27, so eps = 0.5
    keeps exactly the 20 distinct sentences, one per planted group."""
    texts, group = sentences
    e = sd.semdedup_embeddings(ListTexts(texts), batch_size=8, progress=False)
    assert e.shape == (30, 384) and e.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
    keep, info = sd.semdedup_keep(e, 3, 0.5, niter=20)
    assert keep.sum() == 20
    sim = info["centroid_similarity"]
    for g in COPIES:
        members = np.flatnonzero(group == g)
        assert len(np.unique(info["assignment"][members])) == 1
        assert members[keep[members]].tolist() == [members[np.argmin(sim[members])]]
    scores, _ = sd.semdedup_scores(e, 3, niter=20)
    np.testing.assert_array_equal(np.sort(top_n(scores, 20)), np.flatnonzero(keep))
    comp, _ = sd.semdedup_keep(e, 3, 0.5, mode="components", niter=20)
    np.testing.assert_array_equal(comp, keep)


def test_embedding_step_ranks_identical_bytes(sentences, tmp_path):
    """1 rank and 2 ranks write the same bytes (units of 8 rows, batches of 4); a rerun is
    skipped by its fingerprint; the in-memory path agrees to bf16 precision."""
    texts, _ = sentences
    pool = ListTexts(texts)
    kw = dict(batch_size=4, unit_rows=8, progress=False)
    one = sd.semdedup_embeddings(pool, out=tmp_path / "w1.npy", ranks=Ranks(0, 1), **kw)
    assert sd.semdedup_embeddings(pool, out=tmp_path / "w2.npy", ranks=Ranks(0, 2),
                                  **kw) is None  # rank 1's part is missing
    two = sd.semdedup_embeddings(pool, out=tmp_path / "w2.npy", ranks=Ranks(1, 2), **kw)
    assert (tmp_path / "w1.npy").read_bytes() == (tmp_path / "w2.npy").read_bytes()
    np.testing.assert_array_equal(one, two)
    again = sd.semdedup_embeddings(pool, out=tmp_path / "w1.npy", **kw)  # skipped
    np.testing.assert_array_equal(again, one)
    mem = sd.semdedup_embeddings(pool, **kw)
    np.testing.assert_allclose(mem, one, atol=5e-3)  # measured 7e-4


def test_causal_lm_mean_of_last_hidden_state(tmp_path):
    """Mean over the attention mask of the decoder's last hidden state, batched with right
    padding, equals each text's own unpadded ``hidden_states[-1]`` mean, normalised."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    words = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "far", "away", "and"]
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + words
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"),
                                         model_max_length=64)
    torch.manual_seed(0)
    cfg = transformers.OlmoConfig(vocab_size=len(vocab), hidden_size=32,
                                  intermediate_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, max_position_embeddings=64,
                                  pad_token_id=0, bos_token_id=None, eos_token_id=None)
    model = transformers.OlmoForCausalLM(cfg).eval()
    model.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    texts = ["the cat sat on the mat", "a dog", "the dog ran far far away and the cat sat",
             "cat", "a cat and a dog sat on a mat"]
    e = sd.semdedup_embeddings(ListTexts(texts), tmp_path, kind="causal_lm", batch_size=3,
                               device="cpu", progress=False)
    ref = []
    with torch.inference_mode():
        for t in texts:
            enc = tok(t, return_tensors="pt")
            h = model(input_ids=enc["input_ids"], output_hidden_states=True).hidden_states[-1]
            ref.append(h[0].mean(0).numpy())
    ref = np.stack(ref)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    np.testing.assert_allclose(e, ref, atol=1e-5)
