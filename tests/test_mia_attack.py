"""anatomy.mia.attack, anatomy.mia.table and the run_mia.py / make_table.py scripts.

Independent computations: every one-pass score against ``scores.all_scores`` on a
single-example, unbatched ``token_stats`` call per text (``ref`` = the two models' mean
log-probs subtracted by hand); metrics against sklearn's ``roc_auc_score``; EM-MIA against
``emmia.em_mia`` on a ReCaLL matrix computed directly; torchrun sharding against the
one-process result (2 and 3 ranks' units merged, bit-identical, each rank running its share
of the forward passes, counted); table cells against numbers
written into fake results folders; AUROC by count against sklearn on the hand-picked subset.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import make_table
import run_mia
from anatomy import io, lm, scores
from anatomy.io import InputError
from anatomy.mia import attack, emmia, table
from tests.test_lm import tiny_olmo

WORDS = ["the", "model", "saw", "this", "text", "during", "training", "while", "that", "one",
         "stayed", "out", "of", "data", "membership", "inference", "asks", "which",
         "documents", "were", "seen", "and", "not"]


def make_texts(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(4, 14)))) for _ in range(n)]


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<eos>", "<pad>"],
                                  show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(make_texts(200, seed=9) + [" ".join(WORDS)] * 3, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>")


@pytest.fixture(scope="module")
def models(tokenizer):
    torch.set_num_threads(1)
    v = len(tokenizer)
    return tiny_olmo(seed=0, vocab=v), tiny_olmo(seed=1, vocab=v)


def make_records(n: int = 12, seed: int = 0) -> list[dict]:
    texts = make_texts(n, seed)
    return [{"input": t, "label": i % 2, "doc": 100 + i} for i, t in enumerate(texts)]


def test_score_records_match_per_example_scores(models, tokenizer):
    model, ref = models
    records = make_records()
    rows, metrics = attack.score_records(records, model, tokenizer, ref_model=ref,
                                         batch_size=5, progress=False)
    names = attack.score_names((*attack.DEFAULT_METHODS, "ref"))
    assert "recall_wavg" not in metrics and "blind" in metrics
    assert list(metrics) == names and names[:3] == ["loss", "zlib", "mink_10"]
    labels = [r["label"] for r in records]
    for i, (rec, row) in enumerate(zip(records, rows, strict=True)):
        assert list(row) == ["index", "label", "doc", "scores"]
        assert (row["index"], row["label"], row["doc"]) == (i, rec["label"], rec["doc"])
        ids = lm.tokenize_texts(tokenizer, [rec["input"]])
        one = lm.token_stats(model, ids, batch_size=1, progress=False)[0]
        want = scores.all_scores(one, rec["input"])
        ref_one = lm.token_stats(ref, ids, batch_size=1, progress=False)[0]
        want["ref"] = float(np.mean(one.logprob, dtype=np.float64)
                            - np.mean(ref_one.logprob, dtype=np.float64))
        for k, v in want.items():  # batching changes fp32 rounding; z-scores amplify it
            assert row["scores"][k] == pytest.approx(v, abs=1e-5, rel=1e-4), k
    for name in names:
        s = [r["scores"][name] for r in rows]
        assert metrics[name]["auroc"] == pytest.approx(roc_auc_score(labels, s), abs=1e-12)
        assert set(metrics[name]) == {"auroc", "tpr@0.1%", "tpr@1%", "tpr@5%", "bal_acc",
                                      "ci"}
        lo, hi = metrics[name]["ci"]["auroc"]
        assert 0 <= lo <= hi <= 1
    # EM-MIA: em_mia on the ReCaLL matrix of the texts themselves, started from Min-K%++ 20%
    ids = lm.tokenize_texts(tokenizer, [r["input"] for r in records])
    init = np.array([r["scores"]["minkpp_20"] for r in rows])
    want = emmia.em_mia(emmia.recall_matrix(model, ids, ids, batch_size=5, progress=False),
                        init)
    np.testing.assert_allclose([r["scores"]["emmia"] for r in rows], want, atol=1e-12)


def test_methods_subset_truncation_and_errors(models, tokenizer):
    model, _ = models
    records = make_records(8, seed=1)
    rows, metrics = attack.score_records(records, model, tokenizer, methods=["loss", "zlib"],
                                         max_tokens=5, progress=False)
    assert list(metrics) == ["loss", "zlib"]
    for rec, row in zip(records, rows, strict=True):
        ids = lm.tokenize_texts(tokenizer, [rec["input"]], max_tokens=5)
        one = lm.token_stats(model, ids, progress=False)[0]
        text = tokenizer.decode(ids[0])  # zlib sees the truncated text
        assert row["scores"]["zlib"] == pytest.approx(
            scores.zlib_ratio(scores.loss(one.logprob), text), abs=1e-6)
    with pytest.raises(InputError, match="needs a reference model"):
        attack.score_records(records, model, tokenizer, methods=["ref"], progress=False)
    with pytest.raises(InputError, match='"label" must be 0 or 1'):
        attack.score_records([{"input": "a b", "label": 2}], model, tokenizer, progress=False)
    with pytest.raises(InputError, match="needs members"):
        attack.score_records([{"input": "a b c", "label": 1}] * 3, model, tokenizer,
                             progress=False)
    with pytest.raises(InputError, match="fewer than 2"):
        attack.score_records(records + [{"input": "", "label": 0}], model, tokenizer,
                             progress=False)


def test_recall_wavg_prefix_subset(models, tokenizer):
    """A prefix subset is recall_wavg, our estimator; EM-MIA always uses every prefix."""
    model, _ = models
    records = make_records(10, seed=2)
    rows, metrics = attack.score_records(records, model, tokenizer,
                                         methods=["minkpp", "recall_wavg"], n_prefix=4, seed=7,
                                         progress=False)
    assert "emmia" not in metrics and "recall_wavg" in metrics
    ids = lm.tokenize_texts(tokenizer, [r["input"] for r in records])
    pick = np.sort(np.random.default_rng(7).choice(10, 4, replace=False))
    recall = emmia.recall_matrix(model, [ids[i] for i in pick], ids, progress=False)
    init = np.array([r["scores"]["minkpp_20"] for r in rows])
    np.testing.assert_allclose([r["scores"]["recall_wavg"] for r in rows],
                               attack.recall_weighted_avg(recall, init), atol=1e-9)
    with pytest.raises(InputError, match="EM-MIA always uses every text"):
        attack.score_records(records, model, tokenizer, methods=["minkpp", "emmia"],
                             n_prefix=4, progress=False)
    with pytest.raises(InputError, match='"recall_wavg" needs --n_prefix'):
        attack.score_records(records, model, tokenizer, methods=["recall_wavg"],
                             progress=False)


def test_recall_weighted_avg_recovers_labels():
    """Synthetic ReCaLL rows (tests/test_emmia.py's construction) with 40 of 200 prefixes."""
    from anatomy.metrics import auroc
    from tests.test_emmia import synthetic

    recall, weak, labels = synthetic(seed=1)
    pick = np.sort(np.random.default_rng(0).choice(200, 40, replace=False))
    assert auroc(weak, labels) < 0.7
    assert auroc(attack.recall_weighted_avg(recall[pick], weak), labels) > 0.99


def _count_forwards(model) -> list[int]:
    calls = [0]
    model.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


def test_ranks_share_units_and_equal_one(models, tokenizer):
    """Ranks of 2 and 3 compute disjoint shares of the units (forward passes counted with a
    hook) whose merge is bit-identical to one process's result."""
    from anatomy.execution import Ranks, UnitPlan

    model, ref = models
    records = make_records(11, seed=3)
    kw = dict(has_ref=True, methods=None, batch_size=3, n_prefix=5, prefix_block=2)
    # the defaults, ref, and recall_wavg (n_prefix): EM-MIA's 11 prefixes in blocks of 2
    rows_one, metrics_one = attack.score_records(records, model, tokenizer, ref_model=ref,
                                                 batch_size=3, n_prefix=5, prefix_block=2,
                                                 progress=False)
    ref_calls = _count_forwards(ref)
    for world in (2, 3):
        work = attack.MiaWork(records, tokenizer, **kw)
        work.model, work.ref_model = model, ref
        assert work.plan.counts == {"score": 4, "ref": 4, "recall": 6}
        done, shares = {}, []
        for r in range(world):
            mine = Ranks(r, world).units(work.n_units)
            kinds = [work.plan.locate(u)[0] for u in mine]
            ref_calls[0] = 0
            done.update({u: work.compute_unit(u) for u in mine})
            assert ref_calls[0] == kinds.count("ref")  # one forward per own batch, no more
            shares.append(kinds.count("score") + kinds.count("ref"))
        assert sorted(done) == list(range(work.n_units)) and sum(shares) == 8
        assert max(shares) - min(shares) <= 1  # each rank ran ~1/W of the batches
        rows, metrics = work.finish(done.__getitem__)
        assert rows == rows_one and metrics == metrics_one
    assert UnitPlan(score=3, recall=2).locate(4) == ("recall", 1)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory, models, tokenizer):
    """A folder shaped like a miniworld's model/ (two checkpoints) and a toy dataset."""
    root = tmp_path_factory.mktemp("mia")
    for i, rev in enumerate(["step10-tokens5K", "step20-tokens10K"]):
        models[i].save_pretrained(root / "world" / "model" / rev)
    tokenizer.save_pretrained(root / "world" / "model")
    io.write_jsonl(root / "data" / "toy.jsonl", make_records(10, seed=4))
    return root


