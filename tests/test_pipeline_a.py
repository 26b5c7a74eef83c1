"""Pipeline A end to end on the tiny miniworld: sample -> filter -> vecs -> clustering ->
control split -> run_mia -> table, through the scripts' own ``main``.

Independent checks: positions against a direct ``random.Random(42).sample`` call; each
sample's text against the instance tokens read with plain numpy from the token files and
split at the separator id; membership labels against the truth file's step windows;
attack AUROC on the control split against the truth file's planted counts.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import clustering as clustering_script
import control_split as control_script
import filter as filter_script
import generate_vecs as vecs_script
import sample as sample_script
from anatomy import io, lm
from anatomy.io import read_jsonl, write_jsonl
from tests.conftest import first_target

ROOT = Path(__file__).resolve().parent.parent
# a bash loop of disjoint sample.py jobs; 640 positions: every job ends past CPython's
# branch limit of 85, so all draw on the same branch (sampling.max_consistent_sample_end)
JOBS = ((0, 120), (120, 180), (180, 240))
END = JOBS[-1][1]


@pytest.fixture(scope="module")
def run_a(tiny_world, tiny_truth, tmp_path_factory):
    """Run the construction chain once; return (data_dir, facts)."""
    d = tmp_path_factory.mktemp("pipeline_a")
    T1 = tiny_truth["steps"]["member"][1]
    T2, T3 = tiny_truth["steps"]["nonmember"]
    w = ["--world", str(tiny_world), "--quiet"]
    for lo, hi in ((0, T1), (T2, T3)):
        for s0, s1 in JOBS:
            assert sample_script.main([*w, "--step_start", str(lo), "--step_end", str(hi),
                                       "--sample_start", str(s0), "--sample_end", str(s1),
                                       "--out_dir", str(d)]) == 0
    # one big job, to compare with the loop
    assert sample_script.main([*w, "--step_start", "0", "--step_end", str(T1),
                               "--sample_start", "0", "--sample_end", str(END),
                               "--out_dir", str(d / "single")]) == 0
    n = 40
    assert filter_script.main([*w, "--member_step_start", "0", "--member_step_end", str(T1),
                               "--nonmember_step_start", str(T2), "--nonmember_step_end",
                               str(T3), "--num_data", str(n), "--max_length", "64",
                               "--data_dir", str(d)]) == 0
    name = f"miniworld-tiny_64_{n}"
    assert vecs_script.main(["--dataset_name", name, "--data_dir", str(d), "--quiet"]) == 0
    assert clustering_script.main(["--model_name", "miniworld-tiny", "--max_length", "64",
                                   "--num_data", str(n), "--num_sample", "10",
                                   "--num_cluster", "2", "--data_dir", str(d), "--quiet",
                                   "--world", str(tiny_world)]) == 0
    assert control_script.main([*w, "--data_dir", str(d)]) == 0
    return d, {"T1": T1, "T2": T2, "T3": T3, "pool": name}


def _instances(world: Path, truth: dict) -> tuple[np.ndarray, np.ndarray]:
    L = truth["seq_len"]
    parts = []
    for p in truth["token_files"]:
        a = np.fromfile(world / p, dtype="<u2")
        parts.append(a[: len(a) // L * L].reshape(-1, L))
    return np.concatenate(parts), np.fromfile(world / "global_indices.npy", dtype="<u4")


def test_positions_and_disjoint_jobs(run_a, tiny_truth):
    d, f = run_a
    folder = d / "sample" / f"miniworld-tiny_step0:{f['T1']}"
    loop = b"".join((folder / f"{a}:{b}.jsonl").read_bytes()
                    for a, b in JOBS)
    single = (d / "single" / "sample" / f"miniworld-tiny_step0:{f['T1']}" / f"0:{END}.jsonl")
    assert loop == single.read_bytes()
    B = tiny_truth["batch_size"]
    expected = random.Random(42).sample(range(0, f["T1"] * B), END)
    got = []
    for r in read_jsonl(single):
        if not got or got[-1] != r["idx"][0]:
            got.append(r["idx"][0])
    assert got == [p for p in expected if p in set(got)]  # draw order, no foreign positions
    assert all(read_jsonl(folder / f"{a}:{b}.failures.jsonl") == []
               for a, b in JOBS)


def test_samples_are_the_documents_between_separators(run_a, tiny_world, tiny_truth):
    from transformers import AutoTokenizer

    d, f = run_a
    inst, order = _instances(tiny_world, tiny_truth)
    eos = tiny_truth["eos_token_id"]
    tok = AutoTokenizer.from_pretrained(tiny_world / "tokenizer")
    recs = read_jsonl(d / "sample" / f"miniworld-tiny_step{f['T2']}:{f['T3']}" / "0:120.jsonl")
    assert recs
    for r in recs:
        toks = inst[order[r["idx"][0]]]
        cuts = np.flatnonzero(toks == eos)
        a, b = cuts[r["idx"][1] - 1] + 1, cuts[r["idx"][1]]
        assert r["length"] == b - a
        assert r["input"] == tok.decode(toks[a:b].tolist())
        assert r["input_ids"] == toks[a:b].tolist()  # the ids as trained, kept for scoring
        # the published schema, then the trained ids and their vocabulary's digest
        assert list(r) == ["input", "idx", "length", "input_ids", "tokenizer"]
        assert r["tokenizer"] == lm.vocab_digest(tok)


def test_pool_labels_follow_the_truth(run_a, tiny_truth):
    d, f = run_a
    pool = read_jsonl(d / f"{f['pool']}.jsonl")
    B = tiny_truth["batch_size"]
    assert [r["label"] for r in pool] == [1] * 20 + [0] * 20
    for r in pool:
        assert 32 < r["length"] <= 64
        step = r["idx"][0] // B
        assert (step < f["T1"]) if r["label"] == 1 else (f["T2"] <= step < f["T3"])
    ids = [r["idx"][0] for r in pool]
    assert len(set(ids)) == len(ids)  # at most one document per training instance


def test_splits(run_a):
    d, f = run_a
    vecs = np.load(d / "vecs" / f"{f['pool']}.npy")
    assert vecs.shape == (40, 384)
    stats = {s["split"]: s for s in json.loads((d / "miniworld-tiny_64_10_stats.json")
                                               .read_text())}
    for split in ("random", "mix1", "mix2", "easy", "medium", "hard"):
        recs = read_jsonl(d / f"miniworld-tiny_64_10_{split}.jsonl")
        assert [r["label"] for r in recs] == [1] * 5 + [0] * 5
    assert stats["easy"]["cross_dist"] > stats["hard"]["cross_dist"]
    assert (d / "miniworld-tiny_64_10.png").stat().st_size > 1000
    # the paper's splits are ordinary documents: the membership plants are longer than the
    # L=64 bucket, so none is in any split (whatever else was planted is counted), and no
    # filler (a document's head cut short) is either
    for split in ("random", "mix1", "mix2", "easy", "medium", "hard"):
        p = stats[split]["planted"]
        assert p["unknown"] == 0 and not {"mia", "mia_control"} & set(p["by_kind"]), p
        assert p["fillers"] == 0, p


def test_members_and_nonmembers_are_whole_documents(run_a, tiny_world):
    """Every sampled document, pooled member and non-member and split record is a document
    of the truth's docs table, whole (its ids hash to the row's sha1 of all its tokens, of its
    length), never a filler; empty ones (padding before aligned plants) are never pooled. And
    the count clustering.py --world reports finds a cut one."""
    import hashlib

    from anatomy.mia.construct import plant_share

    d, f = run_a
    docs = read_jsonl(tiny_world / "truth" / "docs.jsonl.gz")
    assert not [r for r in docs if "filler" in r["kinds"]]
    whole = {r["sha1"]: r for r in docs}

    def row(ids) -> dict:
        return whole.get(hashlib.sha1(np.asarray(ids, dtype="<u2").tobytes()).hexdigest(), {})

    samples = [r for p in (d / "sample").rglob("*.jsonl") if "failures" not in p.name
               for r in read_jsonl(p)]
    assert samples and all(row(r["input_ids"]).get("length") == r["length"]
                           for r in samples if r["length"])
    pooled = read_jsonl(d / f"{f['pool']}.jsonl")
    splits = [r for s in ("random", "mix1", "mix2", "easy", "medium", "hard")
              for r in read_jsonl(d / f"miniworld-tiny_64_10_{s}.jsonl")]
    for r in pooled + splits:
        assert row(r["input_ids"]).get("length") == r["length"] == len(r["input_ids"]) > 0
    # a document's head cut short is counted
    cut = {"input_ids": pooled[0]["input_ids"][:-1]}
    assert plant_share([cut, pooled[0]], tiny_world)["fillers"] == 1


def test_control_split_from_truth(run_a, tiny_truth):
    d, _ = run_a
    recs = read_jsonl(d / "miniworld-tiny_control.jsonl")
    members = [r for r in recs if r["label"] == 1]
    assert members and all(r["planted"] >= 8 for r in members)
    assert len(recs) - len(members) == len(tiny_truth["planted"]["mia_control"])


def test_missing_world_is_one_line_exit_2(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "sample.py"), "--world", str(tmp_path),
                        "--step_start", "0", "--step_end", "4", "--sample_start", "0",
                        "--sample_end", "4"], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "miniworld" in lines[0]


def test_short_pool_is_one_clear_error(run_a, tiny_world):
    d, f = run_a
    with pytest.raises(Exception, match="next: (sample.py|none left)"):
        filter_script.main(["--world", str(tiny_world), "--member_step_start", "0",
                            "--member_step_end", str(f["T1"]), "--nonmember_step_start",
                            str(f["T2"]), "--nonmember_step_end", str(f["T3"]),
                            "--num_data", "100000", "--max_length", "64",
                            "--data_dir", str(d)])
    assert not (d / "miniworld-tiny_64_100000.jsonl").exists()


def test_construction_scripts_follow_the_output_policy(run_a, tiny_world, capsys):
    """Each script: the same flags skip (files untouched), another flag is refused naming it,
    --overwrite recomputes the same bytes."""
    d, f = run_a
    w = ["--world", str(tiny_world), "--quiet"]
    pool = ["--member_step_start", "0", "--member_step_end", str(f["T1"]),
            "--nonmember_step_start", str(f["T2"]), "--nonmember_step_end", str(f["T3"]),
            "--num_data", "40", "--max_length", "64", "--data_dir", str(d)]
    split = ["--model_name", "miniworld-tiny", "--max_length", "64", "--num_data", "40",
             "--num_sample", "10", "--num_cluster", "2", "--data_dir", str(d), "--quiet"]
    cases = [  # (script, its flags, output, a changed flag, the difference it names)
        (sample_script, [*w, "--step_start", "0", "--step_end", str(f["T1"]),
                         "--sample_start", "0", "--sample_end", "120", "--out_dir", str(d)],
         d / f"sample/miniworld-tiny_step0:{f['T1']}/0:120.jsonl", ["--batch_size", "15"],
         f"batch_size {io.read_json(tiny_world / 'truth.json')['batch_size']} -> 15"),
        (sample_script, [*w, "--step_start", "0", "--step_end", str(f["T1"]),
                         "--sample_start", "0", "--sample_end", "120", "--out_dir", str(d)],
         d / f"sample/miniworld-tiny_step0:{f['T1']}/0:120.jsonl", ["--seed", "7"],
         "seed 42 -> 7"),
        (filter_script, [*w, *pool], d / f"{f['pool']}.jsonl", ["--batch_size", "5"],
         f"batch_size {io.read_json(tiny_world / 'truth.json')['batch_size']} -> 5"),
        (vecs_script, ["--dataset_name", f["pool"], "--data_dir", str(d), "--quiet"],
         d / "vecs" / f"{f['pool']}.npy", ["--max_length", "128"], "max_length 256 -> 128"),
        (clustering_script, [*split, "--world", str(tiny_world)],
         d / "miniworld-tiny_64_10_hard.jsonl",
         ["--min_inter_dist", "0.5"], "min_inter_dist 0.6 -> 0.5"),
        (control_script, [*w, "--data_dir", str(d)], d / "miniworld-tiny_control.jsonl",
         ["--min_count", "4"], "min_count 8 -> 4"),
    ]
    for script, args, out, change, diff in cases:
        before = (out.read_bytes(), out.stat().st_mtime_ns)
        assert script.main(args) == 0
        assert (out.read_bytes(), out.stat().st_mtime_ns) == before, script.__name__
        with pytest.raises(Exception, match=diff + r".*pass --overwrite"):
            script.main(args + change)
        assert script.main(args + ["--overwrite"]) == 0
        assert out.read_bytes() == before[0] and out.stat().st_mtime_ns != before[1]
    capsys.readouterr()


@pytest.mark.parametrize("script", ["sample", "filter", "generate_vecs", "clustering",
                                    "control_split", "build_world"])
def test_help(script):
    r = subprocess.run([sys.executable, str(ROOT / f"{script}.py"), "--help"],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0 and "examples:" in r.stdout


@pytest.fixture(scope="module")
def control_results(run_a, tiny_world, tiny_truth):
    """run_mia on the control and planted splits at every checkpoint."""
    import make_table
    import run_mia

    d, _ = run_a
    res = d / "results"
    ckpts = [tiny_truth["checkpoints"][0], tiny_truth["checkpoints"][-1]]
    # every (dataset, checkpoint) pair from one process, each model loaded once; EM-MIA
    # (n^2 ReCaLL pairs) on a 20-text slice of the control split, 10 of each class
    control = read_jsonl(d / "miniworld-tiny_control.jsonl")
    small = [r for r in control if r["label"] == 1][:10] + \
        [r for r in control if r["label"] == 0][:10]
    write_jsonl(d / "miniworld-tiny_control20.jsonl", small)
    assert run_mia.main(["--world", str(tiny_world), "--dataset", "miniworld-tiny_control",
                         "miniworld-tiny_planted", "--data_dir", str(d), "--step",
                         *(str(c["step"]) for c in ckpts), "--output_dir", str(res),
                         "--methods", "loss", "zlib", "mink", "minkpp", "blind",
                         "--quiet"]) == 0
    assert run_mia.main(["--world", str(tiny_world), "--dataset", "miniworld-tiny_control20",
                         "--data_dir", str(d), "--step", str(ckpts[0]["step"]),
                         "--output_dir", str(res), "--methods", "loss", "minkpp", "emmia",
                         "--quiet"]) == 0
    assert make_table.main(["--results_dir", str(res), "--datasets", "miniworld-tiny_control",
                            "miniworld-tiny_control20", "miniworld-tiny_planted",
                            "--quiet"]) == 0
    out = {}
    for c in ckpts:
        doc = json.loads((res / "miniworld-tiny_control" / c["revision"] / "metrics.json")
                         .read_text())
        out[c["step"]] = doc["metrics"]
    return res, out


def test_attacks_detect_repeated_members_and_fade(control_results, tiny_truth):
    """Truth: members were planted >= 8 times in [0, T1), controls seen once in [T2, T3).

    At the first checkpoint loss and Min-K%++ must separate them (issue 4: AUROC >= 0.9);
    by the last checkpoint, which has also seen the controls once, some of it is gone.
    """
    _, m = control_results
    steps = sorted(m)
    first, last = steps[0], steps[-1]
    for method in ("loss", "minkpp_20"):
        assert m[first][method]["auroc"] >= 0.9, (method, m[first][method])
        assert m[last][method]["auroc"] < m[first][method]["auroc"]


def test_table_and_count_curve(control_results, tiny_world):
    res, _ = control_results
    md = (res / "table.md").read_text()
    assert "| Loss |" in md and "| Min-K%++ 20% |" in md and "| EM-MIA |" in md
    assert "| Blind (bag of words, no model) |" in md
    t1 = first_target(tiny_world)[0]
    assert md.startswith(f"| AUROC x100 [95 % interval], step{t1} | control | control20 | "
                         "planted |")
    assert "chance band (95 % of label permutations; bold = outside it): control " in md
    by = res / "miniworld-tiny_planted" / "by_planted.md"
    assert by.is_file() and "48" in by.read_text()
