"""SlimPajama category sampling on generated shard trees (both layouts), checked against an
independent bottom-k computation written here with hashlib."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from anatomy.io import InputError, read_json, read_jsonl, write_jsonl
from anatomy.mixture import slimpajama as sp

SETS = list(sp.DEFAULT_SET_MAP)  # RedPajamaCommonCrawl ... RedPajamaStackExchange


def _text(i: int, set_name: str) -> str:
    return f"{set_name} document {i} " + "lorem ipsum " * (i % 7)


def _chunks_tree(root: Path, n_shards: int = 5, per_shard: int = 60) -> dict[str, list]:
    """Layout A. Returns every record as (relpath, line, set, text) for independent checks.

    Odd shards store meta as a JSON string; every 13th record is an unmapped set; every 17th
    a 2-character text; every 11th repeats an earlier text (white space / case changed)."""
    rows = []
    for s in range(n_shards):
        rel = f"train/chunk{s % 2 + 1}/example_train_{s}.jsonl.zst"
        recs = []
        for line in range(1, per_shard + 1):
            i = s * per_shard + line
            name = "RedPajamaOther" if i % 13 == 0 else SETS[i % len(SETS)]
            text = "hi" if i % 17 == 0 else _text(i, name)
            if i % 11 == 0 and i > 20:
                j = i - 14  # same set as i (14 = 2 * 7 sets)
                text = "  " + _text(j, name).upper() + "\n"
            meta = {"redpajama_set_name": name, "i": i}
            recs.append({"text": text, "meta": json.dumps(meta) if s % 2 else meta})
            rows.append((rel, line, name, text))
        write_jsonl(root / rel, recs)
    return {"rows": rows}


def _independent_sample(rows, n, seed, min_chars=0, dedup=True, mapping=sp.DEFAULT_SET_MAP):
    """Bottom-k by hand: key = blake2b("seed|shard|line") (8 bytes, big-endian); per category
    the n smallest keys, where with dedup a normalised text keeps only its smallest key."""
    best: dict[str, dict] = {}
    for rel, line, name, text in rows:
        cat = mapping.get(name)
        if cat is None or len(text.strip()) < min_chars:
            continue
        key = int.from_bytes(hashlib.blake2b(f"{seed}|{rel}|{line}".encode(),
                                             digest_size=8).digest(), "big")
        ident = " ".join(text.split()).lower() if dedup else (rel, line)
        cur = best.setdefault(cat, {}).get(ident)
        if cur is None or key < cur[0]:
            best[cat][ident] = (key, f"{rel}:{line}")
    return {c: [i for _, i in sorted(d.values())[:n]] for c, d in best.items()}


@pytest.fixture()
def chunks(tmp_path):
    root = tmp_path / "sp"
    info = _chunks_tree(root)
    return root, info["rows"]


def test_chunks_layout_matches_independent_bottom_k(chunks, tmp_path):
    root, rows = chunks
    out = tmp_path / "out"
    stats = sp.fetch_category_samples(root, 6, out, seed=3, min_chars=5)
    want = _independent_sample(rows, 6, 3, min_chars=5)
    assert stats["layout"] == "chunks" and stats["shards"] == 5 and stats["records"] == 300
    assert sorted(p.name for p in out.glob("*.jsonl")) == sorted(
        f"{c}.jsonl" for c in sp.DEFAULT_SET_MAP.values())
    for cat, ids in want.items():
        got = read_jsonl(out / f"{cat}.jsonl")
        assert [r["id"] for r in got] == ids, cat  # same records, same (key) order
        assert stats["kept"][cat] == 6
        r = got[0]
        assert list(r) == ["id", "text", "meta", "source"]
        assert isinstance(r["meta"], dict) and "redpajama_set_name" in r["meta"]
        assert r["source"] == {"shard": r["id"].rsplit(":", 1)[0],
                               "line": int(r["id"].rsplit(":", 1)[1])}
    n_unmapped = sum(1 for row in rows if row[2] == "RedPajamaOther")
    assert stats["unmapped"] == {"RedPajamaOther": n_unmapped}
    for cat in want:  # every dropped record counted, per category, against a recount
        mine = [r for r in rows if sp.DEFAULT_SET_MAP.get(r[2]) == cat]
        long = [r for r in mine if len(r[3].strip()) >= 5]
        distinct = {" ".join(r[3].split()).lower() for r in long}
        assert stats["too_short"][cat] == len(mine) - len(long)
        assert stats["eligible"][cat] == len(long)
        assert stats["distinct"][cat] == len(distinct) and stats["distinct_exact"][cat]
        assert stats["duplicates"][cat] == len(long) - len(distinct)
    assert read_json(out / sp.STATS_FILE)["stats"]["kept"] == stats["kept"]


def test_without_dedup_and_with_large_n(chunks, tmp_path):
    root, rows = chunks
    stats = sp.fetch_category_samples(root, 1000, tmp_path / "o", seed=0, dedup=False,
                                      max_chars=10)
    want = _independent_sample(rows, 1000, 0, dedup=False)
    for cat, ids in want.items():
        got = read_jsonl(tmp_path / "o" / f"{cat}.jsonl")
        assert [r["id"] for r in got] == ids
        assert stats["kept"][cat] == stats["eligible"][cat] == len(ids)  # everything kept
        assert all(len(r["text"]) <= 10 for r in got)


def test_deterministic_and_independent_of_num_proc(chunks, tmp_path):
    root, _ = chunks
    outs = []
    for k, nproc in enumerate((1, 2, 1)):
        sp.fetch_category_samples(root, 5, tmp_path / f"o{k}", seed=42, num_proc=nproc)
        outs.append({p.name: p.read_bytes() for p in sorted((tmp_path / f"o{k}").iterdir())})
    assert outs[0] == outs[1] == outs[2]
    sp.fetch_category_samples(root, 5, tmp_path / "other", seed=43)
    assert (tmp_path / "other" / "c4.jsonl").read_bytes() != outs[0]["c4.jsonl"]


def test_per_set_layout(tmp_path):
    root = tmp_path / "dc"
    rows = []
    for name in SETS:
        for f in range(2):
            rel = f"train/{name}/part_{f}.jsonl.zst"
            recs = [{"text": _text(100 * f + i, name)} for i in range(1, 9)]  # no meta at all
            write_jsonl(root / rel, recs)
            rows += [(rel, i, name, r["text"]) for i, r in enumerate(recs, 1)]
    write_jsonl(root / "train" / "NotASet" / "x.jsonl.zst", [{"text": "ignored"}])
    stats = sp.fetch_category_samples(root / "train", 5, tmp_path / "o", seed=1)
    assert stats["layout"] == "per_set" and stats["shards"] == 14
    # relative paths are taken from the root given (here the train/ folder)
    want = _independent_sample([(r[0][len("train/"):], *r[1:]) for r in rows], 5, 1)
    for cat, ids in want.items():
        assert [r["id"] for r in read_jsonl(tmp_path / "o" / f"{cat}.jsonl")] == ids
        assert stats["kept"][cat] == 5 and stats["eligible"][cat] == 16


def test_set_map_merges_sets_and_renames(chunks, tmp_path):
    root, rows = chunks
    m = "RedPajamaCommonCrawl=web, RedPajamaC4=web,RedPajamaGithub=code"
    stats = sp.fetch_category_samples(root, 4, tmp_path / "o", mapping=m, seed=9)
    assert sorted(stats["kept"]) == ["code", "web"]
    mapping = sp.parse_set_map(m)
    want = _independent_sample(rows, 4, 9, mapping=mapping)
    assert [r["id"] for r in read_jsonl(tmp_path / "o" / "web.jsonl")] == want["web"]
    f = tmp_path / "map.yaml"
    f.write_text("RedPajamaBook: books\n")
    assert sp.parse_set_map(str(f)) == {"RedPajamaBook": "books"}
    for bad in ("RedPajamaBook", "RedPajamaBook=../x"):
        with pytest.raises(InputError):
            sp.parse_set_map(bad)


def test_corrupt_shards(chunks, tmp_path):
    root, rows = chunks
    bad_zst = root / "train/chunk1/example_train_9.jsonl.zst"
    bad_zst.write_bytes(b"\x28\xb5\x2f\xfd" + b"not really zstd" * 10)
    with pytest.raises(InputError) as e:
        sp.fetch_category_samples(root, 5, tmp_path / "o", seed=1)
    assert e.value.path == str(bad_zst)
    assert not (tmp_path / "o").exists()  # no partial output

    import zstandard

    bad_json = root / "train/chunk2/example_train_8.jsonl.zst"
    bad_json.write_bytes(zstandard.ZstdCompressor().compress(
        b'{"text": "ok", "meta": {"redpajama_set_name": "RedPajamaC4"}}\n{"text": oops}\n'))
    bad_zst.unlink()
    with pytest.raises(InputError, match="invalid JSON") as e:
        sp.fetch_category_samples(root, 5, tmp_path / "o", seed=1)
    assert e.value.path == str(bad_json) and e.value.line == 2

    no_set = root / "train/chunk2/example_train_7.jsonl.zst"
    write_jsonl(no_set, [{"text": "no set name", "meta": {}}])
    bad_zst.write_bytes(b"garbage")
    stats = sp.fetch_category_samples(root, 5, tmp_path / "o", seed=1, skip_bad=True)
    assert len(stats["bad_shards"]) == 3 and stats["shards"] == 8
    assert any("redpajama_set_name" in m for m in stats["bad_shards"])
    # the skipped shards contribute nothing: same sample as the clean tree
    want = _independent_sample(rows, 5, 1)
    for cat, ids in want.items():
        assert [r["id"] for r in read_jsonl(tmp_path / "o" / f"{cat}.jsonl")] == ids


@pytest.mark.parametrize("damage", ["truncated", "emptied"])
def test_a_truncated_or_emptied_shard_is_corruption(chunks, tmp_path, damage):
    """A .jsonl.zst cut inside its zstd frame used to read as a shorter shard, exit 0."""
    root, rows = chunks
    shard = root / "train/chunk1/example_train_0.jsonl.zst"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"")
    with pytest.raises(InputError, match="truncated zstd|empty .zst") as e:
        sp.fetch_category_samples(root, 5, tmp_path / "o", seed=1)
    assert e.value.path == str(shard)
    stats = sp.fetch_category_samples(root, 5, tmp_path / "o", seed=1, skip_bad=True)
    assert len(stats["bad_shards"]) == 1 and "example_train_0" in stats["bad_shards"][0]


def test_output_policy(chunks, tmp_path):
    root, _ = chunks
    first = sp.fetch_category_samples(root, 2, tmp_path / "o")
    files = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o").iterdir()}
    assert "fetch_category_samples.done.json" in files
    # the same inputs and flags: skipped, nothing rewritten, the statistics returned
    assert sp.fetch_category_samples(root, 2, tmp_path / "o") == first
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "o").iterdir()} == files
    with pytest.raises(InputError, match="n_per_category 2 -> 3.*overwrite"):
        sp.fetch_category_samples(root, 3, tmp_path / "o")
    sp.fetch_category_samples(root, 3, tmp_path / "o", overwrite=True)
    assert len(read_jsonl(tmp_path / "o" / "c4.jsonl")) == 3
    # an output some other tool wrote (no completion marker) is never replaced silently
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "c4.jsonl").write_text("{}\n")
    with pytest.raises(InputError, match="without a completion marker"):
        sp.fetch_category_samples(root, 2, tmp_path / "p")


def test_ranks_give_the_bytes_of_one(chunks, tmp_path):
    from anatomy.execution import Ranks

    root, _ = chunks
    one = sp.fetch_category_samples(root, 4, tmp_path / "one", seed=3)
    for w in (2, 3):
        out = tmp_path / f"w{w}"
        results = [sp.fetch_category_samples(root, 4, out, seed=3, ranks=Ranks(r, w))
                   for r in range(w)]
        assert results[:-1] == [None] * (w - 1) and results[-1] == one
        assert not any(out.glob("*.parts"))  # merged parts are removed
        for f in (tmp_path / "one").glob("*.json*"):
            if f.name != "fetch_category_samples.done.json":
                assert (out / f.name).read_bytes() == f.read_bytes(), f.name


def test_no_shards_is_input_error(tmp_path):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(InputError, match="no shards"):
        sp.fetch_category_samples(tmp_path / "empty", 2, tmp_path / "o")
    with pytest.raises(InputError, match="not found"):
        sp.fetch_category_samples(tmp_path / "missing", 2, tmp_path / "o")


def test_script_main_and_help(chunks, tmp_path, capsys):
    import fetch_category_samples as script

    root, _ = chunks
    rc = script.main(["--slimpajama_root", str(root), "--n_per_category", "4", "--out_dir",
                      str(tmp_path / "o"), "--num_proc", "1", "--min_chars", "0", "--quiet"])
    out = capsys.readouterr().out
    assert rc == 0 and "5 shards (chunks layout)" in out
    assert "c4: 4 of" in out and "stackexchange: 4 of" in out
    with pytest.raises(SystemExit) as e:
        script.main(["--help"])
    assert e.value.code == 0 and "examples:" in capsys.readouterr().out


@pytest.mark.slow
def test_miniworld_pools_known_categories(tiny_world, tiny_truth, tmp_path):
    """On the miniworld: every sampled record's (shard, line) is, per the world's
    pool_membership truth file, a record of the category it was filed under."""
    import fetch_category_samples as script

    out = tmp_path / "samples"
    assert script.main(["--world", str(tiny_world), "--out_dir", str(out), "--n_per_category",
                        "20", "--min_chars", "0", "--quiet"]) == 0
    truth = {(r["shard"], r["line"]): r["category"]
             for r in read_jsonl(tiny_world / tiny_truth["pools"]["membership"])}
    cats = set(tiny_truth["pools"]["set_names"].values())
    assert {p.stem for p in out.glob("*.jsonl")} == cats
    for c in cats:
        recs = read_jsonl(out / f"{c}.jsonl")
        assert recs
        assert all(truth[(r["source"]["shard"], r["source"]["line"])] == c for r in recs)


def test_distinct_sketch_estimates_above_k():
    """Exact below k distinct values; above, within a few percent (KMV, 1/sqrt(k) error);
    merging two halves' sketches equals the sketch of the whole."""
    rng = np.random.default_rng(0)
    vals = rng.integers(0, 2**64, 50_000, dtype=np.uint64).tolist() * 2  # 50,000 twice
    sk = sp.DistinctSketch(k=1024, values=vals)
    assert not sk.exact and abs(sk.estimate() / 50_000 - 1) < 0.1
    a = sp.DistinctSketch(k=1024, values=vals[:60_000])
    merged = sp.DistinctSketch(k=1024, values=a.values() + vals[60_000:])
    assert merged.values() == sk.values()
    small = sp.DistinctSketch(k=1024, values=[5, 5, 7])
    assert small.exact and small.estimate() == 2


