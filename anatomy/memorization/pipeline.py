"""Pipeline C's steps as the scripts call them: inputs resolved, outputs under the policy.

Each function takes the training data (:mod:`anatomy.memorization.data`), the samples'
sequence ids and an output path; it writes one per-sample feature table keyed by
``sequence_id`` (:mod:`anatomy.memorization.table`) with a completion marker, so a rerun with
the same inputs and flags is skipped, a different one refused without ``overwrite``
(:func:`anatomy.execution.check_output`). Corpus-wide passes are map steps over ranks
(:mod:`anatomy.memorization.corpus`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import execution, io
from anatomy.io import InputError, PathLike
from anatomy.memorization.table import ID, write_table

log = logging.getLogger(__name__)


def ids_digest(ids: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(ids, dtype=np.int64).tobytes()).hexdigest()


def table_step(name: str, output: PathLike, inputs: Mapping[str, Any], params: Mapping[str, Any],
               compute: Callable[[], Mapping[str, Any]], overwrite: bool = False
               ) -> dict[str, Any]:
    """One cheap per-sample step: skip when up to date, else ``compute()`` the columns, write
    the table and its marker. Returns the marker's summary (rows, and per-column sums of
    boolean columns)."""
    out = execution.Output.file(output)
    fp = execution.fingerprint(name, inputs, params)
    if not execution.check_output(out, fp, overwrite):
        return {**execution.recorded_summary(out), "status": "skipped"}
    cols = compute()
    n = write_table(output, cols)
    summary: dict[str, Any] = {"rows": n}
    for k, v in cols.items():
        a = np.asarray(v)
        if a.dtype == bool:
            summary[f"{k}_true"] = int(a.sum())
    execution.mark_output(out, fp, summary)
    return {**summary, "status": "written"}


# ---------------------------------------------------------------------------------------
# token frequencies


def token_count_step(data, counts_path: PathLike, rows_per_unit: int,
                     ranks: execution.Ranks = execution.Ranks(), overwrite: bool = False,
                     merge: bool = False, progress: bool = True) -> execution.StepResult:
    """Corpus token counts of the trained stream, summed over storage blocks, to an NPY."""
    from anatomy.memorization.corpus import CorpusCountStep, run_corpus_count
    from anatomy.memorization.frequencies import token_counts

    counts_path = Path(counts_path)

    def finish(total: np.ndarray, rows: int) -> dict[str, Any]:
        io.save_npy(counts_path, total)
        return {"distinct": int((total > 0).sum()), "vocab": len(total)}

    out = execution.Output.file(counts_path)
    fp = execution.fingerprint("token_counts", {"data": data.sources()},
                               {"data": data.layout(), "rows_per_unit": rows_per_unit})
    step = CorpusCountStep("token_counts", data, token_counts, finish, out, fp, rows_per_unit)
    return run_corpus_count(step, ranks, overwrite, merge, progress)


def sample_frequency_table(data, ids: np.ndarray, counts_path: PathLike, output: PathLike,
                           prompt_len: int = 32, cont_len: int = 32,
                           keep_frequencies: bool = False, overwrite: bool = False) -> int:
    from anatomy.memorization.frequencies import frequency_stats

    def compute():
        counts = io.load_npy(counts_path)
        samples = data.samples(ids, prompt_len, cont_len)
        cols = {ID: ids, **frequency_stats(samples, counts)}
        if keep_frequencies:
            cols["frequencies"] = counts[samples]
        return cols

    s = table_step("token_frequencies", output, {"counts": counts_path},
                   {"ids": ids_digest(ids), "prompt_len": prompt_len, "cont_len": cont_len,
                    "keep_frequencies": keep_frequencies}, compute, overwrite)
    return int(s["rows"])


# ---------------------------------------------------------------------------------------
# templating, Huffman coding length


def decode_samples(tokenizer, samples: np.ndarray) -> list[str]:
    return tokenizer.batch_decode(np.asarray(samples).tolist())


def templating_table(data, ids: np.ndarray, tokenizer, tokenizer_source: str, output: PathLike,
                     prompt_len: int = 32, cont_len: int = 32, published: bool = False,
                     overwrite: bool = False) -> dict[str, Any]:
    from anatomy.memorization.templating import templating_columns

    def compute():
        texts = decode_samples(tokenizer, data.samples(ids, prompt_len, cont_len))
        return {ID: ids, **templating_columns(texts, published=published)}

    return table_step("filter_templating", output,
                      {"data": data.sources(), "tokenizer": tokenizer_source},
                      {"data": data.layout(), "ids": ids_digest(ids), "prompt_len": prompt_len,
                       "cont_len": cont_len, "published": published}, compute, overwrite)


def require_ids(ids: np.ndarray, where: PathLike | None = None) -> None:
    if len(ids) == 0:
        raise InputError(where, "no samples")
