"""Shared plumbing for the top-level scripts: common flags, logging, progress bars, errors.

A script looks like::

    def build_parser() -> argparse.ArgumentParser:
        p = cli.parser(__doc__, epilog=EXAMPLES)
        ...
        return p

    def main(argv: list[str] | None = None) -> int:
        args = build_parser().parse_args(argv)
        cli.setup(args)
        ...            # one library call
        return 0

    if __name__ == "__main__":
        cli.run(main)

``cli.run`` turns an :class:`anatomy.io.InputError` (a user's bad input) into one stderr line
``error: FILE:LINE: problem`` and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from anatomy.io import InputError
from anatomy.progress import progress  # noqa: F401 - scripts use cli.progress

log = logging.getLogger("anatomy")

DEFAULT_WORLD = "data/world"


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows defaults, except None/False ones (the help text says what happens then)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        if action.default in (None, False) or "(default" in (action.help or ""):
            return action.help or ""
        return super()._get_help_string(action)


def parser(doc: str | None, epilog: str | None = None) -> argparse.ArgumentParser:
    """An ArgumentParser whose description is the script's docstring, defaults shown."""
    return argparse.ArgumentParser(description=doc, epilog=epilog, formatter_class=_Formatter)


def add_run_args(p: argparse.ArgumentParser, seed: int | None = 42, world: bool = True) -> None:
    """The flags every script shares: --seed, --quiet, --overwrite and (optionally) --world."""
    g = p.add_argument_group("run")
    if seed is not None:
        g.add_argument("--seed", type=int, default=seed, help="random seed")
    g.add_argument("--quiet", action="store_true", help="no progress bars, warnings only")
    g.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    if world:
        g.add_argument("--world", default=DEFAULT_WORLD,
                       help="miniworld folder that supplies every default input "
                            "(config, data order, tokenizer, checkpoints, pools)")


def add_rank_args(p: argparse.ArgumentParser) -> None:
    """How a heavy step is split: --rank/--world_size, --merge, --threads.

    Without --rank/--world_size the ranks come from torchrun (RANK, WORLD_SIZE) or a Slurm
    array (SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_COUNT), else this is the only process.
    """
    g = p.add_argument_group("ranks (see README: Running at scale)")
    g.add_argument("--rank", type=int, default=None,
                   help="this process's rank (with --world_size; default: torchrun's or a "
                        "Slurm array's, else 0)")
    g.add_argument("--world_size", type=int, default=None,
                   help="number of ranks the step is split into (default: torchrun's or a "
                        "Slurm array's, else 1)")
    g.add_argument("--merge", action="store_true",
                   help="only merge finished parts into the output (one line naming missing "
                        "ranks otherwise); the last rank to finish merges by itself")
    g.add_argument("--threads", type=int, default=None,
                   help="CPU threads for this rank (default: the host's cores / ranks on the "
                        "host, or OMP_NUM_THREADS outside torchrun)")


def setup(args: argparse.Namespace) -> None:
    """Configure logging (stderr), progress bars (``--quiet``), ranks and threads.

    Sets ``args.ranks`` (an :class:`anatomy.execution.Ranks`) for scripts with rank flags;
    only rank 0 logs at INFO and draws bars.
    """
    from anatomy import progress as _progress

    quiet = bool(getattr(args, "quiet", False))
    ranks = None
    if hasattr(args, "world_size"):
        import dataclasses

        from anatomy.execution import apply_threads, resolve_ranks, thread_share

        ranks = resolve_ranks(args.rank, args.world_size)
        ranks = dataclasses.replace(ranks, threads=thread_share(ranks, args.threads))
        args.ranks = ranks
        apply_threads(ranks.threads)
        _progress.set_rank(ranks.rank)
    _progress.set_quiet(quiet)
    level = logging.WARNING if quiet else logging.INFO
    fmt = "%(message)s" if ranks is None or ranks.world_size == 1 else \
        f"[rank {ranks.rank}/{ranks.world_size}] %(message)s"
    logging.basicConfig(level=level, format=fmt, stream=sys.stderr, force=True)
    # faiss's loader logs each CPU build it fails to find (ModuleNotFoundError lines) at INFO
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if quiet or os.environ.get("TQDM_DISABLE") == "1":
        # transformers draws its own bars (loading/saving weights) outside our control
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
        try:
            from transformers.utils import logging as hf_logging

            hf_logging.disable_progress_bar()
            hf_logging.set_verbosity_error()
        except ImportError:  # pragma: no cover
            pass


def world_path(args: argparse.Namespace, *parts: str) -> Path:
    """A path inside the miniworld named by ``--world``."""
    return Path(args.world).joinpath(*parts)


def default_tokenizer(args: argparse.Namespace) -> str | None:
    """--tokenizer, else the miniworld's tokenizer when --world names a built world (a text
    pool or target given beside a world is tokenised as the world is), else None."""
    tok = getattr(args, "tokenizer", None)
    if tok is None and getattr(args, "world", None):
        w = Path(args.world)
        if (w / "truth.json").is_file() and (w / "tokenizer").is_dir():
            return str(w / "tokenizer")
    return tok


