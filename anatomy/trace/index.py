"""A suffix-array index of the trained token stream, position -> (instance, offset, step, slot).

The *trained stream* is every training sequence in training order: data-order position
``slot = step * B + b`` holds one sequence of ``L`` tokens (an OLMo instance through
``global_indices``, or a row of Pythia's pre-shuffled Pile; :mod:`anatomy.memorization.data`
reads both). The index cuts that stream into blocks of ``block_steps`` steps. Block k's
tokens, followed by the first ``max_text - 1`` tokens after it (so that every occurrence
that starts in the block and is no longer than ``max_text`` tokens, the longest text a
trace accepts, lies whole in it; default four sequences, as a passage can run across
sequences of the stream), are one raw token file, and its suffix array (a table of u64
token positions in suffix order) is built by ``tokengrams`` (``MemmapIndex.build``,
EleutherAI). A position ``p < own tokens`` of block k is ``slot = first_slot + p // L``,
``offset = p % L``; the instance is the data order's entry at that slot (stored per block,
``ids.npy``), the step ``slot // B``.

Why tokengrams (measured on a 2M-token stream, ``benchmarks/bench_trace.py``): it is
already a dependency, builds and opens the same plain table format pydivsufsort writes,
reads u16 and u32 tokens, and answers ``contains`` / ``positions`` in microseconds, which
the maximal-span search (:mod:`anatomy.trace.spans`) calls a few hundred times per text.
infini-gram (the engine behind OLMoTrace) stores byte offsets into a separator-delimited
file and answers each call after starting threads; its ``attribute`` took ~60 ms for a
200-token text where the same search over tokengrams takes ~1 ms.

Blocks are the units of one :class:`anatomy.execution` step: W ranks build disjoint blocks,
each block file is written atomically, and the merge writes ``index.json`` (the blocks, the
data's fingerprint, the layout) and ``unigram.npy`` (token counts of the stream, for
OLMoTrace's span filter). The same data gives the same bytes with 1 or W ranks.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import execution, io
from anatomy.io import InputError, PathLike

FORMAT = "data-anatomy-trace-index/1"
_ONE = execution.Ranks()


def data_fingerprint(data) -> execution.Fingerprint:
    """What identifies the training data an index was built from (files and layout)."""
    return execution.fingerprint("trained_stream", {"data": data.sources()}, data.layout())


def _vocab_for(dtype: np.dtype, max_token: int) -> int:
    """tokengrams reads u16 tokens when ``vocab <= 2**16``, u32 above."""
    return 1 << 16 if dtype.itemsize == 2 else max(max_token + 1, (1 << 16) + 1)


class TraceIndexStep:
    """One unit per block of steps: its token file, suffix table and instance ids."""

    name = "build_trace_index"

    def __init__(self, data, out: PathLike, block_steps: int | None = None,
                 max_text: int | None = None):
        self.data = data
        self.max_text = int(max_text or 4 * data.seq_len)
        if self.max_text < 1:
            raise InputError(None, f"--max_text_tokens must be positive, got {max_text}")
        self.out = Path(out)
        steps = data.n_steps
        self.block_steps = int(block_steps or steps)
        if self.block_steps <= 0:
            raise InputError(None, f"--block_steps must be positive, got {block_steps}")
        self.n_units = -(-steps // self.block_steps)
        self.dtype = np.dtype(data.token_dtype)
        self.output = execution.Output.folder(self.out, ["index.json", "unigram.npy"])
        self.data_fp = data_fingerprint(data)
        self.fingerprint = execution.fingerprint(
            self.name, {"data": data.sources()},
            {**data.layout(), "block_steps": self.block_steps, "max_text": self.max_text,
             "format": FORMAT})

    def steps_of(self, unit: int) -> tuple[int, int]:
        a = unit * self.block_steps
        return a, min(self.data.n_steps, a + self.block_steps)

    def block_paths(self, unit: int) -> dict[str, Path]:
        stem = self.out / "blocks" / f"block-{unit:05d}"
        return {"tokens": stem.with_suffix(".tokens"), "table": stem.with_suffix(".table"),
                "ids": stem.with_suffix(".ids.npy")}

    def compute_unit(self, unit: int) -> dict[str, Any]:
        from tokengrams import MemmapIndex

        d, L = self.data, self.data.seq_len
        a, b = self.steps_of(unit)
        ids = d.ids_for_steps(a, b)
        rows = d.rows(ids, L)
        if rows.size and (rows.min() < 0 or rows.max() > np.iinfo(self.dtype).max):
            raise InputError(None, f"block {unit}: tokens outside {self.dtype}")
        own = rows.astype(self.dtype).ravel()
        tail = np.zeros(0, self.dtype)
        if b < d.n_steps and self.max_text > 1:  # the sequences that follow, in order
            need = -(-(self.max_text - 1) // L)
            slots = np.arange(b * d.batch_size, min(d.n_trained, b * d.batch_size + need))
            nxt = d.rows(d.ids_at_positions(slots), L)
            tail = nxt.astype(self.dtype).ravel()[:self.max_text - 1]
        tokens = np.concatenate([own, tail])
        paths = self.block_paths(unit)
        vocab = _vocab_for(self.dtype, int(tokens.max()) if len(tokens) else 0)
        # the table's temporary is built from the final token file, so the token file
        # lands first; a block counts only once its unit is recorded, after both
        with io.atomic_path(paths["tokens"]) as tmp:
            tokens.tofile(tmp)
        with io.atomic_path(paths["table"]) as tmp, _quiet_stdout():
            MemmapIndex.build(str(paths["tokens"]), tmp, vocab, False)  # prints to stdout
        io.save_npy(paths["ids"], np.asarray(ids, np.int64))
        uni = np.bincount(own.astype(np.int64), minlength=0)
        nz = np.flatnonzero(uni)
        return {"unit": unit, "steps": [a, b], "own": len(own), "total": len(tokens),
                "vocab": vocab, "sha256": hashlib.sha256(tokens.tobytes()).hexdigest(),
                "unigram_index": nz.astype(np.int64), "unigram_counts": uni[nz]}

    def merge(self, load) -> dict[str, Any]:
        blocks, size, vocab = [], 0, 1 << 16
        parts = [load(u) for u in range(self.n_units)]
        for p in parts:
            size = max(size, int(p["unigram_index"][-1]) + 1 if len(p["unigram_index"]) else 0)
            vocab = max(vocab, int(p["vocab"]))
        uni = np.zeros(max(size, 1), np.int64)
        for u, p in enumerate(parts):
            uni[np.asarray(p["unigram_index"], np.int64)] += np.asarray(p["unigram_counts"])
            a, b = (int(x) for x in p["steps"])
            paths = self.block_paths(u)
            blocks.append({"steps": [a, b], "first_slot": a * self.data.batch_size,
                           "n_tokens": int(p["own"]), "n_with_overlap": int(p["total"]),
                           "sha256": p["sha256"],
                           **{k: str(v.relative_to(self.out)) for k, v in paths.items()}})
        meta = {"format": FORMAT, "kind": self.data.kind, "seq_len": self.data.seq_len,
                "batch_size": self.data.batch_size, "n_steps": self.data.n_steps,
                "block_steps": self.block_steps, "max_text_tokens": self.max_text,
                "dtype": self.dtype.name, "vocab": vocab,
                "tokens": int(sum(b["n_tokens"] for b in blocks)), "blocks": blocks,
                "data": self.data_fp.to_json(), "data_digest": self.data_fp.digest()}
        io.save_npy(self.out / "unigram.npy", uni)
        io.write_json(self.out / "index.json", meta)
        return {"blocks": len(blocks), "tokens": meta["tokens"], "steps": self.data.n_steps}


class _quiet_stdout:
    """Silence a native library's writes to file descriptor 1."""

    def __enter__(self):
        import sys

        sys.stdout.flush()
        self.saved = os.dup(1)
        self.null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(self.null, 1)
        return self

    def __exit__(self, *exc):
        os.dup2(self.saved, 1)
        os.close(self.saved)
        os.close(self.null)