def test_run_mia_end_to_end(tiny_world, capsys):
    out = tiny_world / "results"
    argv = ["--dataset", "toy", "--data_dir", str(tiny_world / "data"), "--world",
            str(tiny_world / "world"), "--step", "20", "--ref_model",
            str(tiny_world / "world" / "model"), "--ref_step", "10", "--output_dir", str(out),
            "--batch_size", "4", "--quiet"]
    assert run_mia.main(argv) == 0
    run = out / "toy" / "step20-tokens10K"
    doc = io.read_json(run / "metrics.json")
    rows = io.read_jsonl(run / "scores.jsonl")
    assert doc["config"]["revision"] == "step20-tokens10K"
    assert doc["config"]["ref_revision"] == "step10-tokens5K"
    assert set(doc["metrics"]) == set(attack.score_names((*attack.DEFAULT_METHODS, "ref")))
    assert [r["index"] for r in rows] == list(range(10)) and "input" not in rows[0]
    auc = roc_auc_score([r["label"] for r in rows], [r["scores"]["loss"] for r in rows])
    assert doc["metrics"]["loss"]["auroc"] == pytest.approx(auc, abs=1e-12)
    printed = capsys.readouterr().out
    assert f"| loss | {100 * auc:.1f} |" in printed
    before = {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()}
    assert run_mia.main(argv) == 0  # exists: skipped, files untouched
    assert {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in run.iterdir()} == before
    assert run_mia.main(argv + ["--overwrite"]) == 0  # recomputed, byte-identical
    assert {p.name: p.read_bytes() for p in run.iterdir()} == \
        {k: v[0] for k, v in before.items()}
    with pytest.raises(InputError, match=r"other inputs or flags: batch_size 4 -> 3"):
        run_mia.main(argv[:-3] + ["--batch_size", "3", "--quiet"])
    with pytest.raises(InputError, match="dataset not found"):
        run_mia.main(argv[:1] + ["nope"] + argv[2:])


