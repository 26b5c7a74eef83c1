"""Pipeline E's command-line flags: the pairs, the embedder and the miner's options, shared
by ``filter_pairs.py`` and ``mine_negatives.py`` (kept with the pipeline, not in the shared
``anatomy.cli``, which no pipeline's options should reach into)."""

from __future__ import annotations

import argparse


def add_pair_args(p: argparse.ArgumentParser) -> None:
    """--dataset, --output_dir, --query_key, --document_key (contrastors' names)."""
    p.add_argument("--dataset", required=True,
                   help="a .jsonl/.jsonl.gz file, a folder of shard-*.jsonl[.gz], a saved "
                        "datasets folder, or an HF dataset name")
    p.add_argument("--output_dir", required=True, help="output folder")
    p.add_argument("--query_key", default="query", help="query field (list lines: element 0)")
    p.add_argument("--document_key", default="document",
                   help="document field (list lines: element 1); a list value = several "
                        "positives, the first being the row's document")
    p.add_argument("--add_title", action="store_true",
                   help='documents given as {"title", "text"} objects embed as "title text"')
    p.add_argument("--work_dir", default=None,
                   help="cache of embeddings and searches (default: OUTPUT_DIR.work); share "
                        "it between runs to embed each text once")


def add_embed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("embedder")
    g.add_argument("--model", default=None,
                   help="HF encoder name or folder, mean pooling + L2 norm (published: "
                        "thenlper/gte-base; default: the offline all-MiniLM-L6-v2)")
    g.add_argument("--batch_size", type=int, default=None,
                   help="texts per batch, grouped by token count (default: 32 on the CPU, "
                        "the fastest measured here; 256 on a GPU, as contrastors)")
    g.add_argument("--max_length", type=int, default=None,
                   help="tokens per text (default: the model's max_seq_length, else 512)")
    g.add_argument("--query_prefix", default="", help='e.g. "query: " for e5 models')
    g.add_argument("--document_prefix", default="", help='e.g. "passage: " for e5 models')
    g.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cuda:LOCAL_RANK "
                                                  "if available, else cpu)")
    g.add_argument("--precision", choices=["fp32", "auto", "bf16", "fp16"], default="fp32",
                   help="fp32 (default: the ranks are exact, as sentence-transformers' "
                        "fp32 embeddings give them); bf16/fp16 autocast is faster but moves "
                        "near-tied ranks (filter_pairs.py measures how many on a sample); "
                        "auto: bf16 where the CPU/GPU supports it")
    g.add_argument("--wait", type=float, default=0.0, metavar="SECONDS",
                   help="with ranks: wait this long for the other ranks' parts before a "
                        "stage's merge (else this rank stops; rerun to continue)")


def embed_options(args: argparse.Namespace):
    from anatomy.contrastive.index import EmbedOptions

    return EmbedOptions(model=args.model, batch_size=args.batch_size,
                        max_length=args.max_length, query_prefix=args.query_prefix,
                        document_prefix=args.document_prefix, device=args.device,
                        precision=args.precision)


def add_mine_args(p: argparse.ArgumentParser, k_flag: str | None = "--k") -> None:
    """The miner's selection and output flags (sentence-transformers' names)."""
    g = p.add_argument_group("hard negatives")
    if k_flag:
        g.add_argument(k_flag, dest="num_negatives", type=int, default=20,
                       help="negatives per query (contrastors: 20; finetuning uses 7)")
    g.add_argument("--range_min", type=int, default=0,
                   help="skip this many of the best surviving candidates (false negatives "
                        "sit at the top; BGE uses ~10)")
    g.add_argument("--range_max", type=int, default=None,
                   help="candidates considered per query (default, as sentence-transformers: "
                        "range_min + k + max_positives, or range_min + 10 k + max_positives "
                        "with a margin or --max_score; max_positives: the most rows of one "
                        "query)")
    # ST applies every threshold given, in this order (hard_negatives.py:643-697): they combine
    g.add_argument("--absolute_margin", type=float, default=None,
                   help="drop negatives scoring above pos - M")
    g.add_argument("--relative_margin", type=float, default=None,
                   help="drop negatives scoring above pos - |pos| * M (0.05 = NV-Retriever's "
                        "TopK-PercPos 95%%)")
    g.add_argument("--max_score", type=float, default=None,
                   help="drop negatives scoring above S")
    g.add_argument("--min_score", type=float, default=None, help="drop negatives below S")
    g.add_argument("--sampling_strategy", choices=["top", "random"], default="top",
                   help="top: the best candidates; random: a seeded sample of the window")
    g.add_argument("--min_negatives", type=int, default=None,
                   help="rows with fewer negatives than this are filled or dropped "
                        "(--fill); default: k")
    g.add_argument("--fill", choices=["random", "drop", "keep"], default=None,
                   help="short rows: random corpus documents (contrastors' default), drop "
                        "the row, or keep it short (default: random for contrastors "
                        "output, keep for the sentence-transformers formats, as ST does)")
    g.add_argument("--output_format", default="contrastors",
                   choices=["contrastors", "triplet", "n-tuple", "labeled-pair",
                            "labeled-list"],
                   help="contrastors: shard-NNNNN.jsonl.gz records with the negatives; the "
                        "others: sentence-transformers' formats as a saved dataset")
    g.add_argument("--output_scores", action="store_true",
                   help="ST formats: add the scores columns ST adds")
    g.add_argument("--negatives_key", default="negatives",
                   help="contrastors output: the negatives' field")
    g.add_argument("--keep_false_negatives", action="store_true",
                   help="contrastors output: keep negatives scoring at or above the positive "
                        "(default: drop them, as contrastors' filter_false_negatives.py)")


def mine_options(args: argparse.Namespace, num_negatives: int | None = None):
    from anatomy.contrastive.negatives import MineOptions

    contrastors = args.output_format == "contrastors"
    fill = args.fill or ("random" if contrastors else "keep")
    return MineOptions(num_negatives=num_negatives or args.num_negatives,
                       range_min=args.range_min, range_max=args.range_max,
                       relative_margin=args.relative_margin,
                       absolute_margin=args.absolute_margin, max_score=args.max_score,
                       min_score=args.min_score, sampling_strategy=args.sampling_strategy,
                       min_negatives=args.min_negatives, fill=fill, seed=args.seed,
                       below_positive=contrastors and not args.keep_false_negatives)
