"""Faults a new user runs into, each one clear error line (exit 2) or a counted skip, with
nothing half-written: remote reads that fail after their retries, a token file changed since
training, NaN vectors and weights, an empty pool, lone surrogates, line numbers after blank
lines, a rerun with other methods, and temporaries left by killed writers."""

from __future__ import annotations

import http.server
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml

from anatomy import io
from anatomy.io import InputError
from tests.conftest import first_target

ROOT = Path(__file__).resolve().parent.parent


def _one_line_exit_2(args: list[str], match: str) -> str:
    p = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=300, env={"HF_HUB_OFFLINE": "1", "TQDM_DISABLE": "1",
                                         "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    lines = [x for x in p.stderr.strip().splitlines() if x.startswith("error: ")]
    assert p.returncode == 2, p.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert match in lines[0], lines[0]
    return lines[0]


class _Failing(http.server.BaseHTTPRequestHandler):
    """500 for the data order, 404 for token files: a broken mirror."""

    def log_message(self, *a):
        pass

    def _answer(self):
        status = 500 if "global_indices" in self.path else 404
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = do_GET = _answer


@pytest.fixture
def remote_config(tiny_world, tmp_path):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Failing)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    cfg = yaml.safe_load((tiny_world / "config.yaml").read_text())
    base = f"http://127.0.0.1:{srv.server_address[1]}"

    def write(order: str, tokens_ok: bool) -> Path:
        c = dict(cfg, data=dict(cfg["data"]), data_anatomy=dict(cfg["data_anatomy"]))
        c["data"]["paths"] = ([str(tiny_world / p) for p in cfg["data"]["paths"]] if tokens_ok
                              else [f"{base}/{p}" for p in cfg["data"]["paths"]])
        c["data_anatomy"]["global_indices"] = order
        c["data_anatomy"]["tokenizer"] = str(tiny_world / "tokenizer")
        path = tmp_path / f"config-{len(list(tmp_path.glob('config-*')))}.yaml"
        path.write_text(yaml.safe_dump(c))
        return path

    yield write, base
    srv.shutdown()


def test_remote_failures_are_one_line(remote_config, tiny_world, tmp_path):
    write, base = remote_config
    common = ["sample.py", "--step_start", "0", "--step_end", "4", "--sample_start", "0",
              "--sample_end", "4", "--out_dir", str(tmp_path / "out"), "--retries", "1",
              "--retry_backoff", "0.01", "--world", str(tmp_path / "none")]
    # a data order that always answers 500
    _one_line_exit_2([*common, "--config", str(write(f"{base}/global_indices.npy", True))],
                     "HTTP 500")
    # token files whose HEAD is 404
    order = str(tiny_world / "global_indices.npy")
    _one_line_exit_2([*common, "--config", str(write(order, False))], "HTTP 404")
    # a server that is down
    _one_line_exit_2([*common, "--config", str(write("http://127.0.0.1:9/order.npy", True))],
                     "failed after 2 attempts")
    assert not (tmp_path / "out").exists()


def test_a_token_file_changed_since_training_is_refused(tiny_world, tmp_path):
    """A shorter token file shifts every later instance (OLMo computes offsets from file
    sizes): 92 of 165 sampled positions got other documents' text, exit 0. The world's
    config records every file's size."""
    w = tmp_path / "w"
    shutil.copytree(tiny_world, w, ignore=shutil.ignore_patterns("model"))
    part = w / "tokens" / "part-000-00000.npy"
    part.write_bytes(part.read_bytes()[: -2 * 128])  # one instance shorter
    line = _one_line_exit_2(["sample.py", "--world", str(w), "--step_start", "0",
                             "--step_end", "4", "--sample_start", "0", "--sample_end", "8",
                             "--out_dir", str(tmp_path / "out")],
                            "the config records")
    assert "part-000-00000.npy" in line and not (tmp_path / "out").exists()


