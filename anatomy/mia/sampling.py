"""Random documents from a training run's data order: OLMoMIA's ``sample.py`` step.

Source: Kim et al., "Detecting Training Data of Large Language Models via Expectation
Maximization" (arXiv 2410.07582), the ``olmomia/sample.py`` tool of ``gyuwankim/em-mia``; see
``shared/reference/olmomia.md`` sections 2 and 10. Positions are drawn exactly as published
(CPython ``random.sample`` with seed 42), each drawn position's training instance is split on
EOS into whole documents, and every document becomes one JSONL record
``{"input", "idx": [position, paragraph_idx], "length"}``.

Unlike the published tool, a failed fetch is never dropped silently: it becomes a failure
record ``{"position", "error"}`` that the caller writes beside the samples.

Token files and the data order are read elsewhere (``anatomy.olmo_data``); this module takes
them as callables so it stays pure and testable.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from anatomy.io import InputError
from anatomy.progress import progress

log = logging.getLogger("anatomy")
Fetched = np.ndarray | Exception
# what a sample record keeps of its tokens: the ids as trained, and which vocabulary they
# are ids of (:func:`anatomy.lm.vocab_digest`), so scoring can use them instead of a
# decode/re-encode round trip that BPE does not always invert
TOKEN_FIELDS = ("input_ids", "tokenizer")
FetchMany = Callable[[list[int]], Sequence[Fetched]]
Decode = Callable[[list[int]], str]


def _sample_uses_set_branch(n: int, k: int) -> bool:
    """True when CPython's ``random.sample(range(n), k)`` takes its rejection-set branch.

    Mirrors ``Random.sample`` (CPython 3.11 ``Lib/random.py``, unchanged since 3.2)::

        setsize = 21
        if k > 5:
            setsize += 4 ** ceil(log(k * 3, 4))
        if n <= setsize: ...pool branch (partial Fisher-Yates)...
        else:            ...set branch: draw randbelow(n), redraw while already selected...

    Within one branch draw i depends only on draws 0..i-1, so each ``k`` yields a prefix of
    that branch's fixed sequence; the two branches' sequences differ. ``setsize`` grows with
    ``k``, so the set branch at ``k`` implies it at every smaller ``k``.
    """
    setsize = 21
    if k > 5:
        setsize += 4 ** math.ceil(math.log(k * 3, 4))
    return n > setsize


def max_consistent_sample_end(n: int) -> int:
    """The largest ``k`` whose draw from ``range(n)`` extends every smaller ``k``'s draw.

    Both branches of ``random.sample`` are prefix-consistent on their own; only a switch
    between them breaks it. A population of <= 21 always uses the pool branch (all ``k``
    agree); a larger one uses the set branch for small ``k`` (e.g. ``k <= 21`` for n=200,
    ``k <= 22,369,621`` for n=216,000,000).
    """
    if not _sample_uses_set_branch(n, 1):
        return n
    lo, hi = 1, n  # the predicate is monotone in k: binary search its last True
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if _sample_uses_set_branch(n, mid) else (lo, mid - 1)
    return lo


def draw_positions(step_start: int, step_end: int, batch_size: int, sample_start: int,
                   sample_end: int, seed: int = 42) -> list[int]:
    """Data-order positions ``[sample_start:sample_end]`` of the published seeded draw.

    Exactly ``random.Random(seed).sample(range(step_start*B, step_end*B), sample_end)
    [sample_start:]``, which equals the published ``random.seed(42); random.sample(...)``
    (the module functions are methods of one hidden ``Random`` instance). Position ``p``
    was trained at step ``p // B``, slot ``p % B``; e.g. B=2160, p=171644825 is step 79465,
    slot 425.

    Disjoint jobs ``[S0, S1]`` concatenate to the single job ``[min S0, max S1]`` because
    each of CPython's two branches is prefix-consistent (see :func:`_sample_uses_set_branch`):
    the rejection-set branch up to ``max_consistent_sample_end(n)`` (22,369,621 for steps
    [0, 100000) at B=2160), the pool branch beyond it. A job that would mix the two (its
    ``sample_start`` on the set side, its ``sample_end`` past the limit) is refused rather
    than silently reordered.

    Memory: the draw keeps ``sample_end`` Python ints plus a set of them (about 100 bytes
    each), so a few million positions cost a few hundred MB; the first ``sample_start``
    draws are always recomputed (about 1 s per million).

    The draw depends on CPython's ``random`` (Mersenne Twister, ``_randbelow`` via
    ``getrandbits``), stable since Python 3.2; the golden values in
    ``tests/test_mia_sampling.py`` guard it on other interpreters.
    """
    if batch_size <= 0:
        raise InputError(None, f"batch size must be positive, got {batch_size}")
    if not 0 <= step_start < step_end:
        raise InputError(None, f"need 0 <= step_start < step_end, got [{step_start}, {step_end})")
    n = (step_end - step_start) * batch_size
    if not 0 <= sample_start <= sample_end <= n:
        raise InputError(None, f"need 0 <= sample_start <= sample_end <= {n} positions in steps "
                               f"[{step_start}, {step_end}), got [{sample_start}, {sample_end})")
    limit = max_consistent_sample_end(n)
    if 0 < sample_start <= limit < sample_end:
        raise InputError(None, f"sample_end {sample_end} > {limit} puts this job on CPython's "
                               "random.sample pool branch, while a job ending at sample_start "
                               f"{sample_start} used the set branch: their draws disagree. Keep "
                               f"every job's sample_end <= {limit}, or start the loop with a first "
                               f"job [0, S1) where S1 > {limit}")
    if sample_end > limit:
        log.info("sample_end %d > %d: random.sample's pool branch for %d positions; jobs agree "
                 "only with jobs whose sample_end is also > %d", sample_end, limit, n, limit)
    rng = random.Random(seed)
    return rng.sample(range(step_start * batch_size, step_end * batch_size), sample_end)[
        sample_start:]


def split_on_eos(tokens: np.ndarray, eos_id: int) -> list[tuple[int, int]]:
    """``(start, end)`` spans strictly between consecutive EOS tokens.

    The partial documents before the first and after the last EOS are dropped, so every span
    is one whole document of the instance (olmomia.md section 2 step 4). Back-to-back EOS give
    empty spans, kept as published (the length filter removes them). Example: tokens
    ``[7, E, 3, 4, E, E, 9]`` -> ``[(2, 4), (5, 5)]``.
    """
    eos = np.flatnonzero(np.asarray(tokens) == eos_id)
    return list(zip((eos[:-1] + 1).tolist(), eos[1:].tolist(), strict=True))


def samples_from_instance(position: int, tokens: np.ndarray, eos_id: int,
                          decode: Decode, vocab: str | None = None) -> list[dict[str, Any]]:
    """One record per whole document in a training instance, in the published JSONL schema.

    ``{"input": decode(tokens), "idx": [position, paragraph_idx], "length": n_tokens}``, with
    ``paragraph_idx`` counting from 1 and ``position`` the data-order position (not the
    instance id), plus ``input_ids`` (the span as trained) and, given ``vocab``, the
    ``tokenizer`` digest those ids belong to. ``decode`` receives the span as a list of ints.
    """
    tokens = np.asarray(tokens)
    if tokens.ndim != 1:
        raise ValueError(f"instance at position {position} has shape {tokens.shape}, "
                         "expected one row of tokens")
    out = []
    for k, (s, e) in enumerate(split_on_eos(tokens, eos_id), 1):
        ids = tokens[s:e].tolist()
        rec = {"input": decode(ids), "idx": [int(position), k], "length": e - s,
               "input_ids": ids}
        if vocab is not None:
            rec["tokenizer"] = vocab
        out.append(rec)
    return out


def sample_records(positions: Sequence[int], fetch_many: FetchMany, eos_id: int, decode: Decode,
                   chunk_size: int = 64, desc: str = "sampling", vocab: str | None = None
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Fetch each position's instance and split it into document records, in draw order.

    Args:
        positions: data-order positions, e.g. from :func:`draw_positions`.
        fetch_many: called with up to ``chunk_size`` positions; returns, in the same order,
            each position's token array or the Exception that fetching it raised (so a
            remote reader can batch its requests and report failures one by one).
        eos_id: the document separator (50279 for OLMo-7B; see olmomia.md section 8).
        decode: token ids -> text.

    Returns:
        ``(records, failures)``: records as :func:`samples_from_instance`, and one
        ``{"position": p, "error": "<ExceptionType>: message"}`` per failed fetch.
    """
    if chunk_size <= 0:
        raise ValueError(f"chunk_size must be positive, got {chunk_size}")
    records: list[dict[str, Any]] = []
    failures: list[dict[str, Any]] = []
    chunks = [list(positions[i:i + chunk_size]) for i in range(0, len(positions), chunk_size)]
    for chunk in progress(chunks, desc=desc, unit="chunk"):
        fetched = list(fetch_many(chunk))
        if len(fetched) != len(chunk):
            raise ValueError(f"fetch_many returned {len(fetched)} results for {len(chunk)} "
                             "positions")
        for p, got in zip(chunk, fetched, strict=True):
            if isinstance(got, Exception):
                failures.append({"position": int(p), "error": f"{type(got).__name__}: {got}"})
            else:
                records.extend(samples_from_instance(p, got, eos_id, decode, vocab))
    return records, failures