def test_run_mia_bad_label_is_input_error(tiny_world):
    io.write_jsonl(tiny_world / "data" / "bad.jsonl",
                   [{"input": "a b c", "label": 1}, {"input": "d e f", "label": "x"}])
    with pytest.raises(InputError, match=r"bad\.jsonl: record 2: \"label\""):
        run_mia.main(["--dataset", "bad", "--data_dir", str(tiny_world / "data"),
                      "--world", str(tiny_world / "world"), "--step", "10", "--output_dir",
                      str(tiny_world / "r2"), "--quiet"])


def _fake_run(root, dataset, ckpt, aucs, rows=None, inverted=()):
    """A run_mia metrics file: 50 members and 50 non-members (the chance band their counts
    give, anatomy.metrics.null_band), each AUROC with a +-0.1 interval."""
    from anatomy.metrics import null_band

    metrics = {m: {"auroc": a, "tpr@0.1%": 0.0, "tpr@1%": a / 10, "tpr@5%": 0.2,
                   "bal_acc": 0.5, "ci": {"auroc": [a - 0.1, a + 0.1]}}
               for m, a in aucs.items()}
    io.write_json(root / dataset / ckpt / "metrics.json",
                  {"config": {}, "metrics": metrics, "null_band": null_band(50, 50),
                   "emmia": {m: {"inverted": True} for m in inverted}})
    io.write_jsonl(root / dataset / ckpt / "scores.jsonl", rows or [])