def require_world(args: argparse.Namespace) -> Path:
    w = Path(args.world)
    if not (w / "truth.json").is_file():
        raise InputError(w, "no miniworld here (build one: python build_world.py --out "
                            f"{w}) or pass real inputs explicitly")
    return w


def run(main: Callable[[list[str] | None], int]) -> None:
    """Run a script's ``main`` and exit; a user's bad input is one stderr line, exit 2."""
    from anatomy.byte_ranges import FetchError

    try:
        code = main(None)
    except InputError as e:
        print(f"error: {e.message}", file=sys.stderr)
        code = 2
    except FetchError as e:  # a server or file that could not be read, after the retries
        print(f"error: {e}", file=sys.stderr)
        code = 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Where the training data comes from: an OLMo config (default: the miniworld's)."""
    g = p.add_argument_group("training data")
    g.add_argument("--config", default=None,
                   help="OLMo training config YAML (default: WORLD/config.yaml; real OLMo-7B: "
                        "configs/OLMo-7B.yaml)")
    g.add_argument("--global_indices", default=None,
                   help="data order (path or URL; default: from the config)")
    g.add_argument("--model_name", default=None,
                   help="name used in output paths (default: the config's, e.g. OLMo-7B)")
    g.add_argument("--retries", type=int, default=5,
                   help="attempts after a failed remote read (short reads, 5xx answers)")
    g.add_argument("--retry_backoff", type=float, default=1.0,
                   help="seconds before the first retry, doubled each time")


def olmo_config(args: argparse.Namespace):
    """The OLMo config named by --config, else the miniworld's (one clear error if absent)."""
    from anatomy.olmo_config import load_olmo_config

    path = args.config or str(world_path(args, "config.yaml"))
    if args.config is None and not Path(path).is_file():
        require_world(args)
    return load_olmo_config(path)


def add_memorization_args(p: argparse.ArgumentParser, samples: bool = True) -> None:
    """Pipeline C's inputs: the training data (OLMo config or Pythia prefix) and the samples."""
    add_data_args(p)
    g = p.add_argument_group("Pythia training data (instead of an OLMo config)")
    g.add_argument("--pythia_data", default=None, metavar="PREFIX",
                   help="pre-shuffled MMapIndexedDataset PREFIX(.bin/.idx), rows in training "
                        "order (e.g. pile-deduped-preshuffled/document)")
    g.add_argument("--pythia_batch_size", type=int, default=1024, help="rows per step")
    g.add_argument("--pythia_seq_len", type=int, default=2049, help="tokens per row")
    g.add_argument("--trained_steps", type=int, default=None,
                   help="steps of the trained stream (default: the config's "
                        "data_anatomy.trained_steps, else every whole batch)")
    if samples:
        g = p.add_argument_group("samples (one of)")
        g.add_argument("--sequence_ids", default=None, metavar="FILE",
                       help=".npy of ints, or a .jsonl/.parquet table with sequence_id")
        g.add_argument("--steps", default=None, metavar="A:B",
                       help="every sequence trained in steps [A, B)")
        g.add_argument("--all_sequences", action="store_true",
                       help="every trained sequence")
        g.add_argument("--sample", type=int, default=None, metavar="N",
                       help="a uniform random subset of N of those (with --steps or "
                            "--all_sequences), in training order")
        g.add_argument("--sample_seed", type=int, default=0, help="seed of --sample")
        g.add_argument("--prompt_len", type=int, default=32, help="prompt tokens")
        g.add_argument("--cont_len", type=int, default=32, help="continuation tokens")


def training_data(args: argparse.Namespace):
    """The :class:`anatomy.memorization.data.TrainingData` the flags name (default: the
    miniworld's OLMo config)."""
    from anatomy.memorization.data import open_training_data

    if args.pythia_data is not None:
        if args.config is not None:
            raise InputError(None, "give --config or --pythia_data, not both")
        return open_training_data(pythia_prefix=args.pythia_data,
                                  batch_size=args.pythia_batch_size,
                                  seq_len=args.pythia_seq_len, n_steps=args.trained_steps)
    cfg = olmo_config(args)
    return open_training_data(cfg.path, global_indices=args.global_indices,
                              n_steps=args.trained_steps, retries=args.retries)


def sample_ids(args: argparse.Namespace, data):
    from anatomy.memorization.data import select_ids

    return select_ids(data, args.sequence_ids, args.steps, args.all_sequences, args.sample,
                      args.sample_seed)


def data_tokenizer(args: argparse.Namespace):
    """``(tokenizer, source)``: --tokenizer, else the OLMo config's, else the world's."""
    from anatomy.lm import load_tokenizer

    src = getattr(args, "tokenizer", None)
    if src is None and getattr(args, "pythia_data", None) is None:
        src = olmo_config(args).tokenizer
    if src is None:
        src = str(require_world(args) / "tokenizer")
    return load_tokenizer(src), str(src)