def test_a_category_left_empty_is_one_error_saying_why(chunks, tmp_path):
    root, _ = chunks
    with pytest.raises(InputError, match=r"no sample for 7 categories \(arxiv: \d+ records "
                                         r"shorter than --min_chars 100000"):
        sp.fetch_category_samples(root, 5, tmp_path / "o", min_chars=100_000)
    assert not (tmp_path / "o").exists()


def test_killed_mid_write_leaves_no_part_of_the_output(chunks, tmp_path, monkeypatch):
    """A writer killed after some category files used to leave a folder of some categories
    that a rerun refused and run_labelshift read as a smaller mixture."""
    from anatomy.mixture.classifier import load_category_samples

    root, _ = chunks
    out = tmp_path / "o"
    real, written = sp.write_jsonl, []

    def dies_on_the_third(path, recs):
        if len(written) == 2:
            raise KeyboardInterrupt  # the process is killed mid-write
        written.append(path)
        return real(path, recs)

    monkeypatch.setattr(sp, "write_jsonl", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        sp.fetch_category_samples(root, 5, out, seed=1)
    assert not list(out.glob("*.jsonl"))  # the two finished files never appeared
    with pytest.raises(InputError, match="incomplete output of fetch_category_samples"):
        load_category_samples(out)
    monkeypatch.setattr(sp, "write_jsonl", real)
    stats = sp.fetch_category_samples(root, 5, out, seed=1)  # a rerun simply completes
    assert sum(stats["kept"].values()) == 35 and len(list(out.glob("*.jsonl"))) == 7
    assert len(load_category_samples(out).categories) == 7