def test_make_table_cells(tmp_path, capsys):
    r = tmp_path / "results"
    # written out of step order: columns must come out 40 before 120
    _fake_run(r, "w_64_100_easy", "step120-tokens9K", {"loss": 0.612, "minkpp_20": 0.7})
    _fake_run(r, "w_64_100_easy", "step40-tokens3K", {"loss": 0.75, "minkpp_20": 0.5004})
    _fake_run(r, "w_64_100_hard", "step40-tokens3K", {"loss": 0.55, "minkpp_20": 0.549})
    assert make_table.main(["--results_dir", str(r), "--datasets", "w_64_100_easy",
                            "w_64_100_hard"]) == 0
    md = capsys.readouterr().out
    lines = md.strip().splitlines()
    # one table per checkpoint (methods x splits), checkpoints in step order
    # bold = outside the chance band of 50 + 50 texts (38.4-61.4), not the column's best:
    # hard's 55.0 is its best and still chance
    assert lines[0] == "| AUROC x100 [95 % interval], step40 | easy | hard |"
    assert lines[2] == "| Loss | **75.0 [65, 85]** | 55.0 [45, 65] |"
    assert lines[3] == "| Min-K%++ 20% | 50.0 [40, 60] | 54.9 [45, 65] |"
    assert lines[5] == ("chance band (95 % of label permutations; bold = outside it): "
                        "easy 38.4-61.4, hard 38.4-61.4")
    assert lines[7] == "| AUROC x100 [95 % interval], step120 | easy |"
    assert lines[9:11] == ["| Loss | 61.2 [51, 71] |", "| Min-K%++ 20% | **70.0 [60, 80]** |"]
    assert (r / "table.md").read_text() == md.strip() + "\n"
    assert (r / "table.csv").read_text().splitlines()[1] == "loss,75.0,55.0,61.2"
    assert (r / "table.png").read_bytes()[:4] == b"\x89PNG"
    make_table.main(["--results_dir", str(r), "--datasets", "w_64_100_easy", "--metric",
                     "tpr@1%", "--methods", "minkpp"])
    out = capsys.readouterr().out.strip().splitlines()
    # no TPR@1% band on 50 non-members (one false positive is already 2 %): nothing bold
    assert out[2] == "| Min-K%++ 20% | 5.0 |" and out[6] == "| Min-K%++ 20% | 7.0 |"
    assert (r / "table_tpr1.md").is_file()
    with pytest.raises(InputError, match="no results for this dataset"):
        make_table.main(["--results_dir", str(r), "--datasets", "w_64_100_nope"])
    # the output policy: same results and flags leave the files; new results are refused
    args = ["--results_dir", str(r), "--datasets", "w_64_100_easy", "w_64_100_hard"]
    mtime = (r / "table.md").stat().st_mtime_ns
    assert make_table.main(args) == 0 and (r / "table.md").stat().st_mtime_ns == mtime
    _fake_run(r, "w_64_100_hard", "step40-tokens3K", {"loss": 0.56, "minkpp_20": 0.549})
    with pytest.raises(InputError, match=r"input w_64_100_hard/step40-tokens3K/metrics.json"):
        make_table.main(args)
    assert make_table.main(args + ["--overwrite"]) == 0
    assert "| Loss | **75.0 [65, 85]** | 56.0 [46, 66] |" in (r / "table.md").read_text()


