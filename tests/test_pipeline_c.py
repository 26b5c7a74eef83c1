"""Pipeline C end to end on the tiny miniworld, through the scripts' own ``main``.

Independent checks: the Pythia-format copy against the OLMo token files read through the
data order; duplicate counts against a plain Python dict of every in-sequence window of the
trained stream (read with numpy from the token files); the truth file's plant copies;
memorization scores against ``transformers``' greedy ``generate`` (equal up to a near-tie of
the reference's logits, ``tests/ties.py``); perplexities against a per-token loop over
``torch.log_softmax``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import classify_code_vs_nl as nl_script
import combine_filters as combine_script
import convert_to_pythia as convert_script
import filter_duplicates as dup_script
import filter_semantic as semantic_script
import filter_templating as templ_script
import memorization_samples as samples_script
import memorization_scores as scores_script
import token_frequencies as freq_script
import train_taxonomy as taxonomy_script
from anatomy import io
from anatomy.truth import World
from tests.ties import (
    assert_greedy_equal_up_to_a_tie,
    assert_match_fraction_agrees,
    greedy_reference_logits,
)

SCORE_BATCH = 64  # memorization_scores.py's samples per unit (its default, passed explicitly)
SEMANTIC_CORPUS = 400  # filter_semantic.py --corpus_sample: trained sequences drawn uniformly


def trained_rows(world: Path) -> np.ndarray:
    """Every trained instance in slot order, straight from the files (plain numpy)."""
    t = io.read_json(world / "truth.json")
    L = t["seq_len"]
    parts = []
    for p in t["token_files"]:
        a = np.fromfile(world / p, dtype="<u2")
        parts.append(a[: len(a) // L * L].reshape(-1, L))
    order = np.fromfile(world / "global_indices.npy", dtype="<u4")
    return np.concatenate(parts)[order[: t["n_trained_instances"]]]


def brute_counts(rows: np.ndarray, n: int) -> Counter:
    c: Counter = Counter()
    for r in rows.tolist():
        for i in range(len(r) - n + 1):
            c[tuple(r[i:i + n])] += 1
    return c


def scored_step(world: Path) -> int:
    """The checkpoint the fixture scores: T2, right after the dense memorization window, where
    the tiny world holds the most memorized samples (evidence.json)."""
    return io.read_json(world / "truth.json")["preset"]["nonmember_start"]


@pytest.fixture(scope="module")
def c_run(tiny_world, tmp_path_factory):
    """Samples (random + planted starts), the Pythia copy and every feature table."""
    d = tmp_path_factory.mktemp("pipeline_c")
    w = ["--world", str(tiny_world), "--quiet"]
    ids_f = d / "samples.npy"
    assert samples_script.main([*w, "--all_sequences", "--sample", "120", "--add_planted",
                                "--output", str(ids_f)]) == 0
    convert_script.main([*w, "--out", str(d / "pythia" / "document")])
    s = ["--sequence_ids", str(ids_f)]
    assert scores_script.main([*w, *s, "--step", str(scored_step(tiny_world)), "--batch_size",
                               str(SCORE_BATCH), "--output", str(d / "scores.parquet")]) == 0
    # two ranks in turn, small units: the second merges
    for r in ("0", "1"):
        assert dup_script.main([*w, *s, "--rows_per_unit", "500", "--rank", r,
                                "--world_size", "2", "--output", str(d / "dups.parquet")]) == 0
    assert templ_script.main([*w, *s, "--output", str(d / "templating.parquet")]) == 0
    assert freq_script.main([*w, *s, "--output", str(d / "freq.jsonl")]) == 0
    assert semantic_script.main([*w, *s, "--corpus_sample", str(SEMANTIC_CORPUS),
                                 "--output", str(d / "semantic.parquet")]) == 0
    assert nl_script.main([*w, *s, "--output", str(d / "nl.parquet")]) == 0
    tables = [d / f for f in ("samples_ds_type.parquet", "scores.parquet", "dups.parquet",
                              "templating.parquet", "freq.jsonl", "semantic.parquet",
                              "nl.parquet")]
    assert combine_script.main(["--inputs", *map(str, tables), "--output",
                                str(d / "combined.parquet"), "--quiet"]) == 0
    return d, np.load(ids_f)


def test_both_readers_give_the_same_samples(tiny_world, c_run):
    from anatomy.memorization.data import open_training_data

    d, _ = c_run
    t = io.read_json(tiny_world / "truth.json")
    olmo = open_training_data(tiny_world / "config.yaml")
    pythia = open_training_data(pythia_prefix=d / "pythia" / "document",
                                batch_size=t["batch_size"], seq_len=t["seq_len"])
    assert olmo.n_steps == pythia.n_steps == t["preset"]["steps"]
    a = olmo.ids_for_steps(3, 6)
    b = pythia.ids_for_steps(3, 6)
    assert (b == np.arange(3 * t["batch_size"], 6 * t["batch_size"])).all()
    assert (olmo.samples(a) == pythia.samples(b)).all()
    rows = trained_rows(tiny_world)
    assert (pythia.samples(b) == rows[b][:, :64]).all()
    # the corpus passes see the same multiset of trained rows through either reader
    k = 3
    tok = lambda data: np.bincount(np.concatenate(  # noqa: E731
        [data.shard(u, k).ravel() for u in range(k)]), minlength=t["vocab_size"])
    direct = np.bincount(rows.ravel().astype(np.int64), minlength=t["vocab_size"])
    assert (tok(olmo) == direct).all()
    assert (tok(pythia) == direct).all()


def test_duplicate_counts_equal_a_brute_force_recount_and_the_truth(tiny_world, c_run):
    d, ids = c_run
    rows = trained_rows(tiny_world)
    w = World.open(tiny_world)
    olmo_order = w.order
    slot_of = {int(i): s for s, i in enumerate(olmo_order[: len(rows)])}
    brute = brute_counts(rows, 32)
    df = pd.read_parquet(d / "dups.parquet")
    assert (df.sequence_id.to_numpy() == ids).all()
    want = [brute[tuple(rows[slot_of[int(i)], 32:64].tolist())] for i in ids]
    assert df.sequence_duplicates.tolist() == want
    assert min(want) >= 1
    # planted passages: the truth file's copies whose continuation lies inside one sequence
    by_id = dict(zip(df.sequence_id, df.sequence_duplicates, strict=True))
    checked = 0
    for kind in ("mem_dense", "mem_late", "reconstruct", "recollect"):
        for r in w.planted_sequence_starts(kind):
            toks = w.doc_tokens(r["doc"])
            cont = tuple(toks[32:64].tolist())
            # the continuation also at another offset of the passage itself?
            selfhits = sum(tuple(toks[i:i + 32].tolist()) == cont
                           for i in range(len(toks) - 31))
            for i in r["sequence_ids"]:
                if selfhits == 1:
                    assert by_id[i] == r["expected_duplicates"]
                    checked += 1
                else:
                    assert by_id[i] >= r["expected_duplicates"]
    assert checked > 10


def test_one_rank_writes_the_bytes_of_two(tiny_world, c_run, tmp_path):
    d, _ = c_run
    out = tmp_path / "dups.parquet"
    assert dup_script.main(["--world", str(tiny_world), "--sequence_ids", str(d / "samples.npy"),
                            "--output", str(out), "--quiet"]) == 0
    assert out.read_bytes() == (d / "dups.parquet").read_bytes()
    assert Path(f"{out}.counts.npy").read_bytes() == Path(f"{d}/dups.parquet.counts.npy"
                                                           ).read_bytes()


def test_an_ngram_straddling_two_sequences_is_not_counted(tiny_world, c_run, tmp_path):
    rows = trained_rows(tiny_world)
    flat = rows.ravel()
    L = rows.shape[1]
    brute = brute_counts(rows, 16)
    # pick a straddling 16-gram (8 + 8 tokens across slots t, t+1) never inside one sequence
    for t in range(len(rows) - 1):
        g = flat[(t + 1) * L - 8:(t + 1) * L + 8]
        if brute[tuple(g.tolist())] == 0:
            break
    inside = rows[5, 10:26]
    q = tmp_path / "q.jsonl"
    io.write_jsonl(q, [{"tokens": g.tolist()}, {"tokens": inside.tolist()}])
    out = tmp_path / "counts.jsonl"
    assert dup_script.main(["--world", str(tiny_world), "--ngrams", str(q), "--output", str(out),
                            "--quiet"]) == 0
    got = [r["count"] for r in io.read_jsonl(out)]
    assert got == [0, brute[tuple(inside.tolist())]]
    assert got[1] >= 1


def test_memorization_scores_against_transformers(tiny_world, c_run):
    """Each picked row's score is its batch's greedy decode (recomputed here in the same batch
    of SCORE_BATCH rows, one thread, as the scoring units ran), and that decode equals
    ``generate``'s one-row decode but for a near-tie of the reference's logits (issue 20: the
    two paths round differently, so an exact comparison fails wherever the top two logits
    are within rounding). ``generate`` is asked for a plain greedy decode: no eos, so neither
    a stop nor ``min_new_tokens``' ban of the eos token, which here is the document
    separator (4095), a token the trained sequences contain and the memorization test must be
    free to reproduce."""
    import torch
    from transformers import GenerationConfig

    from anatomy.execution import single_threaded_torch
    from anatomy.lm import greedy_continuations, load_causal_lm
    from anatomy.memorization.data import open_training_data

    d, ids = c_run
    df = pd.read_parquet(d / "scores.parquet")
    assert (df.sequence_id.to_numpy() == ids).all()
    data = open_training_data(tiny_world / "config.yaml")
    pick = np.r_[np.argsort(-df.memorization_score.to_numpy())[:4], [0, 1, 2]]
    samples = data.samples(ids[pick])
    model = load_causal_lm(tiny_world / "model", revision=scored_step(tiny_world))
    # the library's decodes of the picked rows, in the batches the scoring units used
    batched = {}
    with single_threaded_torch():
        for b in sorted({int(j) // SCORE_BATCH for j in pick}):
            rows = np.arange(b * SCORE_BATCH, min(len(ids), (b + 1) * SCORE_BATCH))
            prompts = data.samples(ids[rows])[:, :32].tolist()
            batched.update(zip(rows.tolist(), greedy_continuations(
                model, prompts, 32, batch_size=len(rows)), strict=True))
    # no eos anywhere: generate fills a config's unset eos from the model's own
    model.generation_config.eos_token_id = None
    plain = GenerationConfig(do_sample=False, max_new_tokens=32, eos_token_id=None,
                             pad_token_id=0)
    for j, x in zip(pick, samples, strict=True):
        ids_t = torch.tensor(x[None, :32])
        with torch.no_grad():
            g = model.generate(ids_t, attention_mask=torch.ones_like(ids_t),
                               generation_config=plain)[0, 32:].numpy()
            logits = model(torch.tensor(x[None])).logits[0].double()
        assert len(g) == 32
        lp = [float(torch.log_softmax(logits[t - 1], -1)[x[t]]) for t in range(1, 64)]
        row = df.iloc[j]
        got = np.array(batched[int(j)])
        assert row.memorization_score == float((got == x[32:]).mean())  # the same computation
        tie = assert_greedy_equal_up_to_a_tie(got, g, greedy_reference_logits(model, x[:32], g),
                                              what=f"sample {ids[j]}: ")
        assert_match_fraction_agrees(row.memorization_score, g, x[32:], tie,
                                     what=f"sample {ids[j]}: ")
        assert row.prompt_perplexity == pytest.approx(np.exp(-np.mean(lp[:31])), rel=1e-4)
        assert row.generation_perplexity == pytest.approx(np.exp(-np.mean(lp[31:])), rel=1e-4)
        assert row.sequence_perplexity == pytest.approx(np.exp(-np.mean(lp)), rel=1e-4)
        assert row.loss == pytest.approx(-np.mean(lp), rel=1e-4)
    # the published normalisation: prompt x generation = sequence
    from anatomy.memorization.extraction import perplexities

    lp = np.random.default_rng(0).normal(-3, 1, (5, 63))
    p = perplexities(lp, 32, published_normalisation=True)
    assert np.allclose(p["prompt_perplexity"] * p["generation_perplexity"],
                       p["sequence_perplexity"])


def test_combined_table_and_taxonomy(tiny_world, c_run):
    d, ids = c_run
    df = pd.read_parquet(d / "combined.parquet")
    assert len(df) == len(ids)
    assert sorted(df.sequence_id) == sorted(ids)
    for c in ("memorization_score", "sequence_duplicates", "is_incrementing", "is_repeating",
              "max_frequency", "0_8_snowclones", "0_8_templates", "nl_scores",
              "huffman_coding_length", "generation_perplexity", "checkpoint"):
        assert c in df.columns
    # templates that start a sequence and fill its window are flagged
    w = World.open(tiny_world)
    by = df.set_index("sequence_id")
    inc = [i for r in w.planted_sequence_starts("templates") for i in r["sequence_ids"]
           if r["template"]["kind"] == "incrementing"]
    assert by.loc[inc, "is_incrementing"].mean() >= 0.5
    out = d / "taxonomy"
    assert taxonomy_script.main(["--combined", str(d / "combined.parquet"), "--output_dir",
                                 str(out), "--folds", "3", "--search", "--max_rules", "6",
                                 "--quiet"]) == 0
    # the published use of the two sample sets: the test split holds random draws only
    kinds = pd.read_parquet(d / "samples_ds_type.parquet").set_index("sequence_id").ds_type
    test_ids = pd.read_csv(out / "test_split.csv").sequence_id
    assert (kinds.loc[test_ids] == "representative").all()
    summary = io.read_json(out / "summary.json")
    assert summary["rows"]["memories"] == int((kinds == "memories").sum()) > 0
    report = (out / "report.md").read_text()
    assert "to training only" in report and "Metric conventions: ours" in report
    assert summary["n_test"] == len(test_ids) < summary["rows"]["representative"]
    pub = d / "taxonomy_published"
    assert taxonomy_script.main(["--combined", str(d / "combined.parquet"), "--output_dir",
                                 str(pub), "--folds", "5", "--published_metrics",
                                 "--quiet"]) == 0
    assert "Metric conventions: published" in (pub / "report.md").read_text()
    # the published aggregation, transcribed, on the world's own test predictions
    from tests.test_taxonomy import assert_published_metrics

    assert assert_published_metrics(pd.read_csv(pub / "metrics.csv"),
                                     pd.read_csv(pub / "test_split.csv"), 5) > 0
    assert io.read_json(pub / "summary.json")["conventions"] == "published"
    rules = pd.read_csv(out / "partition_search.csv")
    if (df.memorization_score == 1.0).any():
        assert list(rules["rank"]) == [1, 2, 3, 4, 5, 6]
    else:  # the tiny model memorizes nothing here (on this CPU): no candidates, said so
        assert "no memorized samples" in (out / "report.md").read_text()
        assert rules.empty
    shares = pd.read_csv(out / "category_shares.csv")
    assert {"recitation", "reconstruction", "recollection"} <= set(shares.category)
    metrics = pd.read_csv(out / "metrics.csv")
    assert {"baseline", "taxonomic"} <= set(metrics.model)


def test_semantic_matches_count_an_independent_corpus_sample(tiny_world, c_run):
    """Independent computation: the corpus drawn as documented (a uniform 400 of the trained
    sequences, seed 1, numpy on the data order), its rows read from the token files, decoded
    and embedded by sentence-transformers in fp32 (the module embeds with its own pooling,
    bf16 where the CPU has it), cosine counts >= 0.8 without the sample's own row. Counts may
    differ only by pairs within 0.01 of the threshold. The planted samples' counts are far
    below what the samples themselves (with their many planted siblings) would give."""
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer

    from anatomy.lm import default_embedder_path

    d, ids = c_run
    t = io.read_json(tiny_world / "truth.json")
    trained = np.fromfile(tiny_world / "global_indices.npy", dtype="<u4")[
        : t["n_trained_instances"]]
    pick = np.sort(np.random.default_rng(1).choice(len(trained), SEMANTIC_CORPUS,
                                                    replace=False))
    corpus = trained[pick].astype(np.int64)
    rows = trained_rows(tiny_world)
    slot = {int(i): k for k, i in enumerate(trained)}
    tok = AutoTokenizer.from_pretrained(str(tiny_world / "tokenizer"))
    text = lambda i: tok.decode(rows[slot[int(i)], :64].tolist())  # noqa: E731
    model = SentenceTransformer(str(default_embedder_path()), device="cpu")
    q = model.encode([text(i) for i in ids], normalize_embeddings=True, batch_size=64)
    c = model.encode([text(i) for i in corpus], normalize_embeddings=True, batch_size=64)
    cos = q @ c.T
    cos[ids[:, None] == corpus[None, :]] = -1  # a sample's own row never counts
    want = (cos >= 0.8).sum(1)
    band = (np.abs(cos - 0.8) < 0.01).sum(1)
    got = pd.read_parquet(d / "semantic.parquet").set_index("sequence_id").loc[ids,
                                                                                "0_8_snowclones"]
    assert (np.abs(got.to_numpy() - want) <= band).all()
    assert want.sum() > 0
    w = World.open(tiny_world)
    dense = [i for r in w.planted_sequence_starts("mem_dense") for i in r["sequence_ids"]]
    pos = np.flatnonzero(np.isin(ids, dense))
    among_samples = (q[pos] @ q.T >= 0.8).sum(1) - 1  # the previous default: the samples
    assert len(pos) > 20 and got.to_numpy()[pos].mean() < 0.5 * among_samples.mean()


def test_published_templating_on_the_world_equals_the_transcription(tiny_world, c_run,
                                                                    tmp_path):
    """filter_templating.py --published on the tiny world's samples against the transcription
    of filters/pattern.py (tests/test_memorization_templating.py) on the same decoded texts;
    the fixed default differs from it only where a published quirk applies."""
    from transformers import AutoTokenizer

    from anatomy.memorization.templating import is_incrementing, is_repeating
    from tests.test_memorization_templating import _published_is_pattern

    d, ids = c_run
    out = tmp_path / "templ_published.parquet"
    assert templ_script.main(["--world", str(tiny_world), "--quiet", "--sequence_ids",
                              str(d / "samples.npy"), "--published", "--output",
                              str(out)]) == 0
    rows = trained_rows(tiny_world)
    t = io.read_json(tiny_world / "truth.json")
    trained = np.fromfile(tiny_world / "global_indices.npy", dtype="<u4")[
        : t["n_trained_instances"]]
    slot = {int(i): k for k, i in enumerate(trained)}
    tok = AutoTokenizer.from_pretrained(str(tiny_world / "tokenizer"))
    texts = [tok.decode(rows[slot[int(i)], :64].tolist()) for i in ids]
    got = pd.read_parquet(out).set_index("sequence_id").loc[ids]
    want = [_published_is_pattern(x) for x in texts]
    assert list(zip(got.is_incrementing, got.is_repeating, strict=True)) == want
    assert sum(w[0] or w[1] for w in want) > 10
    fixed = pd.read_parquet(d / "templating.parquet").set_index("sequence_id").loc[ids]
    for x, f_inc, f_rep in zip(texts, fixed.is_incrementing, fixed.is_repeating, strict=True):
        assert f_inc == is_incrementing(x) and f_rep == (not f_inc and is_repeating(x))


def test_convert_to_pythia_writes_outside_the_world():
    """The world is an input: the default output is under data/memorization."""
    args = convert_script.build_parser().parse_args(["--world", "data/world"])
    assert args.out == "data/memorization/pythia/document"


def test_memorized_plants_fall_in_their_intended_category(tiny_world, c_run):
    """The tiny world memorizes, in more than one category, and every planted sample the model
    reproduces falls, by the taxonomy's rule on the measured features (``categorize``: the
    pipeline's duplicate counts and templating flags), in the category the truth file says its
    plant was built for (independently recounted in tests/test_world.py)."""
    from anatomy.memorization.report import world_check
    from anatomy.memorization.taxonomy import categorize

    d, _ = c_run
    df = pd.read_parquet(d / "combined.parquet").set_index("sequence_id")
    w = World.open(tiny_world)
    intended = {i: p["intended"] for k in w.memorization_plants
                for p in w.planted_sequence_starts(k) if "intended" in p
                for i in p["sequence_ids"]}
    mem = df.loc[[i for i in intended if i in df.index]]
    mem = mem[mem.memorization_score == 1.0]
    got = categorize(mem)
    assert len(mem) >= 10
    assert got.nunique() >= 2
    assert list(got) == [intended[i] for i in mem.index]
    table = world_check(tiny_world, df.reset_index())  # the report's intended vs measured
    (col,) = [c for c in table.columns if c.startswith("as intended")]
    agree = table[col][table[col] != "-"]
    assert len(agree) >= 2 and all(a == b for a, b in (x.split("/") for x in agree))


def test_bad_sample_choices_are_one_clear_error(tiny_world, tmp_path):
    from anatomy.io import InputError

    t = io.read_json(tiny_world / "truth.json")
    w = World.open(tiny_world)
    untrained = int(w.order[t["n_trained_instances"]])  # the order runs past the epoch
    cases = {"never trained": [untrained], "out of range": [t["n_instances"] + 5],
             "listed twice": [3, 3]}
    for msg, ids in cases.items():
        f = tmp_path / f"{len(ids)}_{ids[0]}.npy"
        np.save(f, np.array(ids))
        with pytest.raises(InputError, match=msg):
            templ_script.main(["--world", str(tiny_world), "--sequence_ids", str(f),
                               "--output", str(tmp_path / "t.parquet"), "--quiet"])
    with pytest.raises(InputError, match="exactly one"):
        templ_script.main(["--world", str(tiny_world), "--steps", "0:2", "--all_sequences",
                           "--output", str(tmp_path / "t.parquet"), "--quiet"])
    with pytest.raises(InputError, match="past the trained stream"):
        templ_script.main(["--world", str(tiny_world), "--steps", "0:100000",
                           "--output", str(tmp_path / "t.parquet"), "--quiet"])
    assert not (tmp_path / "t.parquet").exists()


def test_quiet_loads_models_without_bars(tiny_world, tmp_path, capfd, monkeypatch):
    """--quiet silences transformers' own "Loading weights" bars too (they ignore our
    progress switch), even with TQDM_DISABLE unset."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert scores_script.main(["--world", str(tiny_world), "--steps", "0:1", "--step",
                               str(scored_step(tiny_world)), "--output",
                               str(tmp_path / "s.parquet"), "--quiet"]) == 0
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "it/s" not in err