def test_nan_vectors_and_weights_are_named(tiny_world, tmp_path):
    import clustering
    import generate_vecs
    import run_mia

    pool = [{"input": f"text number {i}", "label": i % 2} for i in range(8)]
    io.write_jsonl(tmp_path / "p_64_8.jsonl", pool)
    vecs = np.random.default_rng(0).normal(size=(8, 4)).astype(np.float32)
    vecs[5, 2] = np.nan
    io.save_npy(tmp_path / "vecs" / "p_64_8.npy", vecs)
    with pytest.raises(InputError, match=r"row 5 \(pool record 6\) holds NaN"):
        clustering.main(["--model_name", "p", "--max_length", "64", "--num_data", "8",
                         "--num_sample", "4", "--num_cluster", "1", "--data_dir",
                         str(tmp_path), "--quiet"])
    assert not list(tmp_path.glob("p_64_4_*"))
    # a checkpoint with a NaN weight
    import torch
    from transformers import AutoModelForCausalLM

    src = tiny_world / "model" / first_target(tiny_world)[1]
    model = AutoModelForCausalLM.from_pretrained(src)
    with torch.no_grad():
        model.model.layers[1].mlp.up_proj.weight[0, 0] = float("nan")
    bad = tmp_path / "badmodel"
    model.save_pretrained(bad)
    shutil.copy(tiny_world / "tokenizer" / "tokenizer.json", bad)
    for f in (tiny_world / "tokenizer").iterdir():
        shutil.copy(f, bad / f.name)
    with pytest.raises(InputError, match=r"model.layers.1.mlp.up_proj.weight holds 1 NaN"):
        run_mia.main(["--dataset", "p_64_8", "--data_dir", str(tmp_path), "--target_model",
                      str(bad), "--methods", "loss", "--output_dir", str(tmp_path / "r"),
                      "--quiet"])
    # an empty pool
    io.write_jsonl(tmp_path / "empty.jsonl", [])
    with pytest.raises(InputError, match="the pool is empty"):
        generate_vecs.main(["--dataset_name", "empty", "--data_dir", str(tmp_path),
                            "--quiet"])
    assert not (tmp_path / "vecs" / "empty.npy").exists()


def test_lone_surrogates_are_one_error_or_a_counted_skip(tiny_world, tmp_path):
    import generate_vecs
    import run_mia
    from anatomy.mixture import slimpajama as sp

    lines = ['{"input": "fine text", "label": 1}', '{"input": "bad \\ud83d text", "label": 0}']
    (tmp_path / "s.jsonl").write_text("\n".join(lines) + "\n")
    with pytest.raises(InputError, match=r"s\.jsonl:2: a string holds a lone surrogate"):
        run_mia.main(["--dataset", "s", "--data_dir", str(tmp_path), "--world",
                      str(tiny_world), "--step", str(first_target(tiny_world)[0]),
                      "--output_dir", str(tmp_path / "r"),
                      "--quiet"])
    with pytest.raises(InputError, match="lone surrogate"):
        generate_vecs.main(["--dataset_name", "s", "--data_dir", str(tmp_path), "--quiet"])
    shard = tmp_path / "sp" / "train" / "chunk1" / "example_train_0.jsonl"
    shard.parent.mkdir(parents=True)
    good = [f'{{"text": "document {i} of c4", "meta": {{"redpajama_set_name": "RedPajamaC4"}}}}'
            for i in range(5)]
    shard.write_text("\n".join(good) + "\n")
    (shard.parent / "example_train_1.jsonl").write_text(
        '{"text": "x \\udc00", "meta": {"redpajama_set_name": "RedPajamaC4"}}\n')
    with pytest.raises(InputError, match="example_train_1.jsonl:1: a string holds a lone"):
        sp.fetch_category_samples(tmp_path / "sp", 2, tmp_path / "o", mapping={
            "RedPajamaC4": "c4"})
    stats = sp.fetch_category_samples(tmp_path / "sp", 2, tmp_path / "o", skip_bad=True,
                                      mapping={"RedPajamaC4": "c4"})
    assert len(stats["bad_shards"]) == 1 and stats["kept"] == {"c4": 2}


def test_filter_reports_file_line_numbers(tmp_path):
    from anatomy.mia.pool import list_sample_files, take_class

    d = tmp_path / "s"
    d.mkdir()
    (d / "0:4.jsonl").write_text('{"input": "a", "idx": [1, 1], "length": 40}\n\n\n'
                                 '{"input": "b", "idx": "oops", "length": 40}\n')
    with pytest.raises(InputError, match=r"0:4\.jsonl:4: "):  # file line 4, after blanks
        take_class(list_sample_files(d), 5, 64, 1, 16)


def test_a_rerun_with_other_methods_is_refused(tiny_world, tmp_path, capsys):
    import run_mia

    io.write_jsonl(tmp_path / "d.jsonl", [{"input": f"some text {i} here", "label": i % 2}
                                          for i in range(6)])
    args = ["--dataset", "d", "--data_dir", str(tmp_path), "--world", str(tiny_world),
            "--step", str(first_target(tiny_world)[0]), "--output_dir", str(tmp_path / "r"),
            "--quiet"]
    assert run_mia.main([*args, "--methods", "loss"]) == 0
    with pytest.raises(InputError, match=r"methods \["):
        run_mia.main([*args, "--methods", "loss", "zlib"])


def test_temporaries_of_killed_writers_are_removed(tmp_path):
    """A writer killed between its temporary file and the rename left ``.NAME.*.tmp``
    behind forever; the next writer of NAME removes those whose process is gone."""
    dead = subprocess.Popen(["true"])
    dead.wait()
    left = tmp_path / f".out.json.{io._HOST}.{dead.pid}.x1y2z3w4.tmp"
    left.write_text('{"partial": ')
    other = tmp_path / ".other.json.somehost.1.a.tmp"  # another file's: untouched
    other.write_text("")
    io.write_json(tmp_path / "out.json", {"ok": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == [other.name, "out.json"]