def test_table_marks_only_what_chance_cannot_give(tmp_path, capsys):
    """With the labels of a split permuted, no method is marked (every AUROC inside the
    band); on a clean split a strong method is; an inverted EM-MIA run carries its flag.
    The band is checked against the Mann-Whitney normal approximation, 0.5 +- 1.96 sd."""
    from anatomy.metrics import auroc, null_band

    rng = np.random.default_rng(5)
    y = np.arange(100) < 50
    strong = rng.normal(size=100) + 1.5 * y
    weak = rng.normal(size=100)
    perm = rng.permutation(y)
    r = tmp_path / "results"
    _fake_run(r, "w_64_100_control", "step40-tokens3K",
              {"minkpp_20": auroc(strong, y), "loss": auroc(weak, y), "emmia": 0.2},
              inverted=("emmia",))
    _fake_run(r, "w_64_100_permuted", "step40-tokens3K",
              {"minkpp_20": auroc(strong, perm), "loss": auroc(weak, perm)})
    make_table.main(["--results_dir", str(r), "--datasets", "w_64_100_control",
                     "w_64_100_permuted"])
    md = capsys.readouterr().out
    row = {ln.split(" | ")[0]: ln for ln in md.splitlines() if ln.startswith("| ")}
    cells = row["| Min-K%++ 20%"].split(" | ")
    assert cells[1].startswith("**") and not cells[2].startswith("**")
    assert "**" not in row["| Loss"]
    assert row["| EM-MIA"].endswith("† | - |") and "**20.0" in row["| EM-MIA"]
    assert "converged to the inverted labelling" in md
    sd = np.sqrt((50 + 50 + 1) / (12 * 50 * 50))
    lo, hi = null_band(50, 50)["auroc"]
    assert lo == pytest.approx(0.5 - 1.96 * sd, abs=0.01) and hi == pytest.approx(
        0.5 + 1.96 * sd, abs=0.01)


def test_auroc_by_count(tmp_path, capsys):
    rng = np.random.default_rng(0)
    r = tmp_path / "results"
    planted = [0] * 20 + [1] * 6 + [2] * 6 + [8] * 6
    for ckpt in ("step40-tokens3K", "step80-tokens6K"):
        rows = [{"index": i, "label": int(k > 0), "planted": k,
                 "scores": {"loss": float(k + rng.normal(scale=3)),
                            "minkpp_20": float(rng.normal())}}
                for i, k in enumerate(planted)]
        _fake_run(r, "w_planted", ckpt, {"loss": 0.6, "minkpp_20": 0.5}, rows)
    bc = table.auroc_by_count(r, "w_planted")
    assert bc.counts == [1, 2, 8] and bc.checkpoints == ["step40-tokens3K", "step80-tokens6K"]
    rows = io.read_jsonl(r / "w_planted" / "step80-tokens6K" / "scores.jsonl")
    pick = [x for x in rows if x["planted"] in (0, 8)]
    want = roc_auc_score([x["label"] for x in pick], [x["scores"]["loss"] for x in pick])
    assert bc.auroc["loss"][1, 2] == pytest.approx(want, abs=1e-12)
    make_table.main(["--results_dir", str(r), "--datasets", "w_planted"])
    out = capsys.readouterr().out
    assert "| score | checkpoint | planted=1 | planted=2 | planted=8 |" in out
    line = next(x for x in out.splitlines() if x.startswith("| Loss | step80-tokens6K |"))
    assert line.endswith(f" | {100 * want:.1f} |")
    assert (r / "w_planted" / "by_planted.png").read_bytes()[:4] == b"\x89PNG"
    _fake_run(r, "w_plain", "step40-tokens3K", {"loss": 0.6}, [{"index": 0, "scores": {}}])
    assert table.auroc_by_count(r, "w_plain") is None