def build_trace_index(data, out: PathLike, block_steps: int | None = None,
                      ranks: execution.Ranks = _ONE, overwrite: bool = False,
                      merge: bool = False, progress: bool = True,
                      max_text: int | None = None) -> execution.StepResult:
    """Build (this rank's blocks of) the index of ``data``'s trained stream under ``out``."""
    step = TraceIndexStep(data, out, block_steps, max_text)
    return execution.run_step(step, ranks, overwrite=overwrite, merge_only=merge,
                              show_progress=progress)


@dataclass
class Block:
    first_slot: int
    n_own: int  # tokens of the block's own sequences (positions beyond are the overlap)
    tokens: np.ndarray  # memmap, with the overlap
    ids: np.ndarray  # instance (OLMo) or row (Pythia) of each slot of the block
    index: Any  # tokengrams.MemmapIndex


@dataclass
class Occurrences:
    """Every occurrence of one token sequence, in (slot, offset) order."""

    slot: np.ndarray
    offset: np.ndarray
    instance: np.ndarray
    within_row: np.ndarray  # the occurrence lies inside one training sequence

    def __len__(self) -> int:
        return len(self.slot)


class TraceIndex:
    """The query side of an index built by :func:`build_trace_index`."""

    def __init__(self, root: PathLike):
        from tokengrams import MemmapIndex

        self.root = Path(root)
        meta_path = self.root / "index.json"
        if not meta_path.is_file():
            raise InputError(self.root, "no trace index here (index.json is missing: build it "
                                        "with build_trace_index.py, or finish its merge)")
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("format") != FORMAT:
            raise InputError(meta_path, f"not a trace index of this version "
                                        f"({self.meta.get('format')!r}, expected {FORMAT!r})")
        self.seq_len = int(self.meta["seq_len"])
        self.batch_size = int(self.meta["batch_size"])
        self.n_steps = int(self.meta["n_steps"])
        self.max_text = int(self.meta["max_text_tokens"])
        dtype = np.dtype(self.meta["dtype"])
        self.blocks: list[Block] = []
        for b in self.meta["blocks"]:
            tok, tab = self.root / b["tokens"], self.root / b["table"]
            for p in (tok, tab, self.root / b["ids"]):
                if not p.is_file():
                    raise InputError(p, "a block file of the trace index is missing")
            n = int(b["n_with_overlap"])
            if tok.stat().st_size != n * dtype.itemsize or tab.stat().st_size != n * 8:
                raise InputError(tok, "a block of the trace index has the wrong size (a "
                                      "partial copy?)")
            self.blocks.append(Block(int(b["first_slot"]), int(b["n_tokens"]),
                                     np.memmap(tok, dtype=dtype, mode="r", shape=(n,)),
                                     np.load(self.root / b["ids"], mmap_mode="r"),
                                     MemmapIndex(str(tok), str(tab), int(self.meta["vocab"]))))
        self._unigram: np.ndarray | None = None

    # -- the data it was built from ------------------------------------------------------
    def check_data(self, data) -> None:
        """One clear error when ``data`` is not the data this index was built from."""
        fp = data_fingerprint(data)
        if fp.digest() == self.meta.get("data_digest"):
            return
        old = execution.Fingerprint.from_json(self.meta["data"])
        diff = "; ".join(fp.differences(old)) or "its fingerprint differs"
        raise InputError(self.root, f"this trace index was built from other training data "
                                    f"than the one given ({diff}): rebuild it with "
                                    "build_trace_index.py")

    # -- queries -------------------------------------------------------------------------
    def contains(self, q: Sequence[int]) -> bool:
        q = list(q)
        return any(b.index.contains(q) for b in self.blocks)

    def count(self, q: Sequence[int]) -> int:
        return len(self.locate(q))

    def locate(self, q: Sequence[int]) -> Occurrences:
        """Every occurrence of ``q`` that starts in a block's own tokens (an occurrence in
        the overlap belongs to the next block)."""
        q = list(q)
        slots, offs, inst = [], [], []
        L = self.seq_len
        for b in self.blocks:
            pos = np.asarray(b.index.positions(q), np.int64)
            pos = np.sort(pos[pos < b.n_own])
            if len(pos):
                rel = pos // L
                slots.append(b.first_slot + rel)
                offs.append(pos % L)
                inst.append(np.asarray(b.ids[rel], np.int64))
        if not slots:
            z = np.zeros(0, np.int64)
            return Occurrences(z, z.copy(), z.copy(), np.zeros(0, bool))
        slot, off = np.concatenate(slots), np.concatenate(offs)
        return Occurrences(slot, off, np.concatenate(inst), off + len(q) <= L)

    def _block_of(self, slot: int) -> Block:
        for b in self.blocks:
            if 0 <= (slot - b.first_slot) * self.seq_len < b.n_own:
                return b
        raise IndexError(f"slot {slot} is not in the index")

    def window(self, slot: int, offset: int, length: int, before: int, after: int
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(before, match, after)`` tokens of the stream around an occurrence."""
        b = self._block_of(slot)
        p = (slot - b.first_slot) * self.seq_len + offset
        t = b.tokens
        return (np.asarray(t[max(0, p - before):p]), np.asarray(t[p:p + length]),
                np.asarray(t[p + length:p + length + after]))

    def row_tokens(self, slot: int) -> np.ndarray:
        """The sequence trained at ``slot``."""
        return self.window(slot, 0, self.seq_len, 0, 0)[1]

    @property
    def unigram(self) -> np.ndarray:
        """Token counts of the trained stream."""
        if self._unigram is None:
            self._unigram = np.load(self.root / "unigram.npy")
        return self._unigram
