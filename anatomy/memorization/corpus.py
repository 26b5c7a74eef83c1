"""Corpus-wide passes over the trained stream as map steps: token counts, n-gram counts.

The map reads the training data in storage order (whole token files / Pythia rows, in
blocks of ``rows_per_unit`` sequences, keeping only trained ones; see
:meth:`anatomy.memorization.data.TrainingData.shard`), so each unit is one sequential read;
its result is a vector of counts, and the reduce is a sum. Units are fixed by the data, not
by the number of ranks: W ranks (a Slurm array, torchrun, several machines) give the bytes
of one, and a killed rank resumes from its finished units.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from anatomy import execution

_ONE = execution.Ranks()  # one process

ROWS_PER_UNIT = 16384  # Pythia: 16384 x 2049 tokens = 67 MB of uint16 per unit


def n_units_for(n_storage: int, rows_per_unit: int = ROWS_PER_UNIT) -> int:
    return max(1, -(-n_storage // rows_per_unit))


class CorpusCountStep:
    """Sum of ``count(rows)`` over every storage block of the trained stream.

    ``count`` returns one int64 vector per block (lengths may differ: the merge pads with
    zeros, e.g. token counts before the vocabulary size is known); ``finish(total)`` writes
    the output atomically and returns the marker's summary.
    """

    def __init__(self, name: str, data, count: Callable[[np.ndarray], np.ndarray],
                 finish: Callable[[np.ndarray, int], Mapping[str, Any]],
                 output: execution.Output, fp: execution.Fingerprint,
                 rows_per_unit: int = ROWS_PER_UNIT):
        self.name, self.data, self.count, self.finish = name, data, count, finish
        self.output, self.fingerprint = output, fp
        self.n_units = n_units_for(data.n_storage, rows_per_unit)

    def compute_unit(self, unit: int) -> Mapping[str, Any]:
        rows = self.data.shard(unit, self.n_units)
        c = np.asarray(self.count(rows), dtype=np.int64)
        # sparse: a block of the Pile holds few of 5M queried continuations, and 9k units
        # of dense 5M-vectors would be 360 GB of parts
        idx = np.flatnonzero(c)
        return {"size": len(c), "index": idx.astype(np.int64), "counts": c[idx],
                "rows": len(rows), "tokens": int(rows.size)}

    def merge(self, load) -> Mapping[str, Any]:
        total = np.zeros(0, dtype=np.int64)
        rows = tokens = 0
        for u in range(self.n_units):
            part = load(u)
            size = int(part["size"])
            if size > len(total):
                total = np.concatenate([total, np.zeros(size - len(total), np.int64)])
            total[np.asarray(part["index"], dtype=np.int64)] += np.asarray(part["counts"],
                                                                           dtype=np.int64)
            rows += int(part["rows"])
            tokens += int(part["tokens"])
        summary = dict(self.finish(total, rows))
        summary.update(rows=rows, tokens=tokens)
        return summary


def run_corpus_count(step: CorpusCountStep, ranks: execution.Ranks = _ONE,
                     overwrite: bool = False, merge: bool = False,
                     progress: bool = True) -> execution.StepResult:
    return execution.run_step(step, ranks, overwrite=overwrite, merge_only=merge,
                              show_progress=progress)
