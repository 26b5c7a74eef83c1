"""MLM pretokenization (pipeline E): texts -> rows of --seq_len tokens, as contrastors v1 does.

Mirrors nomic contrastors' v1 scripts/text/pretokenize.py (b0e94ca), whose packing is HF
run_mlm's group_texts. Every text is tokenized with its own special tokens ([CLS] ... [SEP]
for BERT), no truncation, special_tokens_mask kept; the rows carry input_ids,
token_type_ids, attention_mask and special_tokens_mask.

Packing (--pack):
  batch           the published behaviour (default): within each 1,000-text map batch the
                  tokens are concatenated and cut into seq_len rows; each batch's tail is
                  DROPPED; a batch with fewer than seq_len tokens in all is one shorter row.
                  With --num_workers > 1 the batches form inside each worker's shard.
  across_batches  one continuous stream over the whole dataset cut into seq_len rows;
                  every token is KEPT, the final row may be shorter.
Both modes' dropped-token counts are printed and written to DIR.report.json.

Sources (--dataset, several allowed): local .jsonl/.jsonl.gz/.jsonl.zst (field --text_key),
.parquet (column --text_key), .txt (one document per blank-line-separated paragraph),
folders of those; or an HF dataset NAME[:CONFIG] (train split); "published" means
bookcorpus + wikimedia/wikipedia:20231101.en (needs the hub). Default: the miniworld's
corpus documents (WORLD/truth/docs.jsonl.gz locates each document's tokens in the trained
stream; they are decoded with WORLD/tokenizer), in document-id order.

Tokenizer: any HF tokenizer name or folder; bert-base-uncased works offline, built from the
MiniLM package's vocab.txt (sha256 checked: bert-base-uncased's exact WordPiece vocab).

Output (--format): hf, a datasets dataset saved to --hf_save_name (written to a temporary
folder, then renamed; --push_to_hub also pushes it, privately, to the repo named by
--hf_save_name, saving locally to --local_dir); olmo, OLMo token files in the folder
--hf_save_name: input_ids.npy (raw uint16, uint32 for vocabularies over 65,536),
special_tokens_mask.npy (raw uint8, parallel) and meta.json. A rerun with the same inputs
and flags is skipped; different ones are refused without --overwrite.
"""

from __future__ import annotations

from anatomy import cli

EXAMPLES = """examples:
  python pretokenize.py --tokenizer_name bert-base-uncased --seq_len 2048 \\
      --hf_save_name data/pretokenized/world-bert-2048
  python pretokenize.py --tokenizer_name bert-base-uncased --seq_len 512 \\
      --dataset docs.jsonl.gz more.parquet --pack across_batches --format olmo \\
      --hf_save_name data/pretokenized/docs-olmo
  python pretokenize.py --tokenizer_name bert-base-uncased --seq_len 2048 \\
      --dataset published --num_workers 8 --hf_save_name me/nomic-bert-pretokenized-2048 \\
      --push_to_hub
"""


def build_parser():
    p = cli.parser(__doc__, EXAMPLES)
    p.add_argument("--tokenizer_name", required=True,
                   help="HF tokenizer name or folder (bert-base-uncased works offline)")
    p.add_argument("--seq_len", type=int, required=True, help="tokens per row")
    p.add_argument("--hf_save_name", required=True,
                   help="output folder (with --push_to_hub: the hub repo id)")
    p.add_argument("--dataset", nargs="+", action="extend", default=None, metavar="SRC",
                   help="local files/folders or HF NAME[:CONFIG] or 'published' (repeatable; "
                        "default: the miniworld's documents)")
    p.add_argument("--text_key", default="text", help="JSONL field / Parquet column of text")
    p.add_argument("--num_workers", type=int, default=8, help="datasets.map num_proc")
    p.add_argument("--pack", choices=["batch", "across_batches"], default="batch",
                   help="batch: published group_texts per 1000-text batch, tails dropped; "
                        "across_batches: one stream, every token kept")
    p.add_argument("--format", choices=["hf", "olmo"], default="hf",
                   help="hf: datasets save_to_disk; olmo: raw token files + meta.json")
    p.add_argument("--push_to_hub", action="store_true",
                   help="also push the dataset (private) to the hub repo --hf_save_name")
    p.add_argument("--local_dir", default=None,
                   help="with --push_to_hub: where the local copy goes (default: "
                        "data/pretokenized/OWNER__NAME)")
    cli.add_run_args(p, seed=None)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cli.setup(args)
    from pathlib import Path

    from anatomy.contrastive.pretokenize import pretokenize, report_path

    repo = None
    out = Path(args.hf_save_name)
    if args.push_to_hub:
        repo = args.hf_save_name
        out = Path(args.local_dir or f"data/pretokenized/{repo.replace('/', '__')}")
    s = pretokenize(args.dataset, args.tokenizer_name, args.seq_len, out, pack=args.pack,
                    fmt=args.format, text_key=args.text_key, num_workers=args.num_workers,
                    world=args.world, push_repo=repo, overwrite=args.overwrite,
                    progress=not args.quiet)
    m = s.get("modes", {})
    print(f"{s.get('texts')} texts, {s.get('tokens')} tokens -> {s.get('rows')} rows of "
          f"{s.get('seq_len')} (--pack {s.get('pack')}: {s.get('dropped_tokens')} tokens "
          f"dropped) -> {out} ({s['status']})")
    if m:
        print(f"dropped per mode: batch {m['batch']['dropped_tokens']} tokens "
              f"({m['batch']['rows']} rows), across_batches "
              f"{m['across_batches']['dropped_tokens']} ({m['across_batches']['rows']} rows); "
              f"report: {report_path(out)}")
    if s.get("pushed_to"):
        print(f"pushed to {s['pushed_to']}")
    return 0


if __name__ == "__main__":
    cli.run(main)
