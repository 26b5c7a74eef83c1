"""Pipeline B's model-dependent arms: the domain classifier, run_labelshift, run_minkpp_mix.

Independent checks: the classifier on synthetic texts whose class is known by construction;
the label-shift arm on "generations" that are real, never-trained miniworld documents mixed
in known proportions (the known mixture is the reference; the classifier never saw these
texts); generation sharded over two "ranks" against one process; the Min-K%++ arm's stored
scores against a direct computation with lm.token_stats + scores.min_k_plus_plus; output
formats through evaluate.load_priors (the benchmark's reader).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from anatomy import classifiers, io
from anatomy.io import InputError
from anatomy.mixture import classifier as clf_mod
from anatomy.mixture import evaluate, pipeline

_WORDS = {
    "code": "def return import class self lambda yield for while if else try except",
    "prose": "the river mountain village morning quiet people walked under sky",
    "data": "0 1 2 3 4 5 6 7 8 9 , ; 0.5 1e3 -7 42 3.14 | NaN NULL",
}
VOCAB = {c: w.split() for c, w in _WORDS.items()}
SHARED = ["and", "of", "to", "in", "a", "is"]


def _synthetic(n_per: int, seed: int) -> clf_mod.CategorySamples:
    """Texts of 30 words: 60% from the class vocabulary, 40% shared filler words."""
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for j, c in enumerate(VOCAB):
        for _ in range(n_per):
            words = [rng.choice(VOCAB[c]) if rng.random() < 0.6 else rng.choice(SHARED)
                     for _ in range(30)]
            texts.append(" ".join(words))
            labels.append(j)
    return clf_mod.CategorySamples(texts, np.array(labels), list(VOCAB), {})


def test_tfidf_classifier_accurate_and_deterministic():
    s = _synthetic(40, 0)
    a = clf_mod.train_domain_classifier(s, "tfidf", val_fraction=0.3, seed=3)
    b = clf_mod.train_domain_classifier(s, "tfidf", val_fraction=0.3, seed=3)
    assert a.val_accuracy >= 0.95  # the classes share only filler words
    assert a.logits_val.shape == (3 * 12, 3)
    np.testing.assert_array_equal(a.logits_val, b.logits_val)
    test = _synthetic(20, 1)
    Z = a.classifier.logits(test.texts)
    assert np.mean(Z.argmax(1) == test.labels) >= 0.95


def test_encoder_classifier_deterministic():
    s = _synthetic(6, 0)
    kw = {"epochs": 1, "batch_size": 6, "max_length": 32, "device": "cpu", "precision": "fp32"}
    za = classifiers.make_classifier("minilm", **kw).fit(s.texts, s.labels, seed=1).logits(s.texts)
    zb = classifiers.make_classifier("minilm", **kw).fit(s.texts, s.labels, seed=1).logits(s.texts)
    assert za.shape == (18, 3)
    np.testing.assert_array_equal(za, zb)


def test_stratified_split_and_sample_loading(tmp_path):
    y = np.repeat([0, 1, 2], [10, 20, 7])
    tr, va = classifiers.stratified_split(y, 0.3, seed=0)
    assert np.intersect1d(tr, va).size == 0 and tr.size + va.size == y.size
    assert np.bincount(y[va]).tolist() == [3, 6, 2]  # round(0.3 * n) per class
    for name in ("commoncrawl", "c4", "github"):
        io.write_jsonl(tmp_path / f"{name}.jsonl", [{"text": f"{name} {i}"} for i in range(4)])
    s = clf_mod.load_category_samples(tmp_path, merge_web=True)
    assert s.categories == ["github", "web"]
    assert np.bincount(s.labels).tolist() == [4, 8]
    # every record not used is counted: blank texts, and what the balance cap cut
    io.write_jsonl(tmp_path / "github.jsonl", [{"text": "a b"}, {"text": "  "},
                                               {"text": "c d"}, {"text": ""}])
    s = clf_mod.load_category_samples(tmp_path, merge_web=True, balance=True)
    assert s.dropped == {"blank": {"github": 2, "web": 0}, "capped": {"github": 0, "web": 6}}
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"txt": 1}\n')
    with pytest.raises(InputError, match="bad.jsonl:2"):
        clf_mod.load_category_samples(tmp_path)


@pytest.fixture(scope="module")
def world_samples(tiny_world, tmp_path_factory):
    """All pool documents of the tiny world as local samples, plus never-trained documents."""
    from anatomy.mixture.slimpajama import fetch_category_samples

    truth = io.read_json(tiny_world / "truth.json")
    d = tmp_path_factory.mktemp("mix") / "samples"
    fetch_category_samples(tiny_world / "pools", 1000, d, seed=0,
                           mapping=truth["pools"]["set_names"])
    fresh = pipeline.world_reference_nonmembers(tiny_world, n_per_category=60)
    return d, fresh, truth


def test_labelshift_recovers_known_mixture(world_samples, tmp_path):
    samples, fresh, truth = world_samples
    cats = truth["categories"]
    counts = dict(zip(cats, [60, 33, 21, 15, 12, 9], strict=True))  # known mixture
    by_cat = {c: [r["text"] for r in fresh if r["category"] == c] for c in cats}
    gens = [{"text": t} for c in cats for t in by_cat[c][:counts[c]]]
    assert len(gens) == sum(counts.values())  # enough fresh documents of every category
    io.write_jsonl(tmp_path / "gens.jsonl", gens)
    s = pipeline.run_labelshift(samples, tmp_path, "run", cached_generations=tmp_path /
                                "gens.jsonl", n_boot=30, seed=0, plots=False)
    truth_mix = {c: counts[c] / len(gens) for c in cats}
    rows = evaluate.compare({"em_bcts": evaluate.load_priors(tmp_path / "run", "em_bcts")},
                            truth_mix)
    acc = {r["name"]: r["accuracy"] for r in rows}
    # measured 0.93-0.94 (tiny world, seeds 0-2); uniform scores 0.71 against this mixture
    assert acc["em_bcts"] >= 0.8 and acc["em_bcts"] > acc["uniform"] + 0.05
    assert set(s["estimates"]) == set(pipeline.ls.METHODS)
    for m in s["estimates"]:
        e = evaluate.load_priors(tmp_path / "run" / "estimators" / m)
        assert e.values == pytest.approx(s["estimates"][m]) and e.fmt == "ours"
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "done.json", "estimators", "summary.csv", "summary.json"]
    # the same inputs and flags: skipped, the recorded summary returned
    again = pipeline.run_labelshift(samples, tmp_path, "run", cached_generations=tmp_path /
                                    "gens.jsonl", n_boot=30, seed=0, plots=False)
    assert again == json.loads((tmp_path / "run" / "summary.json").read_text())
    with pytest.raises(InputError, match="n_boot 30 -> 200"):
        pipeline.run_labelshift(samples, tmp_path, "run", cached_generations=tmp_path /
                                "gens.jsonl", seed=0, plots=False)


def test_generation_ranks_and_cached_rerun(tiny_world, world_samples, tmp_path):
    from anatomy.execution import Ranks
    from anatomy.lm import load_causal_lm, load_tokenizer

    model = load_causal_lm(tiny_world / "model", device="cpu")
    tok = load_tokenizer(tiny_world / "model")
    sep = pipeline.separator_id(model, tok)
    assert sep == io.read_json(tiny_world / "truth.json")["eos_token_id"] != tok.eos_token_id
    kw = dict(n=6, max_new_tokens=12, batch_size=4, seed=7, progress=False)
    full = pipeline.generate_texts(model, tok, **kw)
    # two ranks, each computing only its whole batches, merged in unit order
    work = pipeline.GenerationWork(tok, 6, 12, sep, batch_size=4, seed=7)
    work.model = model
    assert work.n_units == 2
    done = {u: work.compute_unit(u) for r in (0, 1) for u in Ranks(r, 2).units(2)}
    assert list(work.records(done.__getitem__)) == full
    neutral = pipeline.generate_texts(model, tok, prompt_mode="neutral", **kw)
    assert [r["prompt"] for r in neutral] == list(pipeline.NEUTRAL_PROMPTS)
    assert all(r["text"].startswith(r["prompt"]) for r in neutral)

    samples = world_samples[0]
    s1 = pipeline.run_labelshift(samples, tmp_path, "gen", target_model=str(tiny_world / "model"),
                                 num_prompts=8, max_new_tokens=16, n_boot=5, batch_size=4)
    out = tmp_path / "gen"
    for f in ("generations.jsonl", "summary.json", "summary.csv", "confusion_matrix.png",
              "priors.png", "pbar_vs_ctpi.png"):
        assert (out / f).is_file(), f
    assert len(io.read_jsonl(out / "generations.jsonl")) == 8
    s2 = pipeline.run_labelshift(samples, tmp_path, "cached", n_boot=5, plots=False,
                                 cached_generations=out / "generations.jsonl")
    assert s2["estimates"] == s1["estimates"] and s2["priors"] == s1["priors"]


def test_run_minkpp_mix_int8(tiny_world, world_samples, tmp_path):
    from anatomy.lm import load_causal_lm, load_tokenizer, token_stats, tokenize_texts
    from anatomy.scores import min_k_plus_plus

    samples, fresh, truth = world_samples
    ref = tmp_path / "ref.jsonl"
    io.write_jsonl(ref, [{"text": r["text"], "category": r["category"]} for r in fresh[::5]])
    s = pipeline.run_minkpp_mix(samples, tmp_path, "mk", target_model=str(tiny_world / "model"),
                                int8=True, reference_nonmembers=ref, n_boot=10, seed=0,
                                max_per_class=10, progress=False)
    out = tmp_path / "mk"
    for f in ("summary.json", "per_category.csv", "global_mixture.csv", "scores.jsonl"):
        assert (out / f).is_file(), f
    cats = truth["categories"]
    mix = s["global_mixture_over_sampled_pool"]
    assert sorted(mix) == sorted(cats) and sum(mix.values()) == pytest.approx(1.0)
    rows = {r["category"]: r for r in s["per_category"]}
    assert all(0 <= r["pi_hat"] <= 1 and 0 <= r["pi_calibrated"] <= 1 for r in rows.values())
    assert all(r["n"] == 10 and r["reference"] == "category" for r in rows.values())
    # the weights are the pools' sizes (60 each), so the mixture is the renormalised rates
    tot = sum(r["pi_calibrated"] for r in rows.values())
    assert mix == pytest.approx({c: rows[c]["pi_calibrated"] / tot for c in cats})
    est = evaluate.load_priors(out)
    assert est.fmt == "ours" and est.ci_lo is not None and est.values == pytest.approx(mix)
    # stored scores = a direct computation with the scoring engine: the same int8 model, the
    # same batches (dynamic int8 quantises activations per batch, so batches matter: the
    # samples and the reference texts are scored together, in that order) and, as the CPU
    # units ran, one torch thread (thread counts change the last bits of fp32 reductions)
    from anatomy.execution import single_threaded_torch

    sc = clf_mod.load_category_samples(samples, max_per_class=10, seed=0)  # the scored texts
    refs = [t for v in pipeline.load_reference(ref, sc.categories).values() for t in v]
    model = load_causal_lm(tiny_world / "model", int8=True)
    ids = tokenize_texts(load_tokenizer(tiny_world / "model"), sc.texts + refs, 128)
    with single_threaded_torch():
        stats = token_stats(model, ids, batch_size=16, progress=False)
    direct = [min_k_plus_plus(t.logprob, t.mean, t.var, 10.0) for t in stats]
    stored = io.read_jsonl(out / "scores.jsonl")
    assert [r["category"] for r in stored] == [sc.categories[j] for j in sc.labels]
    assert [r["minkpp"] for r in stored] == pytest.approx(direct[:len(sc.texts)], abs=1e-6)
    json.dumps(s)  # the summary is plain JSON
    # the output policy: the same run is skipped (its summary returned), another is refused
    again = pipeline.run_minkpp_mix(samples, tmp_path, "mk", target_model=str(tiny_world /
                                    "model"), int8=True, reference_nonmembers=ref, n_boot=10,
                                    seed=0, max_per_class=10, progress=False)
    assert again == json.loads((out / "summary.json").read_text())
    with pytest.raises(InputError, match="mink_ratio 0.1 -> 0.2"):
        pipeline.run_minkpp_mix(samples, tmp_path, "mk", target_model=str(tiny_world /
                                "model"), int8=True, reference_nonmembers=ref, n_boot=10,
                                seed=0, max_per_class=10, mink_ratio=0.2, progress=False)


def test_a_samples_folder_must_match_its_completion_record(world_samples, tmp_path):
    """A folder fetch_category_samples.py completed is checked against its record before any
    estimate: one category file removed (a killed rewrite), a file changed at the same size
    (sha256), or a file added are one error naming it; the intact folder loads and says how
    it was checked. A folder made by hand (no record) loads as given, with a note. Checked
    against the record's own file list, sizes and per-category row counts, read here."""
    import shutil

    from anatomy.mixture.classifier import load_category_samples

    src, _, _ = world_samples
    rec = io.read_json(src / "fetch_category_samples.done.json")
    assert set(rec["sha256"]) == set(rec["files"])
    ok = load_category_samples(src)
    total = sum(rec["summary"]["kept"].values())
    assert ok.provenance.startswith("checked against its completion record") \
        and f"{total:,} rows" in ok.provenance and "sha256" in ok.provenance

    def copy(name):
        d = tmp_path / name
        shutil.copytree(src, d)
        return d

    gone = copy("gone")
    victim = sorted(rec["summary"]["kept"])[1]
    (gone / f"{victim}.jsonl").unlink()
    with pytest.raises(InputError, match=f"{victim}.jsonl is missing"):
        load_category_samples(gone)
    with pytest.raises(InputError, match="completion record"):
        pipeline.run_labelshift(gone, tmp_path / "out", "x", n_boot=5, plots=False)
    same_size = copy("same_size")
    f = same_size / f"{victim}.jsonl"
    b = bytearray(f.read_bytes())
    i = b.index(b'"text": "') + 9
    b[i] = ord("Q") if b[i] != ord("Q") else ord("R")
    f.write_bytes(bytes(b))
    with pytest.raises(InputError, match=r"differs from the record \(sha256\)"):
        load_category_samples(same_size)
    extra = copy("extra")
    shutil.copy(extra / f"{victim}.jsonl", extra / "stowaway.jsonl")
    with pytest.raises(InputError, match="stowaway.jsonl is not in the record"):
        load_category_samples(extra)
    by_hand = tmp_path / "by_hand"
    by_hand.mkdir()
    for c in sorted(rec["summary"]["kept"])[:3]:
        shutil.copy(src / f"{c}.jsonl", by_hand)
    s = load_category_samples(by_hand)
    assert s.provenance.startswith("no completion record") and len(s.categories) == 3
