"""Positive-aware hard-negative mining for (query, document) pairs (pipeline E).

Mirrors nomic contrastors' v1 scripts/text/get_negatives.py (b0e94ca) and its
filter_false_negatives.py post-filter, with sentence-transformers'
util.mine_hard_negatives selection rules and names. Every distinct document (the rows'
positives, then --corpus) is one corpus entry and every text is embedded once; each query's
top hits are searched exactly (CPU or GPU) and, in descending score order:

  - the query's positives are excluded by entry AND by normalised text (NFKC, case folded,
    whitespace collapsed): a duplicate of a positive is never a negative; rows whose
    queries normalise equal are one query, all of whose positives are excluded; the query
    text itself is excluded too (published: a dict-vs-string bug returned the positive as
    "negative" #1);
  - thresholds against the query's lowest positive score: --relative_margin M drops
    negatives above pos - |pos| M (0.05 = NV-Retriever's TopK-PercPos, right for negative
    scores), --absolute_margin M above pos - M, --max_score S above S; --min_score S below S;
  - of the first --range_max survivors the first --range_min are skipped (ST's rule), then
    the top --k, or a seeded random sample (--sampling_strategy random);
  - contrastors output: only negatives scoring strictly below the positive are kept
    (contrastors' filter_false_negatives.py; --keep_false_negatives: all);
  - rows short of --min_negatives are filled with random corpus documents that obey the
    same exclusions and thresholds, dropped, or kept short (--fill); all counted.

Outputs in --output_dir: contrastors' shard-00000.jsonl.gz ... (up to 100,000 records each:
the input record + --negatives_key, pos_score, scores per negative, metadata with the
triplet objective) and counts.json; or, with --output_format triplet / n-tuple /
labeled-pair / labeled-list, sentence-transformers' format as a datasets folder
(dataset/). report.json counts candidates removed per rule, fills, drops, and checks
independently that no negative equals or duplicates a positive.
"""

from __future__ import annotations

from anatomy import cli
from anatomy.contrastive import flags

EXAMPLES = """examples:
  python mine_negatives.py --dataset data/contrastive/filtered-k2 \\
      --output_dir data/contrastive/negatives --k 7 --relative_margin 0.05
  python mine_negatives.py --dataset nq.jsonl --query_key question \\
      --document_key positive_ctxs --add_title --corpus beir_corpus.jsonl --k 20 \\
      --range_min 10 --range_max 200 --output_dir nq-negatives
  python mine_negatives.py --dataset pairs.jsonl --output_dir st-triplets --k 5 \\
      --output_format triplet --output_scores
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    flags.add_pair_args(p)
    p.add_argument("--corpus", default=None,
                   help="extra candidate documents: JSONL (--corpus_key, BEIR's title "
                        "prepended), Parquet, or text (blank-line-separated)")
    p.add_argument("--corpus_key", default="text", help="the --corpus text field")
    p.add_argument("--counts_bucket", default=None,
                   help="contrastors output: counts.json's key prefix, the shards' S3 path "
                        "without s3:// (default: contrastive/OUTPUT_DIR_NAME, as contrastors' "
                        "filter_false_negatives.py writes it)")
    flags.add_mine_args(p)
    flags.add_embed_args(p)
    cli.add_rank_args(p)
    cli.add_run_args(p, seed=0, world=False)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from anatomy.contrastive.index import NotReady
    from anatomy.contrastive.run import mine_negatives

    try:
        s = mine_negatives(args.dataset, args.output_dir, query_key=args.query_key,
                           document_key=args.document_key, opts=flags.mine_options(args),
                           corpus_path=args.corpus, corpus_key=args.corpus_key,
                           output_format=args.output_format, negatives_key=args.negatives_key,
                           output_scores=args.output_scores, embed=flags.embed_options(args),
                           add_title=args.add_title, work_dir=args.work_dir, ranks=args.ranks,
                           overwrite=args.overwrite, merge=args.merge, wait_s=args.wait,
                           progress=not args.quiet, counts_bucket=args.counts_bucket)
    except NotReady as e:
        print(f"{args.ranks.label}: {e} (run the same command again, or pass --wait)")
        return 0
    per = s["negatives_per_row"]
    print(f"{s['rows']} rows ({s['queries']} queries, corpus {s['corpus']} documents): "
          f"{s['rows_written']} written, {s['rows_dropped_short']} dropped short; negatives "
          f"per row mean {per['mean']} (min {per['min']}, max {per['max']}) -> "
          f"{args.output_dir} ({s['status']})")
    if s["status"] == "written":
        e = s["empty_texts"]
        print(f"{s['repeated_pairs']} repeated (query, positive) rows written once (ST "
              f"formats), {s['false_negatives']} negatives at or above their positive dropped "
              f"(contrastors); empty texts skipped: {e['rows_skipped']} rows ({e['queries']} "
              f"queries, {e['documents']} documents), {e['other_positives']} other positives, "
              f"{e['extra_corpus']} corpus texts")
    leaks = s["leaks"]
    print(f"leak check: {leaks['negatives_equal_to_a_positive']} negatives equal a positive, "
          f"{leaks['negatives_duplicating_a_positive_or_query']} duplicate a positive or the "
          "query")
    return 0


if __name__ == "__main__":
    cli.run(main)
