"""The embedding pass and the exact search that the consistency filter and the hard-negative
miner share (pipeline E).

- :class:`TextTable`: every distinct text the run embeds (queries with their prefix,
  documents with theirs), each embedded **once** (:func:`embed_table`, a step of the
  execution layer: length-sorted batches as units, ranks, resumable, cached in the work
  folder under a digest of the texts, the model and the flags, so a rerun with another
  ``--k`` or another miner setting reuses it).
- :class:`SearchBlock` / :func:`search_blocks`: exact inner-product searches as units of
  (block, query chunk) on the execution layer (:func:`anatomy.neighbours.rank_search`): the
  1-based rank of each query's own document (ties by lower entry, so ``rank <= k`` is
  exactly "in the top k"; copies of one vector tie exactly, each distinct vector being
  scored once) and, when asked, the top hits.

Embeddings are fp32 by default: the filter's decision is a rank, and bf16 autocast moves the
ranks of near-tied documents (15 of 300 stdlib pairs against sentence-transformers' fp32
embeddings); ``--precision bf16`` is the faster choice, its disagreement measured by the
filter (:func:`anatomy.contrastive.filtering.precision_check`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import execution, io
from anatomy.io import InputError

SEARCH_CHUNK = 4096  # queries per search unit

log = logging.getLogger("anatomy")


@dataclass
class EmbedOptions:
    """How texts are embedded (any HF encoder, mean pooling, L2-normalised)."""

    model: str | None = None  # None: the offline all-MiniLM-L6-v2
    batch_size: int | None = None  # None: 32 on the CPU (fastest here), 256 on a GPU
    max_length: int | None = None  # None: the model's max_seq_length (ST config), else 512
    query_prefix: str = ""
    document_prefix: str = ""
    device: str | None = None
    # fp32 by default: bf16 autocast moved 15 of 300 ranks on stdlib pairs (and one keep
    # decision at k = 2) against sentence-transformers' fp32 embeddings
    precision: str = "fp32"

    def resolved_max_length(self) -> int:
        if self.max_length is not None:
            return int(self.max_length)
        from anatomy.lm import default_embedder_path

        folder = Path(self.model).expanduser() if self.model else default_embedder_path()
        cfg = folder / "sentence_bert_config.json"
        if cfg.is_file():
            with open(cfg, encoding="utf-8") as f:
                return int(json.load(f).get("max_seq_length", 512))
        return 512  # contrastors: model_max_length 512 with truncation


@dataclass
class TextTable:
    """Distinct texts in first-seen order; :meth:`add` returns their rows."""

    texts: list[str] = field(default_factory=list)
    _pos: dict[str, int] = field(default_factory=dict)

    def add(self, texts: Sequence[str]) -> np.ndarray:
        out = np.empty(len(texts), np.int64)
        for i, t in enumerate(texts):
            j = self._pos.get(t)
            if j is None:
                j = self._pos[t] = len(self.texts)
                self.texts.append(t)
            out[i] = j
        return out

    def digest(self) -> str:
        h = hashlib.sha256()
        for t in self.texts:
            b = t.encode("utf-8")
            h.update(len(b).to_bytes(8, "little"))
            h.update(b)
        return h.hexdigest()


def _wait(out: execution.Output, fp: execution.Fingerprint, res: execution.StepResult,
          wait_s: float) -> bool:
    deadline = time.time() + wait_s
    final = res.final
    while not final and time.time() < deadline:
        time.sleep(min(5.0, max(0.1, wait_s / 100)))
        final = execution.output_state(out, fp)[0] == "done"
    return final


class NotReady(Exception):
    """This rank's share is done and it does not write the outputs: other ranks' parts are
    missing (``missing``), or another rank merged the search and continues (``[]``)."""

    def __init__(self, stage: str, missing: list[int]):
        self.stage, self.missing = stage, missing
        super().__init__(f"{stage}: waiting for ranks {missing}" if missing else
                         f"{stage}: merged by another rank, which writes the outputs")


def embed_table(table: TextTable, opts: EmbedOptions, work_dir: Path,
                ranks: execution.Ranks | None = None, overwrite: bool = False,
                merge: bool = False, wait_s: float = 0.0, progress: bool = True
                ) -> tuple[np.ndarray, execution.Fingerprint]:
    """L2-normalised float32 embeddings ``[len(table.texts), d]`` (memory-mapped), and the
    fingerprint naming them. Raises :class:`NotReady` on a rank whose peers are not done."""
    from anatomy import lm
    from anatomy.embed_pass import run_embed

    if not table.texts:
        raise InputError(None, "nothing to embed: the dataset has no rows")
    ranks = ranks or execution.Ranks()
    dev = lm.resolve_device(opts.device, ranks.local_rank)
    src = str(lm.default_embedder_path()) if opts.model is None else str(opts.model)
    max_length = opts.resolved_max_length()
    # measured on 2 CPU cores (benchmarks/bench_contrastive.py): batch 32 in bf16 28.8 s,
    # 64 35.8 s, 256 41.1 s for the same 4,000 texts; contrastors uses 256 on GPUs
    batch_size = opts.batch_size or (256 if dev.type == "cuda" else 32)
    precision = lm.resolve_precision(dev, opts.precision)
    if precision != "fp32" and ranks.rank == 0:
        log.warning("embedding in %s autocast: ranks and negatives of near-tied documents can "
                    "differ from fp32's (filter_pairs.py measures how many on a sample; "
                    "--precision fp32 for exact ones)", precision)
    fp = execution.fingerprint(
        "contrastive_embed", {"model": src},
        {"texts": table.digest(), "n_texts": len(table.texts), "max_length": max_length,
         "batch_size": batch_size, "device": dev.type,
         "precision": precision, "normalize": True,
         "batches": "by token count"})
    out = Path(work_dir) / f"embed-{fp.digest()[:16]}.npy"
    lengths = None
    if execution.output_state(execution.Output.file(out), fp)[0] != "done":
        lengths = token_lengths(src, table.texts, max_length)
    res = run_embed(table.texts, out, fp, model=opts.model, batch_size=batch_size,
                    max_length=max_length, device=dev, precision=opts.precision,
                    normalize=True, ranks=ranks, overwrite=overwrite, merge=merge,
                    progress=progress, name="embed", lengths=lengths)
    if not _wait(res.output, fp, res, wait_s):
        raise NotReady("embed", res.missing)
    return io.load_npy(out, mmap=True), fp


def token_lengths(model: str, texts: Sequence[str], max_length: int) -> list[int]:
    """Each text's token count under the model's tokenizer, capped at ``max_length`` (the
    batches are grouped by it: padding costs compute)."""
    from anatomy.lm import load_tokenizer

    tok = load_tokenizer(model)
    out: list[int] = []
    for a in range(0, len(texts), 10_000):
        ids = tok(list(texts[a:a + 10_000]), truncation=True, max_length=max_length)["input_ids"]
        out.extend(len(x) for x in ids)
    return out


@dataclass
class SearchBlock:
    """One exact search: queries (table rows) against an index (table rows)."""

    query_rows: np.ndarray  # [n_q] rows of the embedding table
    index_rows: np.ndarray  # [n_index] rows of the embedding table
    targets: np.ndarray  # [n_q] position in index_rows of each query's own entry, or -1


class SearchStep:
    """Units = (block, chunk of SEARCH_CHUNK queries); the merge concatenates in order."""

    name = "search"

    def __init__(self, emb: np.ndarray, blocks: Sequence[SearchBlock], k: int, out: Path,
                 fp: execution.Fingerprint, device: str | None):
        self.emb, self.blocks, self.k, self.device = emb, list(blocks), k, device
        self.output = execution.Output.file(out)
        self.fingerprint = fp
        self.plan = [(b, a) for b, blk in enumerate(self.blocks)
                     for a in range(0, len(blk.query_rows), SEARCH_CHUNK)]
        self.n_units = len(self.plan)
        self.on_cpu = False  # BLAS threads do the work; units run one at a time
        self._index: dict[int, tuple[np.ndarray, np.ndarray | None]] = {}

    def _index_of(self, b: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The block's index vectors and their copies (:func:`first_copies`, found once per
        block, not once per query chunk)."""
        from anatomy.neighbours import first_copies

        if b not in self._index:
            self._index.clear()  # one block's index in memory at a time
            x = np.ascontiguousarray(self.emb[self.blocks[b].index_rows])
            self._index[b] = (x, first_copies(x))
        return self._index[b]

    def compute_unit(self, u: int) -> dict[str, Any]:
        from anatomy.neighbours import rank_search

        b, a = self.plan[u]
        blk = self.blocks[b]
        rows = blk.query_rows[a:a + SEARCH_CHUNK]
        x, copies = self._index_of(b)
        k = min(self.k, len(x))
        res = rank_search(self.emb[rows], x, blk.targets[a:a + SEARCH_CHUNK], k=k,
                          device=self.device, copies=copies)
        ids = res["ids"]
        scores = res["scores"]
        if k < self.k:  # a small block: pad to the requested width
            ids = np.pad(ids, ((0, 0), (0, self.k - k)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, self.k - k)), constant_values=-np.inf)
        return {"ranks": res["ranks"], "own": res["own"], "ids": ids, "scores": scores}

    def merge(self, load) -> dict[str, Any]:
        parts = [load(u) for u in range(self.n_units)]
        cat = {key: np.concatenate([p[key] for p in parts]) if parts else
               np.zeros((0,) if key in ("ranks", "own") else (0, self.k),
                        np.int64 if key in ("ranks", "ids") else np.float32)
               for key in ("ranks", "own", "ids", "scores")}
        execution.save_payload(self.output.files[0], cat)
        return {"queries": int(len(cat["ranks"])), "k": self.k}


