"""anatomy.lm: loading (folders, revisions, offline hub names), token_stats, embedding, sampling.

Independent computations used: token_stats against a per-example, unbatched forward pass
with the distribution's mean/variance computed in float64 by torch.distributions and an
explicit sum; embeddings against sentence-transformers' own encode.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from anatomy import lm
from anatomy.io import InputError


def tiny_olmo(seed: int = 0, vocab: int = 100):
    from transformers import OlmoConfig, OlmoForCausalLM

    torch.manual_seed(seed)
    cfg = OlmoConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64,
                     num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=128,
                     pad_token_id=1, bos_token_id=None, eos_token_id=0)
    return OlmoForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(1)
    return tiny_olmo()


def random_seqs(lengths, seed=0, vocab=100):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, vocab, size=n).tolist() for n in lengths]


def reference_stats(model, seq):
    """Unbatched, unpadded pass; mu = -entropy (torch.distributions), var by explicit sum."""
    with torch.no_grad():
        logits = model(torch.tensor([seq])).logits[0, :-1].double()
    dist = torch.distributions.Categorical(logits=logits)
    logp = torch.log_softmax(logits, -1)
    lp = logp.gather(-1, torch.tensor(seq[1:])[:, None]).squeeze(-1)
    mu = -dist.entropy()
    var = (dist.probs * (logp - mu[:, None]) ** 2).sum(-1)  # E[(log p - mu)^2]
    return lp.numpy(), mu.numpy(), var.numpy()


def test_token_stats_matches_unbatched_reference(model, monkeypatch):
    seqs = random_seqs([5, 17, 2, 30, 1, 0, 9, 9, 23])
    # small vocabulary chunks: the chunked log_softmax path must give the same numbers
    monkeypatch.setattr(lm, "_VOCAB_CHUNK", 3 * 100)
    stats = lm.token_stats(model, seqs, batch_size=4, progress=False)
    assert len(stats) == len(seqs)
    for seq, st in zip(seqs, stats, strict=True):
        assert len(st) == max(0, len(seq) - 1)
        assert st.logprob.dtype == st.mean.dtype == st.var.dtype == np.float32
        if len(seq) < 2:
            continue
        lp, mu, var = reference_stats(model, seq)
        np.testing.assert_allclose(st.logprob, lp, atol=1e-5, rtol=0)
        np.testing.assert_allclose(st.mean, mu, atol=1e-5, rtol=0)
        np.testing.assert_allclose(st.var, var, atol=1e-5, rtol=1e-5)


def test_token_stats_independent_of_batching(model):
    seqs = random_seqs([12, 3, 25, 7, 7, 18], seed=1)
    one = lm.token_stats(model, seqs, batch_size=1, progress=False)
    many = lm.token_stats(model, seqs, batch_size=6, progress=False)
    for a, b in zip(one, many, strict=True):
        np.testing.assert_allclose(a.logprob, b.logprob, atol=1e-5)
        np.testing.assert_allclose(a.var, b.var, atol=1e-5)


def test_tokenize_texts_no_special_tokens_and_truncation():
    tok = lm.load_tokenizer(lm.default_embedder_path())
    ids = lm.tokenize_texts(tok, ["hello world", "a b c d e f"], max_tokens=3)
    assert ids[0] == tok.convert_tokens_to_ids(["hello", "world"])  # no [CLS]/[SEP]
    assert len(ids[1]) == 3


def _save_revisions(root):
    for i, name in enumerate(["step10-tokens5K", "step20-tokens10K"]):
        tiny_olmo(seed=i).save_pretrained(root / name)


def test_local_revisions_and_bare_steps(tmp_path):
    _save_revisions(tmp_path)
    assert lm.resolve_revision(tmp_path) is None
    assert lm.resolve_revision(tmp_path, step=20) == "step20-tokens10K"
    assert lm.resolve_revision(tmp_path, "10") == "step10-tokens5K"
    assert lm.resolve_revision(tmp_path, 10) == "step10-tokens5K"
    assert lm.resolve_revision(tmp_path, "step20-tokens10K") == "step20-tokens10K"
    m = lm.load_causal_lm(tmp_path, revision=20, device="cpu")
    want = tiny_olmo(seed=1).state_dict()
    for k, v in m.state_dict().items():
        torch.testing.assert_close(v, want[k])
    # direct checkpoint folder works too
    lm.load_causal_lm(tmp_path / "step10-tokens5K", device="cpu")
    with pytest.raises(InputError, match="pass a revision"):
        lm.load_causal_lm(tmp_path)
    with pytest.raises(InputError, match="no checkpoint for step 30"):
        lm.load_causal_lm(tmp_path, revision=30)
    with pytest.raises(InputError, match="no revision folder"):
        lm.resolve_revision(tmp_path, "step30-tokens1K")
    with pytest.raises(InputError, match="not found"):
        lm.load_causal_lm(tmp_path / "nope" / "deeper")


def test_offline_hub_name_is_an_input_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="not available offline; pass a local folder"):
        lm.load_causal_lm("no-such-org/no-such-model-9f3a")
    with pytest.raises(InputError, match="cannot list the revisions"):
        lm.resolve_revision("no-such-org/no-such-model-9f3a", step=100)


def test_dtype_and_int8(tmp_path, model):
    model.save_pretrained(tmp_path)
    seqs = random_seqs([20, 11], seed=3)
    ref = lm.token_stats(model, seqs, progress=False)
    bf = lm.load_causal_lm(tmp_path, dtype="bf16", device="cpu")
    assert next(bf.parameters()).dtype == torch.bfloat16
    q = lm.load_causal_lm(tmp_path, int8=True)
    assert any("quantized" in type(mod).__module__ for mod in q.modules())
    for m8 in (bf, q):  # close to fp32, not equal
        got = lm.token_stats(m8, seqs, progress=False)
        for a, b in zip(ref, got, strict=True):
            np.testing.assert_allclose(a.logprob, b.logprob, atol=0.1)
    with pytest.raises(InputError, match="unknown dtype"):
        lm.load_causal_lm(tmp_path, dtype="float8")


def test_batch_plans_are_fixed_by_lengths_and_batch_size():
    # longest first, ties by index; the plan never depends on how many ranks share it
    assert lm.length_batches([3, 9, 5, 9], 2) == [[1, 3], [2, 0]]
    assert lm.length_batches([], 4) == []
    assert lm.generation_batches(7, 3) == [[0, 1, 2], [3, 4, 5], [6]]
    with pytest.raises(InputError, match="batch size"):
        lm.length_batches([1], 0)


def test_token_stats_pack_roundtrip(model):
    ids = [[5, 6, 7, 8], [9, 10], [11]]
    stats = lm.token_stats(model, ids, batch_size=2, progress=False)
    back = lm.unpack_token_stats(lm.pack_token_stats(stats))
    assert [len(s) for s in back] == [3, 1, 0]
    for a, b in zip(stats, back, strict=True):
        assert np.array_equal(a.logprob, b.logprob) and np.array_equal(a.var, b.var)


def test_resolve_device():
    assert lm.resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        assert lm.resolve_device("auto").type == "cpu"
        with pytest.raises(InputError, match="CUDA is not available"):
            lm.resolve_device("cuda")


def test_generate_deterministic_across_ranks_and_batch_sizes(model):
    kw = dict(n=7, max_new_tokens=6, seed=5, prompt_ids=[3, 4], stop_id=0, progress=False)
    full = lm.generate(model, None, batch_size=3, **kw)
    assert len(full) == 7 and all(len(s) <= 6 and 0 not in s for s in full)
    # two "ranks" taking whole batches 0, 2 and 1: each computes only its batches
    r0 = lm.generate(model, None, batch_size=3, batches=[0, 2], **kw)
    r1 = lm.generate(model, None, batch_size=3, batches=[1], **kw)
    assert len(r0) == 4 and len(r1) == 3
    assert r0[:3] + r1 + r0[3:] == full  # the same batches: exact by design
    assert lm.generate(model, None, batch_size=3, **{**kw, "seed": 6}) != full
    # per-sample generators: another batch size, the same samples. Batches of 1 and 3 round
    # the fp32 forward pass differently, and a sampled token flips wherever its draw falls
    # within that rounding of a boundary (issue 20), so this comparison runs the model in
    # float64: the sampler reads the logits as fp32 (``.float()``); a float64 rounding
    # difference (~1e-16 relative) changes an fp32 logit only if it lies that close to an fp32
    # rounding boundary (~1e-9 of logits), and that one-ulp change flips a draw only if the
    # draw lies within it of a boundary: never in practice
    wide = tiny_olmo().double()
    one, three = (lm.generate(wide, None, batch_size=b, **kw) for b in (1, 3))
    assert one == three and len(one) == 7


@pytest.fixture(scope="module")
def embedder():
    return lm.load_embedder(device="cpu")


TEXTS = ["A short one.",
         "The quick brown fox jumps over the lazy dog " * 6,
         "Membership inference asks whether a text was in the training data.",
         "x",
         "Numbers 1 2 3 and symbols #@! in a medium-length sentence, for padding."]


def test_embed_texts_shape_and_input_order(embedder):
    vecs = lm.embed_texts(embedder, TEXTS, batch_size=2, progress=False)
    assert vecs.shape == (len(TEXTS), 384) and vecs.dtype == np.float32
    # each text alone (no padding, no sorting) gives the same row
    alone = np.concatenate([lm.embed_texts(embedder, [t], progress=False) for t in TEXTS])
    cos = (vecs * alone).sum(1) / np.linalg.norm(vecs, axis=1) / np.linalg.norm(alone, axis=1)
    assert cos.min() > 0.999
    fp32 = lm.load_embedder(device="cpu", precision="fp32")
    a = lm.embed_texts(fp32, TEXTS, batch_size=2, progress=False, normalize=True)
    b = np.concatenate([lm.embed_texts(fp32, [t], progress=False, normalize=True)
                        for t in TEXTS])
    np.testing.assert_allclose(a, b, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)


def test_embed_texts_agrees_with_sentence_transformers(embedder):
    try:
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(str(lm.default_embedder_path()), device="cpu")
    except Exception as e:  # noqa: BLE001 - any failure to load offline means: skip
        pytest.skip(f"sentence-transformers cannot load the folder offline: {e}")
    want = st.encode(TEXTS, convert_to_numpy=True, normalize_embeddings=True)
    got = lm.embed_texts(embedder, TEXTS, normalize=True, progress=False)
    assert ((want * got).sum(1)).min() > 0.99
