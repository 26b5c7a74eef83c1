"""pretokenize.py: MLM rows packed as contrastors v1 / run_mlm's group_texts do (both modes)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import pretokenize as script
from anatomy.contrastive import pretokenize as pt
from anatomy.io import InputError

CLS, SEP = 101, 102  # bert-base-uncased's [CLS] / [SEP]


@pytest.fixture(scope="module")
def bert():
    tok, src = pt.load_mlm_tokenizer("bert-base-uncased")
    return tok


def _texts(n: int) -> list[str]:
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota",
             "kappa"]
    return [" ".join(words[(i + j) % 10] for j in range(1 + i % 7)) for i in range(n)]


def _reference(token_lists: list[list[int]], seq_len: int, mode: str, batch: int = 1000):
    """Independent group-texts over plain lists: rows, dropped tokens."""
    rows, dropped = [], 0
    if mode == "across_batches":
        flat = [t for x in token_lists for t in x]
        rows = [flat[i:i + seq_len] for i in range(0, len(flat), seq_len)]
        return rows, 0
    for b in range(0, len(token_lists), batch):
        flat = [t for x in token_lists[b:b + batch] for t in x]
        if len(flat) < seq_len:
            if flat:
                rows.append(flat)
            continue
        keep = len(flat) // seq_len * seq_len
        dropped += len(flat) - keep
        rows += [flat[i:i + seq_len] for i in range(0, keep, seq_len)]
    return rows, dropped


def test_offline_bert_vocab_and_special_tokens(bert):
    assert len(bert) == 30522
    assert bert("naïve café", add_special_tokens=False)["input_ids"] == [15743, 7668]
    enc = pt.tokenize_batch({"text": ["naïve café", "hello"]}, bert)
    assert enc["input_ids"][0] == [CLS, 15743, 7668, SEP]
    assert enc["special_tokens_mask"][0] == [1, 0, 0, 1]
    assert set(enc) == set(pt.COLUMNS)
    assert enc["token_type_ids"][1] == [0, 0, 0] and enc["attention_mask"][1] == [1, 1, 1]


def test_group_texts_short_batch_kept():
    b = {"input_ids": [[1, 2], [3]], "attention_mask": [[1, 1], [1]]}
    assert pt.group_texts(b, 4) == {"input_ids": [[1, 2, 3]], "attention_mask": [[1, 1, 1]]}
    assert pt.group_texts(b, 2)["input_ids"] == [[1, 2]]  # tail [3] dropped
    assert pt.group_texts({"input_ids": []}, 4) == {"input_ids": []}
    assert list(pt.pack_stream([b, {"input_ids": [[4]], "attention_mask": [[1]]}], 3)) == [
        {"input_ids": [1, 2, 3], "attention_mask": [1, 1, 1]},
        {"input_ids": [4], "attention_mask": [1]}]


@pytest.mark.parametrize("mode", ["batch", "across_batches"])
def test_packing_equals_reference(bert, mode):
    import datasets

    # 2,003 texts: map batches of 1000, 1000 and 3; at seq_len 16 the first two batches
    # have tails, the third (8 tokens) is shorter than seq_len: kept as one short row
    texts = _texts(2000) + ["a", "b", ""]
    ds = datasets.Dataset.from_dict({"text": texts})
    lists = [bert(t)["input_ids"] for t in texts]
    masks = [bert(t, return_special_tokens_mask=True)["special_tokens_mask"] for t in texts]
    for seq_len in (16, 8192):
        res = pt.pretokenize_dataset(ds, bert, seq_len, mode, num_workers=1)
        want, dropped = _reference(lists, seq_len, mode)
        got = res.dataset["input_ids"]
        assert got == want
        assert res.dataset["special_tokens_mask"] == _reference(masks, seq_len, mode)[0]
        assert res.stats["dropped_tokens"] == dropped
        assert res.stats["modes"]["batch"]["dropped_tokens"] == _reference(
            lists, seq_len, "batch")[1]
        assert res.stats["tokens"] == sum(map(len, lists))
        assert res.stats["texts"] == len(texts)
        if mode == "batch" and seq_len == 16:
            assert dropped > 0 and len(got[-1]) == 8  # the last batch: 3 + 3 + 2 tokens
        if seq_len == 8192 and mode == "batch":
            # every batch is shorter than seq_len: one short row per batch, nothing dropped
            assert len(got) == 3 and dropped == 0
    assert sum(x.count(CLS) for x in got) == len(texts)
    assert sum(x.count(SEP) for x in got) == len(texts)


def _write_jsonl(path: Path, texts: list[str]) -> Path:
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    return path


def test_cli_hf_and_olmo_read_back_and_rerun(tmp_path, capsys):
    import datasets

    src = _write_jsonl(tmp_path / "docs.jsonl", _texts(50))
    txt = tmp_path / "more.txt"
    txt.write_text("first paragraph here\nstill first\n\nsecond paragraph\n\n\n")
    hf, olmo = tmp_path / "hf", tmp_path / "olmo"
    base = ["--tokenizer_name", "bert-base-uncased", "--seq_len", "32", "--num_workers", "1",
            "--dataset", str(src), "--dataset", str(txt), "--quiet",
            "--pack", "across_batches"]
    assert script.main([*base, "--hf_save_name", str(hf)]) == 0
    rows = datasets.load_from_disk(str(hf))
    assert rows.column_names == list(pt.COLUMNS)
    rep = json.loads((tmp_path / "hf.report.json").read_text())
    assert rep["texts"] == 52 and rep["dropped_tokens"] == 0 and rep["rows"] == len(rows)
    assert "written" in capsys.readouterr().out

    assert script.main([*base, "--hf_save_name", str(olmo), "--format", "olmo"]) == 0
    meta = json.loads((olmo / "meta.json").read_text())
    assert meta["dtype"] == "uint16" and meta["rows"] == len(rows) and meta["seq_len"] == 32
    ids = np.fromfile(olmo / "input_ids.npy", dtype="<u2")
    mask = np.fromfile(olmo / "special_tokens_mask.npy", dtype="u1")
    flat = [t for r in rows["input_ids"] for t in r]
    assert ids.tolist() == flat
    assert mask.tolist() == [t for r in rows["special_tokens_mask"] for t in r]
    n = len(flat) // 32 * 32
    assert ids[:n].reshape(-1, 32).tolist() == rows["input_ids"][:n // 32]

    # rerun: skipped; changed flags: refused without --overwrite
    capsys.readouterr()
    assert script.main([*base, "--hf_save_name", str(hf)]) == 0
    assert "(skipped)" in capsys.readouterr().out
    with pytest.raises(InputError, match="seq_len 32 -> 16"):
        script.main([*base, "--hf_save_name", str(hf), "--seq_len", "16"])


def test_bad_inputs(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n\n{"text": oops}\n')
    with pytest.raises(InputError) as e:
        pt.load_sources([str(bad)])
    assert e.value.path == str(bad) and e.value.line == 3
    missing = tmp_path / "m.jsonl"
    missing.write_text('{"text": "ok"}\n{"body": "x"}\n')
    with pytest.raises(InputError, match='missing field "text"') as e:
        pt.load_sources([str(missing)])
    assert e.value.line == 2
    with pytest.raises(InputError, match="cannot load HF dataset"):  # offline (conftest)
        pt.load_sources(["some-org/some-dataset-that-is-not-here"])
    with pytest.raises(InputError, match="offline"):
        pt.pretokenize([str(bad)], "bert-base-uncased", 16, tmp_path / "o",
                       push_repo="me/x")
