"""anatomy.execution: ranks, threads, fingerprints, the output policy, parts and merges.

Independent checks: a toy step (unit u -> u**2) whose merged output is compared byte for byte
across 1, 2 and 3 ranks; the policy branches on real files; and real processes on the tiny
world, compared by sha256 with one process: torchrun (2 ranks) of run_mia.py and
generate_vecs.py, two ``--rank`` processes of fetch_category_samples.py (a corpus step), and
a rank killed with SIGKILL mid-run whose rerun computes only its missing units.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from anatomy import __version__, execution, io
from anatomy.execution import Output, Ranks, fingerprint, run_step
from anatomy.io import InputError
from tests.conftest import first_target

ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------
# ranks and threads


def test_ranks_from_flags_torchrun_slurm_or_one_process():
    assert execution.resolve_ranks(1, 4, {}) == Ranks(1, 4, 0, 1, "flags")
    tr = {"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"}
    assert execution.resolve_ranks(None, None, tr) == Ranks(3, 8, 1, 2, "torchrun")
    # flags win over the environment
    assert execution.resolve_ranks(0, 2, tr).source == "flags"
    # --array=1-15:2: ids 1, 3, ..., 15 are ranks 0..7
    slurm = {"SLURM_ARRAY_TASK_ID": "7", "SLURM_ARRAY_TASK_COUNT": "8",
             "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_STEP": "2"}
    assert execution.resolve_ranks(None, None, slurm) == Ranks(3, 8, 0, 1, "slurm")
    assert execution.resolve_ranks(None, None, {}) == Ranks()
    with pytest.raises(InputError, match="together"):
        execution.resolve_ranks(1, None, {})
    with pytest.raises(InputError, match="0 <= rank < world_size"):
        execution.resolve_ranks(2, 2, {})
    with pytest.raises(InputError, match="not an integer"):
        execution.resolve_ranks(None, None, {"RANK": "x", "WORLD_SIZE": "2"})
    assert Ranks(1, 3).units(8) == [1, 4, 7]


def test_thread_share():
    tr = Ranks(0, 4, 0, 4, "torchrun")
    assert execution.thread_share(tr, environ={"OMP_NUM_THREADS": "1"}, cores=16) == 4
    assert execution.thread_share(Ranks(), environ={}, cores=16) == 16
    assert execution.thread_share(Ranks(0, 2, 0, 1, "flags"), environ={"OMP_NUM_THREADS": "3"},
                                  cores=16) == 3
    assert execution.thread_share(tr, threads=5, environ={}, cores=16) == 5
    assert execution.thread_share(Ranks(0, 8, 0, 8, "torchrun"), environ={}, cores=2) == 1
    with pytest.raises(InputError):
        execution.thread_share(Ranks(), threads=0)


def test_version_matches_pyproject():
    text = (ROOT / "pyproject.toml").read_text()
    assert re.search(r'^version = "([^"]+)"', text, re.M).group(1) == __version__


# ---------------------------------------------------------------------------------------
# fingerprints and the output policy


def test_fingerprint_identity_and_differences(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text('{"x": 1}\n')
    b = tmp_path / "b.jsonl"
    b.write_text('{"x": 1}\n')
    fa = fingerprint("s", {"data": a}, {"k": 1, "seed": 0})
    # same content under another path: the same fingerprint (moved inputs still match)
    assert fingerprint("s", {"data": b}, {"k": 1, "seed": 0}).digest() == fa.digest()
    b.write_text('{"x": 2}\n')
    fb = fingerprint("s", {"data": b}, {"k": 2, "seed": 0})
    assert fb.differences(fa) == [f"input data ({b}) changed", "k 1 -> 2"]
    assert fingerprint("s", {"m": "org/model"}, {}).inputs["m"] == {"name": "org/model"}
    d = tmp_path / "folder"
    d.mkdir()
    (d / "w.bin").write_bytes(b"123")
    f1 = fingerprint("s", {"m": d}).digest()
    (d / "x.done.json").write_text("{}")  # markers are not content
    assert fingerprint("s", {"m": d}).digest() == f1
    (d / "w.bin").write_bytes(b"124")
    assert fingerprint("s", {"m": d}).digest() != f1


def test_output_policy_branches(tmp_path, caplog):
    out = Output.file(tmp_path / "o.npy")
    fp = fingerprint("s", {}, {"k": 1})
    assert out.marker == tmp_path / "o.npy.done.json"
    assert execution.check_output(out, fp) is True  # missing: compute
    io.save_npy(out.files[0], np.arange(3))
    with pytest.raises(InputError, match="without a completion marker"):
        execution.check_output(out, fp)
    execution.mark_output(out, fp, {"rows": 3})
    assert execution.check_output(out, fp) is False  # same fingerprint: skip
    assert execution.recorded_summary(out) == {"rows": 3}
    with pytest.raises(InputError, match=r"o\.npy: exists from other inputs or flags: k 1 -> 2"):
        execution.check_output(out, fingerprint("s", {}, {"k": 2}))
    assert execution.check_output(out, fingerprint("s", {}, {"k": 2}), overwrite=True)
    assert not out.marker.exists()  # the marker goes before anything is recomputed
    execution.mark_output(out, fp)
    out.files[0].write_bytes(b"truncated")
    assert execution.check_output(out, fp) is True  # marked but changed: computed again


class Squares:
    """A toy step: unit u -> [u*u]; the merge writes them in unit order as one NPY."""

    name = "squares"

    def __init__(self, out: Path, n: int, k: int = 1):
        self.output = Output.file(out)
        self.fingerprint = fingerprint("squares", {}, {"n": n, "k": k})
        self.n_units = n
        self.computed: list[int] = []

    def compute_unit(self, u):
        self.computed.append(u)
        return {"v": np.array([u * u], np.float64), "meta": {"u": u}}

    def merge(self, load):
        parts = [load(u) for u in range(self.n_units)]
        assert [p["meta"]["u"] for p in parts] == list(range(self.n_units))
        io.save_npy(self.output.files[0], np.concatenate([p["v"] for p in parts]))
        return {"n": self.n_units}


def test_ranks_merge_to_the_bytes_of_one(tmp_path):
    one = run_step(Squares(tmp_path / "one.npy", 7))
    assert one.status == "merged" and one.lead and one.computed == 7
    want = (tmp_path / "one.npy").read_bytes()
    assert not (tmp_path / "one.npy.parts").exists()
    again = Squares(tmp_path / "one.npy", 7)
    assert run_step(again).status == "skipped" and again.computed == []
    for w in (2, 3):
        out = tmp_path / f"w{w}.npy"
        res = []
        for r in range(w):
            step = Squares(out, 7)
            res.append(run_step(step, Ranks(r, w)))
            assert step.computed == Ranks(r, w).units(7)  # its share, nothing else
        assert [x.status for x in res] == ["part"] * (w - 1) + ["merged"]
        assert res[0].missing == list(range(1, w))
        assert out.read_bytes() == want


def test_merge_alone_names_missing_ranks_and_resumes(tmp_path):
    out = tmp_path / "o.npy"
    run_step(Squares(out, 7), Ranks(0, 3))
    with pytest.raises(InputError, match=r"cannot merge squares: ranks 1-2 of 3 have no "
                                         r"finished part"):
        run_step(Squares(out, 7), merge_only=True)  # the world size is read off the parts
    # rank 2 was killed after its first unit: its rerun computes only the rest
    parts = execution.Parts(Output.file(out).parts_dir, Squares(out, 7).fingerprint, 3)
    parts.save_unit(2, Squares(out, 7).compute_unit(2))
    step = Squares(out, 7)
    assert run_step(step, Ranks(2, 3)).resumed == 1 and step.computed == [5]
    run_step(Squares(out, 7), Ranks(1, 3))
    assert out.is_file() and np.load(out).tolist() == [u * u for u in range(7)]
    # another flag: the parts of the old fingerprint are never mixed in
    with pytest.raises(InputError, match="k 1 -> 2"):
        run_step(Squares(out, 7, k=2))


def test_a_held_merge_lock_is_respected(tmp_path):
    out = tmp_path / "o.npy"
    run_step(Squares(out, 4), Ranks(0, 2))
    parts = execution.Parts(Output.file(out).parts_dir, Squares(out, 4).fingerprint, 2)
    fd = os.open(parts.root / "merge.lock", os.O_CREAT | os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        assert run_step(Squares(out, 4), Ranks(1, 2)).status == "part"  # someone merges
        assert not out.exists()
    finally:
        os.close(fd)
    assert run_step(Squares(out, 4), merge_only=True).status == "merged"


def test_unit_plan_and_ranges():
    plan = execution.UnitPlan(score=3, ref=0, recall=2)
    assert [plan.locate(u) for u in range(5)] == [("score", 0), ("score", 1), ("score", 2),
                                                  ("recall", 0), ("recall", 1)]
    assert plan.unit("recall", 1) == 4
    with pytest.raises(IndexError):
        plan.locate(5)
    assert execution._ranges([0, 1, 2, 5, 7, 8]) == "0-2, 5, 7-8"


# ---------------------------------------------------------------------------------------
# real processes


def _env(threads: int | None = 1) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TQDM_DISABLE="1",
               PYTHONPATH=str(ROOT))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    else:
        env.pop("OMP_NUM_THREADS", None)
    return env


def _run(args: list[str], **kw) -> subprocess.CompletedProcess:
    p = subprocess.run([sys.executable, *args], cwd=ROOT, env=kw.pop("env", _env()),
                       capture_output=True, text=True, timeout=600, **kw)
    assert p.returncode == 0, p.stderr[-3000:]
    return p


def _torchrun(args: list[str]) -> subprocess.CompletedProcess:
    # torchrun gives each rank OMP_NUM_THREADS=1 unless set; our share is cores // 2
    return _run(["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *args],
                env=_env(threads=None))


def _sha(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def splits(tiny_world, tmp_path_factory):
    d = tmp_path_factory.mktemp("exec_data")
    from anatomy.mia.construct import control_splits

    control_splits(tiny_world, d)
    return d


@pytest.mark.slow
def test_torchrun_run_mia_equals_one_process(tiny_world, splits, tmp_path):
    from anatomy.io import read_jsonl, write_jsonl

    # 12 members + 12 non-members of the control split: EM-MIA's all-prefix matrix is
    # quadratic, and 24 texts still make 6 prefix blocks over 2 ranks
    recs = read_jsonl(splits / "miniworld-tiny_control.jsonl")
    small = [r for r in recs if r["label"] == 1][:12] + [r for r in recs if r["label"] == 0][:12]
    (tmp_path / "data").mkdir()
    write_jsonl(tmp_path / "data" / "miniworld-tiny_control.jsonl", small)
    t1, rev = first_target(tiny_world)
    args = ["run_mia.py", "--world", str(tiny_world), "--dataset", "miniworld-tiny_control",
            "--data_dir", str(tmp_path / "data"), "--step", str(t1), "--methods", "loss",
            "minkpp", "emmia", "--prefix_block", "4", "--batch_size", "8", "--quiet"]
    # one process with 2 threads (2 units at a time) vs 2 ranks of 1 thread each
    _run([*args, "--output_dir", str(tmp_path / "one"), "--threads", "2"])
    p = _torchrun([*args, "--output_dir", str(tmp_path / "two")])
    one, two = _sha(tmp_path / "one"), _sha(tmp_path / "two")
    assert f"miniworld-tiny_control/{rev}/scores.jsonl" in one
    assert not any("parts" in k for k in two)  # merged and cleaned up
    # the markers record the same fingerprint; the result files are byte-identical
    assert one == two
    assert p.stdout.count("(merged)") == 1  # one rank merged and reported


@pytest.mark.slow
def test_torchrun_generate_vecs_equals_one_process(tiny_world, splits, tmp_path):
    import shutil

    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        shutil.copy(splits / "miniworld-tiny_planted.jsonl", tmp_path / name / "pool.jsonl")
    args = ["generate_vecs.py", "--dataset_name", "pool", "--batch_size", "8"]
    _run([*args, "--data_dir", str(tmp_path / "one"), "--threads", "2"])
    _torchrun([*args, "--data_dir", str(tmp_path / "two")])
    a, b = (tmp_path / "one/vecs/pool.npy"), (tmp_path / "two/vecs/pool.npy")
    assert np.load(a).shape == (80, 384)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.slow
def test_two_rank_processes_of_a_corpus_step_equal_one(tiny_world, tmp_path):
    args = ["fetch_category_samples.py", "--world", str(tiny_world), "--n_per_category", "20",
            "--min_chars", "0", "--num_proc", "1"]
    _run([*args, "--out_dir", str(tmp_path / "one")])
    procs = [subprocess.Popen([sys.executable, *args, "--out_dir", str(tmp_path / "two"),
                               "--rank", str(r), "--world_size", "2"], cwd=ROOT, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for r in (0, 1)]
    logs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], logs
    # each rank read its own shards (2 of the world's 4); exactly one merged
    assert sum("merged 2 parts" in err for _, err in logs) == 1
    assert _sha(tmp_path / "one") == _sha(tmp_path / "two")


@pytest.mark.slow
def test_killed_rank_resumes_only_its_own_units(tmp_path, capsys):
    """SIGKILL rank 1 of 2 after some of its units; rerun both ranks: the finished one is
    skipped, the killed one computes only its missing units, and the merge gives the bytes
    of an uninterrupted one-process run. (The baseline and rank 0 run in this process;
    rank 1 is a real process, killed and rerun.)"""
    import generate_vecs

    rng = np.random.default_rng(0)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while",
             "data", "flows"]
    recs = [{"input": " ".join(rng.choice(words, int(rng.integers(3, 30)))), "label": i % 2}
            for i in range(600)]
    for name in ("one", "two"):
        io.write_jsonl(tmp_path / name / "pool.jsonl", recs)
    args = ["--dataset_name", "pool", "--batch_size", "4"]
    assert generate_vecs.main([*args, "--data_dir", str(tmp_path / "one"), "--quiet"]) == 0
    two = [*args, "--data_dir", str(tmp_path / "two"), "--world_size", "2"]
    assert generate_vecs.main([*two, "--rank", "0", "--quiet"]) == 0
    victim = subprocess.Popen([sys.executable, "generate_vecs.py", *two, "--rank", "1",
                               "--quiet"], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    parts = tmp_path / "two/vecs/pool.npy.parts"
    t0 = time.time()
    while len(list(parts.glob("*/00001-of-00002/unit-*.npz"))) < 10:
        assert victim.poll() is None and time.time() - t0 < 120
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    done_units = len(list(parts.glob("*/00001-of-00002/unit-*.npz")))
    mine = len(Ranks(1, 2).units(150))  # 600 texts in batches of 4
    assert not list(parts.glob("*/00001-of-00002.done.json")) and done_units < mine
    assert not (tmp_path / "two/vecs/pool.npy").exists()
    capsys.readouterr()
    assert generate_vecs.main([*two, "--rank", "0"]) == 0
    assert "rank 0 of 2 already done" in capsys.readouterr().err
    r1 = _run(["generate_vecs.py", *two, "--rank", "1"])
    m = re.search(r"rank 1 of 2 resumes: (\d+) of its (\d+) units", r1.stderr)
    assert m and int(m.group(1)) == done_units and int(m.group(2)) == mine
    assert "merged 2 parts" in r1.stderr
    assert (tmp_path / "one/vecs/pool.npy").read_bytes() == \
        (tmp_path / "two/vecs/pool.npy").read_bytes()