@pytest.mark.parametrize("script", [run_mia, make_table])
def test_help(script, capsys):
    with pytest.raises(SystemExit) as e:
        script.main(["--help"])
    assert e.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_blind_baseline_is_cross_validated_bag_of_words(models, tokenizer):
    """blind = out-of-fold scores of word 1-2-gram TF-IDF + LR; checked against sklearn's
    cross_val_predict of the same pipeline, and on a split whose classes differ by topic."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline

    from anatomy.classifiers import WORD_TOKENS

    rng = np.random.default_rng(5)
    topic = {1: ["model", "training", "data", "seen"], 0: ["river", "morning", "quiet", "one"]}
    records = [{"input": " ".join(rng.choice(topic[y] + ["the", "of", "and"], 8)), "label": y}
               for y in (1, 0) * 15]
    rows, metrics = attack.score_records(records, models[0], tokenizer,
                                         methods=["loss", "blind"], seed=3, progress=False)
    texts = [r["input"] for r in records]
    y = np.array([r["label"] for r in records])
    pipe = make_pipeline(TfidfVectorizer(analyzer="word", ngram_range=(1, 2),
                                         token_pattern=WORD_TOKENS, sublinear_tf=True,
                                         dtype=np.float32),
                         LogisticRegression(C=4.0, max_iter=1000, random_state=3))
    want = cross_val_predict(pipe, texts, y, cv=StratifiedKFold(5, shuffle=True,
                                                                random_state=3),
                             method="decision_function")
    np.testing.assert_allclose([r["scores"]["blind"] for r in rows], want, atol=1e-9)
    assert metrics["blind"]["auroc"] > 0.95  # topics give members away without any model


def test_scores_use_the_trained_token_ids(models, tokenizer):
    """Ids that a decode/encode round trip would merge are scored as given when the records
    say they are of this tokenizer's vocabulary, and re-tokenized (and said so) otherwise."""
    model = models[0]
    vocab = lm.vocab_digest(tokenizer)
    vocab_items = tokenizer.get_vocab()
    merged = next(t for t in sorted(vocab_items, key=lambda t: (-len(t), t))
                  if len(t) >= 3 and all(ch in vocab_items for ch in t)
                  and tokenizer.encode(tokenizer.convert_tokens_to_string([t]),
                                       add_special_tokens=False) == [vocab_items[t]])
    pieces = [vocab_items[ch] for ch in merged]  # one byte-level symbol each
    assert tokenizer.encode(tokenizer.decode(pieces), add_special_tokens=False) != pieces
    base = make_records(6, seed=8)
    recs = [{**r, "input_ids": lm.tokenize_texts(tokenizer, [r["input"]])[0] + pieces,
             "tokenizer": vocab} for r in base]
    work = attack.MiaWork(recs, tokenizer, methods=["loss"])
    assert work.token_source.startswith("the records' input_ids")
    assert [len(t) for t in work.ids] == [len(r["input_ids"]) for r in recs]
    rows, _ = attack.score_records(recs, model, tokenizer, methods=["loss"], progress=False)
    direct = lm.token_stats(model, [r["input_ids"] for r in recs], batch_size=1,
                            progress=False)
    for row, st in zip(rows, direct, strict=True):
        assert row["scores"]["loss"] == pytest.approx(scores.loss(st.logprob), abs=1e-5)
    other = [{**r, "tokenizer": "0" * 16} for r in recs]
    assert attack.MiaWork(other, tokenizer, methods=["loss"]).token_source.startswith(
        "re-tokenized texts (the records' input_ids are of another vocabulary")