def _blocks_digest(blocks: Sequence[SearchBlock]) -> str:
    h = hashlib.sha256()
    for blk in blocks:
        for arr in (blk.query_rows, blk.index_rows, blk.targets):
            a = np.ascontiguousarray(arr, np.int64)
            h.update(len(a).to_bytes(8, "little"))
            h.update(a.tobytes())
    return h.hexdigest()


def search_blocks(emb: np.ndarray, emb_fp: execution.Fingerprint,
                  blocks: Sequence[SearchBlock], k: int, work_dir: Path,
                  device: str | None = None, ranks: execution.Ranks | None = None,
                  overwrite: bool = False, merge: bool = False, wait_s: float = 0.0,
                  progress: bool = True) -> dict[str, np.ndarray]:
    """Every block's search; arrays over all blocks' queries in block order: ``ranks``,
    ``own`` (the own entry's score), and ``ids``/``scores`` ``[n, k]`` (ids are positions in
    the block's ``index_rows``; -1 / -inf past a block's size)."""
    fp = execution.fingerprint("contrastive_search", None,
                               {"embeddings": emb_fp.digest(), "blocks": _blocks_digest(blocks),
                                "k": int(k), "ties": "identical vectors scored once"})
    out = Path(work_dir) / f"search-{fp.digest()[:16]}.npz"
    step = SearchStep(emb, blocks, int(k), out, fp, device)
    res = execution.run_step(step, ranks or execution.Ranks(), overwrite=overwrite,
                             merge_only=merge, show_progress=progress)
    if not _wait(res.output, fp, res, wait_s):
        raise NotReady("search", res.missing)
    if not res.lead:  # only the rank that merged (or rank 0 of a finished run) goes on
        raise NotReady("search", [])
    return execution.load_payload(out)
