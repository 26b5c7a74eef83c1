"""The merge-list arm of pipeline B (Hayase et al. 2024): replayed pair counts against an
independent recount, the LP on tokenizers trained on known mixtures, and its errors."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from anatomy.io import InputError
from anatomy.mixture.tokenizer_mixture import MergeReplay, infer_mixture, load_bpe, words_of


def _language(seed: int, letters: str, n_words: int = 400) -> list[str]:
    """A synthetic language: Zipf-distributed words over its own letters."""
    rng = np.random.default_rng(seed)
    vocab = ["".join(rng.choice(list(letters), int(rng.integers(2, 8))))
             for _ in range(n_words)]
    p = 1.0 / np.arange(1, n_words + 1)
    p /= p.sum()

    def text(n: int) -> str:
        return " ".join(vocab[i] for i in rng.choice(n_words, n, p=p))

    return [text(60) for _ in range(4000)]


LANGS = {"a": _language(1, "abcdefghij"), "b": _language(2, "efghijklmn"),
         "c": _language(3, "jklmnopqrs")}


def _train(mixture: dict[str, float], path, total: int = 600_000, vocab: int = 700) -> dict:
    """A byte-level BPE trained on ``mixture`` of the first half of each language's texts;
    returns the exact byte mixture it saw."""
    texts, got = [], {}
    for c, a in mixture.items():
        n = 0
        for t in LANGS[c][:2000]:
            if n >= a * total:
                break
            texts.append(t)
            n += len(t.encode())
        got[c] = n
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(texts, trainers.BpeTrainer(
        vocab_size=vocab, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.save(str(path))
    s = sum(got.values())
    return {c: v / s for c, v in got.items()}


def _recount(words: Counter, merges, t: int) -> Counter:
    """Pair counts after the first t merges, merging each word from scratch."""
    out: Counter = Counter()
    for w, n in words.items():
        sym = list(w)
        for a, b in merges[:t]:
            i, new = 0, []
            while i < len(sym):
                if i + 1 < len(sym) and sym[i] == a and sym[i + 1] == b:
                    new.append(a + b)
                    i += 2
                else:
                    new.append(sym[i])
                    i += 1
            sym = new
        for p in zip(sym, sym[1:], strict=False):
            out[p] += n
    return out


def test_replayed_counts_equal_a_recount(tmp_path):
    _train({"a": 0.5, "b": 0.5}, tmp_path / "tok.json", total=100_000, vocab=400)
    bpe = load_bpe(tmp_path / "tok.json")
    words = [words_of(bpe, LANGS[c][2000:2100]) for c in ("a", "b")]
    rep = MergeReplay(words).run(bpe.merges)
    for t in (0, 1, 7, 40, len(bpe.merges) - 1):
        want = [_recount(w, bpe.merges, t) for w in words]
        got = {rep.pair_name(p): rep.count_at(p, t) for p in range(rep.n_pairs)}
        for pair in set(want[0]) | set(want[1]) | set(got):
            counts = got.get(pair, np.zeros(2))
            assert counts.tolist() == [want[0][pair], want[1][pair]], (t, pair)
    # the merged pair's count is the replay's count just before it
    for t in (3, 20):
        pid = rep.merge_ids[t]
        assert (rep.merge_counts[t] == rep.count_at(pid, t)).all()


@pytest.mark.parametrize("mixture", [{"a": 0.7, "b": 0.3}, {"a": 0.5, "b": 0.2, "c": 0.3}],
                         ids=["2 categories", "3 categories"])
def test_the_lp_recovers_a_known_mixture(tmp_path, mixture):
    truth = _train(mixture, tmp_path / "tok.json")
    bpe = load_bpe(tmp_path / "tok.json")
    # samples: other texts of the same languages (the second half), ~150 KB each
    samples = {c: LANGS[c][2000:2400] for c in mixture}
    alpha, info = infer_mixture(bpe, samples, seed=0)
    assert info["rounds"] >= 1 and info["constraints"] > 0
    for c in mixture:
        assert abs(alpha[c] - truth[c]) < 0.02, (alpha, truth)
    assert abs(sum(alpha.values()) - 1) < 1e-9


def test_errors(tmp_path):
    wp = Tokenizer(models.WordPiece({"[UNK]": 0, "a": 1, "##b": 2}, unk_token="[UNK]"))
    wp.save(str(tmp_path / "wp.json"))
    with pytest.raises(InputError, match="WordPiece tokenizer: only BPE"):
        load_bpe(tmp_path / "wp.json")
    _train({"a": 0.5, "b": 0.5}, tmp_path / "tok.json", total=50_000, vocab=300)
    bpe = load_bpe(tmp_path / "tok.json")
    with pytest.raises(InputError, match='category "b" has .* bytes'):
        infer_mixture(bpe, {"a": LANGS["a"][2000:2400], "b": LANGS["b"][:5]})
    with pytest.raises(InputError, match="at least 2 categories"):
        infer_mixture(bpe, {"a": LANGS["a"]})


def test_prefix_and_pair_weight(tmp_path):
    """Solving over the first T merges of a long replay is solving a replay of T merges; the
    objective is merge slack + pair_weight x pair slack."""
    from anatomy.mixture.tokenizer_mixture import choose_samples, solve_mixture

    _train({"a": 0.6, "b": 0.4}, tmp_path / "tok.json", total=200_000, vocab=500)
    bpe = load_bpe(tmp_path / "tok.json")
    cats, chosen, denoms = choose_samples({c: LANGS[c][2500:2700] for c in ("a", "b")})
    words = [words_of(bpe, chosen[c]) for c in cats]
    full = MergeReplay(words).run(bpe.merges)
    short = MergeReplay(words).run(bpe.merges[:60])
    a = solve_mixture(full, denoms, merges=60)
    b = solve_mixture(short, denoms)
    assert np.allclose(a.alpha, b.alpha, atol=1e-9) and a.constraints == b.constraints
    for w in (1.0, 0.25):
        r = solve_mixture(full, denoms, pair_weight=w)
        assert r.objective == pytest.approx(r.merge_slack + w * r.pair_slack, rel=1e-6)


def test_baselines_against_a_direct_count(tmp_path):
    """TEE = bytes per token, normalised; TC = merged tokens voted to the category where they
    are most frequent per byte: both recomputed here from plain per-text encodings."""
    from anatomy.mixture.tokenizer_mixture import baseline_mixtures

    _train({"a": 0.5, "b": 0.3, "c": 0.2}, tmp_path / "tok.json", total=150_000, vocab=420)
    bpe = load_bpe(tmp_path / "tok.json")
    samples = {c: LANGS[c][3000:3050] for c in ("a", "b", "c")}
    tok = bpe.tokenizer
    ratio, freq = {}, {}
    for c, texts in samples.items():
        nbytes = sum(len(t.encode()) for t in texts)
        toks = Counter(x for t in texts for x in tok.encode(t, add_special_tokens=False).tokens)
        ratio[c] = nbytes / sum(toks.values())
        freq[c] = {x: n / nbytes for x, n in toks.items()}
    base = baseline_mixtures(bpe, samples)
    tee = base["TEE"]
    for c in samples:
        assert tee[c] == pytest.approx(ratio[c] / sum(ratio.values()), rel=1e-12)
    votes = Counter()
    for a, b in bpe.merges:
        f = [freq[c].get(a + b, 0.0) for c in sorted(samples)]
        if max(f) > 0:
            votes[sorted(samples)[int(np.argmax(f))]] += 1
    tc = base["TC"]
    for c in samples:
        assert tc[c] == pytest.approx(votes[c] / sum(votes.values()), rel=1e-12)


def test_dropping_slack_rows_reaches_the_full_lps_optimum(tmp_path):
    """Rows slack for two rounds are deleted (and may come back): the optimum equals the one
    of the solver that keeps every row (objective within 1e-6 relative), with fewer rows in
    the model at the end. Samples from other documents than the training text, so that
    merges have violating competitors to drop."""
    from anatomy.mixture.tokenizer_mixture import choose_samples, solve_mixture

    _train({"a": 0.3, "b": 0.5, "c": 0.2}, tmp_path / "tok.json", total=300_000, vocab=900)
    bpe = load_bpe(tmp_path / "tok.json")
    cats, chosen, denoms = choose_samples({c: LANGS[c][2500:2900] for c in ("a", "b", "c")})
    rep = MergeReplay([words_of(bpe, chosen[c]) for c in cats]).run(bpe.merges)
    keep = solve_mixture(rep, denoms, drop_after=0)
    drop = solve_mixture(rep, denoms)
    assert keep.info["converged"] and drop.info["converged"]
    assert keep.info["rows_dropped"] == 0 and drop.info["rows_dropped"] > 0
    assert drop.objective == pytest.approx(keep.objective, rel=1e-6)  # (alpha may differ
    # where the optimum is not unique; the objective is what both must reach)
    assert drop.constraints < keep.constraints == keep.info["rows_added"]


def test_violation_scan_equals_a_brute_force_scan(tmp_path):
    """The scan (entry scores, range-minimum candidate filter, heap over candidates) returns,
    per merge, the highest-scoring pairs that beat it, skipping constraints already in the
    model, up to ``competitors``: checked against every pair's score at every merge from an
    independent recount (``_recount``), with random weights and slacks."""
    from anatomy.mixture.tokenizer_mixture import _violations

    _train({"a": 0.5, "b": 0.5}, tmp_path / "tok.json", total=80_000, vocab=360)
    bpe = load_bpe(tmp_path / "tok.json")
    words = [words_of(bpe, LANGS[c][2000:2080]) for c in ("a", "b")]
    rep = MergeReplay(words).run(bpe.merges)
    T = len(bpe.merges) - 5
    rng = np.random.default_rng(0)
    recounts = [[_recount(wd, bpe.merges, t) for wd in words] for t in range(T)]
    name_id = {rep.pair_name(p): p for p in range(rep.n_pairs)}
    for trial in range(3):
        w = rng.uniform(0.2, 1.0, 2)
        vt = rng.exponential(5.0, T) * (rng.random(T) < 0.5)
        vp = rng.exponential(5.0, rep.n_pairs) * (rng.random(rep.n_pairs) < 0.3)
        done = {(int(t), int(p)) for t, p in zip(rng.integers(0, T, 40),
                                                 rng.integers(0, rep.n_pairs, 40), strict=True)}
        k = 1 + trial * 3
        got, excess = _violations(rep, w, vt, vp, done, k, 1e-9, T)
        want, want_excess = [], 0.0
        for t in range(T):
            merged = (bpe.merges[t][0], bpe.merges[t][1])
            if merged not in name_id or rep.merge_ids[t] < 0:
                continue
            score = {}
            for pair in set(recounts[t][0]) | set(recounts[t][1]):
                c = np.array([recounts[t][0][pair], recounts[t][1][pair]], float)
                score[name_id[pair]] = c @ w - vp[name_id[pair]]
            m = name_id[merged]
            cm = np.array([recounts[t][0][merged], recounts[t][1][merged]], float)
            cutoff = cm @ w + vt[t] + 1e-9
            beat = sorted((-s, p) for p, s in score.items() if s > cutoff and p != m)
            want += [(t, p) for _, p in beat if (t, p) not in done][:k]
            want_excess += max(0.0, max(score.values(), default=0.0) - (cutoff - 1e-9))
        assert [(t, p) for t, p, _ in got] == want
        assert excess == pytest.approx(want_excess, rel=1e-9) and excess > 0
        assert len(want) > 20
        # each found entry holds the pair's counts at that merge
        for t, p, e in got[:50]:
            assert (rep.entries().counts[e] == rep.count_at(p, t)).all()


def test_the_gap_bounds_the_full_optimum(tmp_path):
    """Each round's objective is a lower bound of the full LP's optimum, and it plus every
    merge's largest violation an upper bound: a run stopped at ``gap`` has an objective at
    most the exact optimum and within ``gap`` of it; the exact run ends with a gap of ~0.
    Checked against the exact optimum of the solver that keeps every row."""
    from anatomy.mixture.tokenizer_mixture import choose_samples, solve_mixture

    _train({"a": 0.3, "b": 0.5, "c": 0.2}, tmp_path / "tok.json", total=300_000, vocab=900)
    bpe = load_bpe(tmp_path / "tok.json")
    cats, chosen, denoms = choose_samples({c: LANGS[c][2500:2900] for c in ("a", "b", "c")})
    rep = MergeReplay([words_of(bpe, chosen[c]) for c in cats]).run(bpe.merges)
    exact = solve_mixture(rep, denoms, drop_after=0)
    assert exact.info["stop"] == "optimal" and exact.info["gap"] < 1e-9
    same = solve_mixture(rep, denoms)  # the defaults, to the end
    loose = solve_mixture(rep, denoms, gap=0.05)
    assert loose.info["stop"] == "gap" and loose.info["gap"] <= 0.05
    assert loose.rounds < same.rounds and same.info["gap"] < 1e-9
    assert loose.objective <= exact.objective * (1 + 1e-9)
    assert exact.objective <= loose.objective * (1 + loose.info["gap"]) * (1 + 1e-9)