def test_run_mia_keeps_every_emmia_iteration_and_its_stability(tiny_world):
    """--emmia_init a,b runs EM-MIA from each (em-mia's emmia.py --init); every iteration's
    scores are saved and each iteration's AUROC equals sklearn's on those scores; the stability
    line is Spearman's rho of the final against the initial scores (scipy), ``inverted`` when
    negative; the first init's final scores are the 'emmia' column. Every AUROC carries a
    bootstrap interval and the split its chance band."""
    from scipy.stats import spearmanr

    out = tiny_world / "results_emmia"
    assert run_mia.main(["--dataset", "toy", "--data_dir", str(tiny_world / "data"),
                         "--world", str(tiny_world / "world"), "--step", "20",
                         "--output_dir", str(out), "--batch_size", "4", "--quiet",
                         "--emmia_init", "minkpp_20,loss", "--emmia_iters", "3"]) == 0
    run = out / "toy" / "step20-tokens10K"
    doc = io.read_json(run / "metrics.json")
    its = io.read_json(run / "emmia_iterations.json")
    rows = io.read_jsonl(run / "scores.jsonl")
    labels = [r["label"] for r in rows]
    assert set(its) == {"emmia", "emmia:loss"} and set(doc["emmia"]) == set(its)
    for name, init in (("emmia", "minkpp_20"), ("emmia:loss", "loss")):
        h = its[name]["scores"]
        assert its[name]["init"] == init and len(h) == 4
        np.testing.assert_allclose(h[0], [r["scores"][init] for r in rows], atol=1e-12)
        np.testing.assert_allclose(h[-1], [r["scores"][name] for r in rows], atol=1e-12)
        rep = doc["emmia"][name]
        assert rep["auroc"] == pytest.approx([roc_auc_score(labels, x) for x in h], abs=1e-12)
        rho = spearmanr(h[0], h[-1]).statistic
        assert rep["spearman_final_vs_init"] == pytest.approx(rho, abs=1e-12)
        assert rep["inverted"] == bool(rho < 0)
    lo, hi = doc["null_band"]["auroc"]
    assert lo < 0.5 < hi
    assert all(len(m["ci"]["auroc"]) == 2 for m in doc["metrics"].values())


def test_make_table_writes_the_emmia_iteration_curve(tmp_path, capsys):
    """make_table.py prints, and writes as .md and .png, each EM-MIA run's AUROC after every
    iteration with its stability line, read back from metrics.json as run_mia writes it."""
    r = tmp_path / "results"
    _fake_run(r, "w_64_100_control", "step40-tokens3K", {"emmia": 0.3}, inverted=("emmia",))
    doc = io.read_json(r / "w_64_100_control" / "step40-tokens3K" / "metrics.json")
    doc["emmia"] = {"emmia": {"init": "minkpp_20", "iterations": 2, "inverted": True,
                              "spearman_final_vs_init": -0.4, "auroc": [0.9, 0.5, 0.3]}}
    io.write_json(r / "w_64_100_control" / "step40-tokens3K" / "metrics.json", doc)
    assert make_table.main(["--results_dir", str(r), "--datasets", "w_64_100_control"]) == 0
    md = capsys.readouterr().out
    assert "| step40 | Min-K%++ 20% | 90.0 | 50.0 | 30.0 | -0.40 (inverted) |" in md
    assert (r / "w_64_100_control" / "emmia_iterations.png").read_bytes()[:4] == b"\x89PNG"
