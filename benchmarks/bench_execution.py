"""The execution layer and the neighbours module, measured (not a test).

(a) CPU unit scheduling. The same Min-K%++ scoring units (batches of the length-sorted plan
    over the world's pool texts) computed two ways in one process: a plain loop with torch's
    intra-op threads = the cores, against our policy, single-threaded units run ``cores`` at
    a time (which makes the bytes independent of the number of ranks and cores). Printed:
    tokens/s of both and their ratio (goal >= 0.9: determinism must not cost speed).
(b) The parts layer's overhead: ``run_step`` (every unit written to disk, then merged)
    against ``run_units`` (in memory), same step, same policy (goal <= 1.10).
(c) Neighbours: exact top-10 inner products of 2,000 queries against a 20,000 x 384 index,
    chunked numpy matmul against faiss ``IndexFlatIP`` (both exact, ties by index); and
    ``IndexIVFFlat`` (nlist 4 sqrt(n), nprobe 8) with its recall@10 measured against exact.

    python benchmarks/bench_execution.py --world data/world
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from anatomy import io  # noqa: E402


def pool_texts(world: Path, n: int) -> list[str]:
    truth = io.read_json(world / "truth.json")
    texts: list[str] = []
    for shard in truth["pools"]["shards"]:
        texts += [r["text"] for r in io.iter_jsonl(world / "pools" / shard)]
    return texts[:n]


class _Step:
    """A throwaway execution step over MinkppWork's units."""

    name = "bench"
    on_cpu = True

    def __init__(self, work, out: Path):
        from anatomy.execution import Output, fingerprint

        self.work = work
        self.output = Output.file(out)
        self.fingerprint = fingerprint("bench", {}, {"out": str(out)})
        self.n_units = work.n_units
        self.compute_unit = work.compute_unit

    def merge(self, load):
        io.save_npy(self.output.files[0], self.work.scores(load))
        return {}


def bench_units(args) -> None:
    import torch

    from anatomy.execution import Ranks, run_step, run_units, single_threaded_torch
    from anatomy.lm import load_causal_lm, load_tokenizer
    from anatomy.mixture.pipeline import MinkppWork

    world = Path(args.world)
    cores = args.threads
    model = load_causal_lm(world / "model", device="cpu")
    tok = load_tokenizer(world / "model")
    work = MinkppWork(tok, pool_texts(world, args.n_texts), 0.2, args.max_tokens,
                      args.batch_size)
    work.model = model
    n_tok = sum(len(t) for t in work.ids)
    torch.set_num_threads(cores)
    work.compute_unit(0)  # warm up
    t = time.perf_counter()
    plain = {u: work.compute_unit(u) for u in range(work.n_units)}
    t_plain = time.perf_counter() - t
    from anatomy.execution import _map_concurrently

    ours: dict[int, dict] = {}
    t = time.perf_counter()
    with single_threaded_torch():
        _map_concurrently(lambda u: ours.__setitem__(u, work.compute_unit(u)),
                          list(range(work.n_units)), cores, "bench", True)
    t_ours = time.perf_counter() - t
    same = all(np.array_equal(plain[u]["scores"], ours[u]["scores"], equal_nan=True)
               for u in plain)
    print(f"(a) {work.n_units} units, {n_tok} tokens, {cores} cores")
    print(f"    plain loop, {cores} intra-op threads : {n_tok / t_plain:8.0f} tokens/s")
    print(f"    1-thread units, {cores} at a time    : {n_tok / t_ours:8.0f} tokens/s")
    print(f"    ratio ours / plain: {t_plain / t_ours:.2f} (goal >= 0.9); the two give "
          f"bit-identical scores: {same} (intra-op threads split reductions differently)")

    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter()
        with single_threaded_torch():
            run_units(_Step(work, Path(d) / "mem.npy"))
        t_mem = time.perf_counter() - t
        t = time.perf_counter()
        run_step(_Step(work, Path(d) / "disk.npy"), Ranks(threads=1), show_progress=False)
        t_disk = time.perf_counter() - t
        equal = (Path(d) / "disk.npy").read_bytes() == (Path(d) / "mem.npy").read_bytes()
    print(f"(b) one thread: in memory {t_mem:.2f} s, run_step with parts on disk "
          f"{t_disk:.2f} s: overhead {t_disk / t_mem:.2f} (goal <= 1.10); same bytes: "
          f"{equal}")


def bench_neighbours(args) -> None:
    from anatomy.neighbours import exact_search, ivf_search, l2_normalize

    rng = np.random.default_rng(0)
    # clustered data, as embeddings are: 200 centres, noise around them
    centres = l2_normalize(rng.standard_normal((200, 384)))
    x = l2_normalize(centres[rng.integers(0, 200, args.n_index)]
                     + 0.7 * rng.standard_normal((args.n_index, 384)) / np.sqrt(384))
    q = x[rng.choice(len(x), args.n_queries, replace=False)]
    times = {}
    for backend in ("numpy", "faiss"):
        t = time.perf_counter()
        _, ids = exact_search(q, x, 10, backend=backend)
        times[backend] = time.perf_counter() - t
        if backend == "numpy":
            ref = ids
        else:
            agree = float(np.mean(ids == ref))
    print(f"(c) exact top-10, {len(q)} queries x {len(x)} rows x 384: numpy "
          f"{times['numpy']:.2f} s, faiss IndexFlatIP {times['faiss']:.2f} s "
          f"(faiss / numpy time {times['faiss'] / times['numpy']:.2f}; ids agree {agree:.4f}: "
          "the BLAS kernels round differently, so near-equal neighbours can swap)")
    for nprobe in (8, 32):
        t = time.perf_counter()
        res = ivf_search(q, x, 10, nprobe=nprobe, recall_sample=len(q))
        t_ivf = time.perf_counter() - t
        print(f"    IVF nlist {res.nlist} nprobe {res.nprobe}: {t_ivf:.2f} s incl. training "
              f"and the exact check, recall@10 {res.recall:.3f} on {res.recall_sample} queries")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--world", default="data/world")
    p.add_argument("--threads", type=int, default=None, help="default: this host's cores")
    p.add_argument("--n_texts", type=int, default=600)
    p.add_argument("--max_tokens", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--n_index", type=int, default=20000)
    p.add_argument("--n_queries", type=int, default=2000)
    args = p.parse_args(argv)
    if args.threads is None:
        from anatomy.execution import host_cores

        args.threads = host_cores()
    bench_units(args)
    bench_neighbours(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
