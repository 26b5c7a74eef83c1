"""A balanced member / non-member pool from sampled documents: OLMoMIA's ``filter.py`` step.

Source: Kim et al. (arXiv 2410.07582), ``olmomia/filter.py`` of ``gyuwankim/em-mia``; see
``shared/reference/olmomia.md`` section 3. For each class the ``{S0}:{S1}.jsonl`` files of a
sample folder are walked in (S0 ascending, S1 descending) order, overlapping intervals are
skipped, and documents are taken in draw order when ``L//2 < length <= L`` and their training
instance differs from the last one taken, until the quota is met: ``(N+1)//2`` members
(label 1), then ``N//2`` non-members (label 0).

Where the published tool keeps only ``{"input", "label"}``, records here keep their provenance
(``idx``, ``length``, ``step``; section 10), and a short quota is one clear error saying what
to sample next instead of "Insufficient samples!!!".
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from anatomy.io import InputError, PathLike, iter_jsonl_numbered
from anatomy.mia.sampling import TOKEN_FIELDS

SampleFile = tuple[int, int, Path]

_NAME = re.compile(r"^(\d+):(\d+)\.jsonl$")


def list_sample_files(sample_dir: PathLike) -> list[SampleFile]:
    """``(S0, S1, path)`` for every ``{S0}:{S1}.jsonl`` in ``sample_dir``, by (S0 asc, S1 desc).

    Other files (``*.failures.jsonl``, meta sidecars, temporaries) are ignored.
    """
    d = Path(sample_dir)
    if not d.is_dir():
        raise InputError(d, "sample folder not found" if not d.exists() else "not a folder")
    files = []
    for p in d.iterdir():
        m = _NAME.match(p.name)
        if m is None or not p.is_file():
            continue
        s0, s1 = int(m.group(1)), int(m.group(2))
        if s0 >= s1:
            raise InputError(p, f"sample interval {s0}:{s1} is empty (need S0 < S1)")
        files.append((s0, s1, p))
    return sorted(files, key=lambda f: (f[0], -f[1]))


def select_non_overlapping(files: list[SampleFile]) -> list[SampleFile]:
    """Walk sorted files, skipping any whose S0 is below the end of the last file used.

    E.g. ``0:2000, 0:1000, 1000:2000, 2000:3000, 2500:4000`` -> ``0:2000, 2000:3000``:
    the longest interval at each start wins, gaps are allowed.
    """
    used: list[SampleFile] = []
    end = 0
    for f in files:
        if f[0] >= end:
            used.append(f)
            end = f[1]
    return used


def _idx_position(rec: dict[str, Any], path: Path, line: int) -> int:
    idx = rec["idx"]
    if (not isinstance(idx, list) or len(idx) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in idx)):
        raise InputError(path, f'"idx" must be [position, paragraph_idx], got {idx!r}', line)
    length = rec["length"]
    if not isinstance(length, int) or isinstance(length, bool) or length < 0:
        raise InputError(path, f'"length" must be a non-negative integer, got {length!r}', line)
    return idx[0]


def take_class(files: list[SampleFile], quota: int, max_length: int, label: int,
               batch_size: int, step_range: tuple[int, int] | None = None
               ) -> list[dict[str, Any]]:
    """Up to ``quota`` records from ``files`` (already sorted and non-overlapping), in order.

    A record is taken when ``max_length//2 < length <= max_length`` and its position
    ``idx[0]`` differs from the last taken record's, i.e. the first qualifying document of
    each drawn instance. Output records are ``{"input", "label", "idx", "length", "step"}``
    with ``step = idx[0] // batch_size``, plus the sample's ``input_ids`` and ``tokenizer``
    when it has them.

    ``step_range`` (``[start, end)``), when given, is checked for every taken record: a step
    outside it means the files were sampled with another batch size or belong to another
    class (olmomia.md section 9, the 2048-vs-2160 pitfall), and is an InputError.
    """
    if batch_size <= 0:
        raise InputError(None, f"batch size must be positive, got {batch_size}")
    out: list[dict[str, Any]] = []
    last_pos: int | None = None
    lo = max_length // 2
    for _, _, path in files:
        if len(out) >= quota:
            break
        for line, rec in iter_jsonl_numbered(path, required=("input", "idx", "length")):
            pos = _idx_position(rec, path, line)
            if not lo < rec["length"] <= max_length or pos == last_pos:
                continue
            step = pos // batch_size
            if step_range is not None and not step_range[0] <= step < step_range[1]:
                raise InputError(path, f"position {pos} is step {step} at batch size "
                                       f"{batch_size}, outside steps [{step_range[0]}, "
                                       f"{step_range[1]}); was it sampled with another "
                                       "batch size?", line)
            taken = {"input": rec["input"], "label": label, "idx": rec["idx"],
                     "length": rec["length"], "step": step}
            for key in TOKEN_FIELDS:  # the trained token ids, scored as they were trained
                if key in rec:
                    taken[key] = rec[key]
            out.append(taken)
            last_pos = pos
            if len(out) >= quota:
                break
    return out


def _intervals_text(files: list[SampleFile]) -> str:
    """Used intervals with contiguous runs merged, e.g. ``0:3000 (3 files), 5000:6000``."""
    if not files:
        return "none"
    runs: list[list[int]] = []  # [start, end, n_files]
    for s0, s1, _ in files:
        if runs and runs[-1][1] == s0:
            runs[-1][1] = s1
            runs[-1][2] += 1
        else:
            runs.append([s0, s1, 1])
    return ", ".join(f"{a}:{b}" + (f" ({n} files)" if n > 1 else "") for a, b, n in runs)


def _next_interval(files: list[SampleFile], default_width: int = 1000,
                   limit: int | None = None) -> tuple[int, int] | None:
    """The interval after the last file, as wide as it, capped at ``limit`` (the number of
    positions in the step range); None when nothing is left."""
    start, width = (0, default_width) if not files else (files[-1][1], files[-1][1] - files[-1][0])
    end = start + width if limit is None else min(start + width, limit)
    return (start, end) if end > start else None


def build_pool(member_dir: PathLike, nonmember_dir: PathLike, num_data: int, max_length: int,
               batch_size: int, member_steps: tuple[int, int] | None = None,
               nonmember_steps: tuple[int, int] | None = None) -> list[dict[str, Any]]:
    """The ``num_data`` pool: ``(N+1)//2`` members (label 1), then ``N//2`` non-members (0).

    ``member_steps`` / ``nonmember_steps`` (``[start, end)``) check every record's step and
    name the ``sample.py`` command to run when a class is short. Too few samples in either
    class raise one InputError stating, per class, found / needed, the intervals sampled and
    the next interval to sample.
    """
    if num_data < 2:
        raise InputError(None, f"num_data must be at least 2 (one per class), got {num_data}")
    if max_length < 1:
        raise InputError(None, f"max_length must be positive, got {max_length}")
    classes = [("members", member_dir, (num_data + 1) // 2, 1, member_steps),
               ("non-members", nonmember_dir, num_data // 2, 0, nonmember_steps)]
    taken, short = [], []
    for name, d, quota, label, steps in classes:
        files = select_non_overlapping(list_sample_files(d))
        recs = take_class(files, quota, max_length, label, batch_size, steps)
        taken.append(recs)
        if len(recs) < quota:
            n_pos = (steps[1] - steps[0]) * batch_size if steps else None
            nxt = _next_interval(files, limit=n_pos)
            if nxt is None:
                cmd = "none left: every position of the step range is sampled; widen it"
            else:
                cmd = "sample.py" + (f" --step_start {steps[0]} --step_end {steps[1]}"
                                     if steps else "")
                cmd += f" --sample_start {nxt[0]} --sample_end {nxt[1]}"
            draws = sum(s1 - s0 for s0, s1, _ in files)
            more = ""
            if recs:  # every file was read, so the yield per draw is measured on all of them
                more = f" (about {math.ceil((quota - len(recs)) * draws / len(recs))} more draws)"
            short.append(f"{name}: found {len(recs)} of {quota} needed with "
                         f"{max_length // 2} < length <= {max_length} in {d} (intervals "
                         f"{_intervals_text(files)}){more}; next: {cmd}")
    if short:
        raise InputError(None, "insufficient samples for the pool of "
                               f"{num_data}: " + "; ".join(short))
    return taken[0] + taken[1]
