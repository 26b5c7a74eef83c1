"""The miniworld is what its truth file says it is.

Independent checks: the trainer's per-step batch hashes (recorded while training) against
the OLMo reader; the mixture against a recount of the per-token category files through
the data order; planted copy counts against a brute-force search of the trained token
stream; a second build with the same seed against the first, byte for byte.
"""

from __future__ import annotations

import filecmp
import hashlib
import http.server
import subprocess
import sys
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from anatomy.io import InputError, read_jsonl
from anatomy.olmo_config import load_olmo_config
from anatomy.olmo_data import OlmoData
from anatomy.token_files import TokenFiles

ROOT = Path(__file__).resolve().parent.parent


def _trained_rows(world: Path, truth: dict, files: list[str], dtype: str) -> np.ndarray:
    """Rows of raw per-instance files in training order, rebuilt with plain numpy."""
    L = truth["seq_len"]
    parts = []
    for p in files:
        a = np.fromfile(world / p, dtype=dtype)
        parts.append(a[: len(a) // L * L].reshape(-1, L))
    order = np.fromfile(world / "global_indices.npy", dtype="<u4")
    return np.concatenate(parts)[order[: truth["n_trained_instances"]]]


def _stream(world: Path, truth: dict) -> np.ndarray:
    """The trained token stream."""
    return _trained_rows(world, truth, truth["token_files"], "<u2").ravel()


def test_layout_and_config(tiny_world, tiny_truth):
    cfg = load_olmo_config(tiny_world / "config.yaml")
    assert cfg.seq_len == tiny_truth["seq_len"] == 128
    assert cfg.eos_token_id == tiny_truth["vocab_size"] - 1 == tiny_truth["eos_token_id"]
    assert cfg.pad_token_id == 1
    files = TokenFiles(cfg.paths, cfg.seq_len, cfg.dtype)
    assert len(files) == tiny_truth["n_instances"]  # tails shorter than an instance dropped
    order = np.fromfile(tiny_world / "global_indices.npy", dtype="<u4")
    assert np.array_equal(np.sort(order), np.arange(len(files)))  # a permutation
    assert all(0 < t < cfg.seq_len for t in tiny_truth["tails"])


def test_reader_returns_what_the_trainer_consumed(tiny_world, tiny_truth):
    data = OlmoData(load_olmo_config(tiny_world / "config.yaml"))
    B = tiny_truth["batch_size"]
    rng = np.random.default_rng(1)
    for step in sorted(rng.choice(tiny_truth["steps"]["total"], 12, replace=False)):
        batch = np.stack([data.tokens_at(int(step), b) for b in range(B)])
        digest = hashlib.sha1(batch.astype("<u2").tobytes()).hexdigest()
        assert digest == tiny_truth["train"]["batch_sha1"][step], step


def test_mixture_matches_recount(tiny_world, tiny_truth):
    trained = _trained_rows(tiny_world, tiny_truth, tiny_truth["category_files"], "u1")
    counts = np.bincount(trained.ravel(), minlength=len(tiny_truth["categories"]))
    mix = tiny_truth["mixture"]
    assert sum(mix.values()) == pytest.approx(1.0, abs=1e-9)
    for i, c in enumerate(tiny_truth["categories"]):
        assert tiny_truth["mixture_tokens"][c] == counts[i]
        assert mix[c] == pytest.approx(counts[i] / counts.sum(), abs=1e-12)
    assert min(mix.values()) > 0.03  # every category is really there


def test_planted_counts_by_brute_force(tiny_world, tiny_truth):
    eos = tiny_truth["eos_token_id"]
    # a virtual separator in front: the stream may open with a planted copy
    stream = np.concatenate([[eos], _stream(tiny_world, tiny_truth)]).astype(np.uint16)
    docs = {r["doc"]: r for r in read_jsonl(tiny_world / "truth" / "docs.jsonl.gz")}
    # count whole-document matches (EOS on both sides) of each planted passage in the stream
    bounds = np.flatnonzero(stream == eos)
    spans = {}
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        key = hashlib.sha1(stream[a + 1:b].astype("<u2").tobytes()).hexdigest()
        spans[key] = spans.get(key, 0) + 1
    planted = tiny_truth["planted"]
    for kind in ("mia", "mia_control", "mem_dense", "mem_spread", "mem_late"):
        for row in planted[kind]:
            assert row["count"] == row["trained_count"]
            # copies split across an instance boundary are trained but not EOS-delimited
            # inside one instance; the stream is contiguous, so each copy is found
            assert spans.get(row["sha1"], 0) == row["count"], (kind, row["doc"])
            assert docs[row["doc"]]["sha1"] == row["sha1"]
    counts = sorted({r["planted"] for r in planted["mia"]})
    assert counts == list(tiny_truth["preset"]["mia_counts"])
    T1 = tiny_truth["steps"]["member"][1]
    assert all(max(r["steps"]) < T1 for r in planted["mia"])


def test_checkpoints_and_tokenizer_load(tiny_world, tiny_truth):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_world / "tokenizer")
    assert len(tok) == tiny_truth["vocab_size"]
    # the OLMo trap reproduced: the tokenizer's eos_token is not the file separator
    assert tok.eos_token_id == 0 != tiny_truth["eos_token_id"]
    steps = [c["step"] for c in tiny_truth["checkpoints"]]
    T1 = tiny_truth["steps"]["member"][1]
    assert steps == [T1, 2 * T1, 3 * T1, 4 * T1, tiny_truth["steps"]["total"]]
    for c in tiny_truth["checkpoints"]:
        seen = np.load(tiny_world / c["seen_instances"])
        assert len(seen) == c["step"] * tiny_truth["batch_size"]
    m = AutoModelForCausalLM.from_pretrained(tiny_world / tiny_truth["checkpoints"][0]["path"])
    assert m.config.model_type == "olmo" and m.config.vocab_size == tiny_truth["vocab_size"]


def test_pools_layout_and_rates(tiny_world, tiny_truth):
    pools = tiny_truth["pools"]
    rows = read_jsonl(tiny_world / pools["membership"])
    for shard in pools["shards"]:
        assert shard.startswith("train/chunk") and shard.endswith(".jsonl.zst")
        recs = read_jsonl(tiny_world / "pools" / shard)
        assert all(set(r) == {"text", "meta"} for r in recs)
        assert all(r["meta"]["redpajama_set_name"] in pools["set_names"] for r in recs)
    for c, info in pools["categories"].items():
        mine = [r for r in rows if r["category"] == c]
        assert len(mine) == info["n"]
        assert sum(r["trained"] for r in mine) == info["n_trained"]


def test_the_matched_pools_members_follow_the_training_mixture(tiny_world, tiny_truth):
    """The Min-K%++ arm estimates the member mixture of its pool: the matched pool's members
    are in the training proportions (recounted from its membership file), the rates pool's
    are not; each has a spec the evaluator scores against."""
    import yaml

    size = tiny_truth["preset"]["pool_size"]
    mix = tiny_truth["mixture"]
    for key in ("pools", "pools_rates"):
        pool = tiny_truth[key]
        rows = read_jsonl(tiny_world / pool["membership"])
        members = {c: sum(r["trained"] for r in rows if r["category"] == c) for c in mix}
        total = sum(members.values())
        assert all(pool["categories"][c]["n"] == size for c in mix)  # balanced, as published
        share = {c: members[c] / total for c in mix}
        assert share == pytest.approx(pool["member_mixture"])
        spec = yaml.safe_load((tiny_world / "truth" / f"{key}_members_spec.yaml").read_text())
        assert spec["category_weights"] == pytest.approx(share, abs=1e-6)
        gap = max(abs(share[c] - mix[c]) for c in mix)
        if key == "pools":  # 2 * pool_size members split by largest remainders
            assert gap <= 1 / total
        else:
            assert gap > 0.05


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single ``Range: bytes=a-b`` support (http.server lacks it)."""

    def log_message(self, *a):
        pass

    def send_head(self):
        rng = self.headers.get("Range")
        if not rng:
            return super().send_head()
        path = Path(self.translate_path(self.path))
        data = path.read_bytes()
        a, b = (int(x) for x in rng.split("=")[1].split("-"))
        body = data[a:b + 1]
        self.send_response(206)
        self.send_header("Content-Range", f"bytes {a}-{a + len(body) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        import io as _io

        return _io.BytesIO(body)


def test_http_range_reads_agree_with_local(tiny_world, tiny_truth):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                          partial(_QuietHandler, directory=str(tiny_world)))
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    try:
        base = f"http://127.0.0.1:{srv.server_port}"
        cfg = load_olmo_config(tiny_world / "config.yaml")
        local = TokenFiles(cfg.paths, cfg.seq_len, cfg.dtype)
        remote = TokenFiles([f"{base}/{p}" for p in tiny_truth["token_files"]], cfg.seq_len,
                            cfg.dtype)
        assert len(remote) == len(local)
        ids = [0, 1, len(local) // 2, len(local) - 1]
        for i, r in zip(ids, remote.instances(ids, num_workers=2), strict=True):
            assert np.array_equal(r, local.instance(i))
        data = OlmoData(cfg, global_indices=f"{base}/global_indices.npy")
        assert np.array_equal(data.tokens_at(3, 5), OlmoData(cfg).tokens_at(3, 5))
    finally:
        srv.shutdown()


def test_missing_token_file_is_one_clear_error(tiny_world, tmp_path):
    cfg = load_olmo_config(tiny_world / "config.yaml")
    with pytest.raises(InputError, match="part-00"):
        _ = TokenFiles([*cfg.paths[:-1], str(tmp_path / "part-009-00000.npy")],
                       cfg.seq_len).counts


def test_build_world_cli_bad_preset_exits_2(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "build_world.py"), "--preset", "huge",
                        "--out", str(tmp_path / "w")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == ["error: unknown preset 'huge' (choose from tiny, "
                                             "micro, small)"]


@pytest.mark.slow
def test_two_builds_are_identical(tmp_path):
    """Every file of two builds (checkpoints included) is byte-identical. On the micro preset
    (the same code path as tiny, seconds instead of a minute of training)."""
    import build_world as script
    from anatomy.world.build import build_world
    from anatomy.world.presets import get_preset

    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--preset", "micro", "--seed", "3", "--out", str(a), "--no_evidence", "--quiet"]
    assert script.main(args) == 0  # the script: the world plus its done.json marker
    build_world(get_preset("micro"), b, seed=3)
    a_files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    b_files = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert sorted(map(str, a_files)) == sorted(["done.json", *map(str, b_files)])
    assert len(b_files) > 40
    different = [str(p) for p in b_files if not filecmp.cmp(a / p, b / p, shallow=False)]
    assert different == []
    # the output policy: the same preset and seed keep the world, another seed is refused
    mtime = (a / "truth.json").stat().st_mtime_ns
    assert script.main(args) == 0 and (a / "truth.json").stat().st_mtime_ns == mtime
    with pytest.raises(InputError, match=r"seed 3 -> 4 \(pass --overwrite"):
        script.main(args[:3] + ["4"] + args[4:])


def test_a_failed_rebuild_leaves_the_old_world(tmp_path, monkeypatch):
    import build_world as script
    from anatomy import lm_training as train

    a = tmp_path / "a"
    args = ["--preset", "micro", "--seed", "3", "--out", str(a), "--no_evidence", "--quiet"]
    assert script.main(args) == 0
    before = {p.relative_to(a): p.read_bytes() for p in a.rglob("*") if p.is_file()}

    def broken(*_a, **_k):
        raise RuntimeError("killed mid-training")

    monkeypatch.setattr(train, "train", broken)
    with pytest.raises(RuntimeError, match="killed"):
        script.main(args + ["--overwrite"])
    assert {p.relative_to(a): p.read_bytes() for p in a.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a"]  # no .a.building left
