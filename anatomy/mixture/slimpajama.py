"""Uniform per-category samples from SlimPajama-style ``.jsonl.zst`` shards.

Two on-disk layouts (shared/reference/mixture.md section 5), found under ``ROOT`` or
``ROOT/train``:

* **chunks** (cerebras/SlimPajama-627B and the miniworld's pools):
  ``train/chunk1..10/example_train_*.jsonl.zst``; every shard mixes all sets and a record's
  set is ``meta.redpajama_set_name`` (``meta`` may be a dict or a JSON string, as in some
  Parquet mirrors);
* **per-set** (MBZUAI-LLM/SlimPajama-627B-DC): ``train/RedPajamaC4/*.jsonl.zst`` etc.; the
  directory names the set.

A mapping sends set names to category (output file) names; by default the 7 RedPajama sets
to ``commoncrawl c4 github books arxiv wikipedia stackexchange`` (note ``RedPajamaGithub``
with a lower-case h and ``RedPajamaBook`` singular). Several sets may share a category.

Sampling is a *bottom-k sample* (Cohen & Kaplan 2007, "Summarizing data using bottom-k
sketches", PODC): every record gets the key ``blake2b(seed, shard path relative to ROOT,
line number)`` and each category keeps the ``n`` eligible records with the smallest keys.
Keys are i.i.d. uniform and independent of the data, so the kept set is a uniform sample
without replacement; and since a record's key does not depend on which process reads it,
the per-shard bottom-k sets computed in parallel and merged give the same sample for any
``num_proc``. With ``dedup`` a text (compared after collapsing white space and case) counts
once, with the smallest key among its copies: a uniform sample of the distinct texts.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anatomy.io import (
    InputError,
    PathLike,
    iter_jsonl_numbered,
    read_json,
    read_yaml,
    write_json,
    write_jsonl,
)

log = logging.getLogger("anatomy")

DEFAULT_SET_MAP = {
    "RedPajamaCommonCrawl": "commoncrawl",
    "RedPajamaC4": "c4",
    "RedPajamaGithub": "github",
    "RedPajamaBook": "books",
    "RedPajamaArXiv": "arxiv",
    "RedPajamaWikipedia": "wikipedia",
    "RedPajamaStackExchange": "stackexchange",
}
SHARD_SUFFIXES = (".jsonl.zst", ".jsonl.gz", ".jsonl")
STATS_FILE = "fetch_category_samples.meta.json"
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def parse_set_map(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """Set name -> category name, from ``None`` (the RedPajama default), a mapping, a YAML /
    JSON file holding a mapping, or a string ``"SET=name,SET2=name2"``."""
    if spec is None:
        return dict(DEFAULT_SET_MAP)
    where: str | None = None
    if isinstance(spec, str):
        if Path(spec).is_file():
            where, raw = spec, read_yaml(spec)
        else:
            raw = {}
            for part in filter(None, (p.strip() for p in spec.split(","))):
                k, sep, v = part.partition("=")
                if not sep or not k.strip() or not v.strip():
                    raise InputError(None, f"--set_map: expected SET=name, got {part!r}")
                raw[k.strip()] = v.strip()
    else:
        raw = spec
    if not isinstance(raw, Mapping) or not raw:
        raise InputError(where, "set map must be a non-empty mapping of SET: category")
    out = {}
    for k, v in raw.items():
        if not isinstance(v, str) or not _SAFE_NAME.match(v):
            raise InputError(where, f"set map: category for {k!r} must be a plain file name "
                                    f"(letters, digits, _ . -), got {v!r}")
        out[str(k)] = v
    return out


def record_key(seed: int, shard: str, line: int) -> int:
    """The record's sampling key: 64 bits of ``blake2b("seed|shard|line")``."""
    h = hashlib.blake2b(f"{seed}|{shard}|{line}".encode(), digest_size=8)
    return int.from_bytes(h.digest(), "big")


def _text_hash(text: str) -> bytes:
    return hashlib.blake2b(" ".join(text.split()).lower().encode(), digest_size=16).digest()


@dataclass(frozen=True)
class Shard:
    relpath: str  # posix, relative to the root given by the user
    category: str | None  # per-set layout: the directory's category; chunks: None


def find_shards(root: PathLike, mapping: Mapping[str, str]) -> tuple[str, list[Shard]]:
    """Detect the layout under ``root`` (or ``root/train``) and list shards, sorted.

    Returns ``("chunks" | "per_set", shards)``. Per-set directories not in ``mapping`` are
    skipped with a warning.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "SlimPajama root not found" if not root.exists()
                         else "SlimPajama root is not a folder")
    base = root / "train" if (root / "train").is_dir() else root

    def shards_in(d: Path) -> list[Path]:
        return sorted(p for p in d.rglob("*") if p.is_file() and p.name.endswith(SHARD_SUFFIXES))

    subdirs = sorted(d for d in base.iterdir() if d.is_dir())
    set_dirs = [d for d in subdirs if d.name in mapping]
    if set_dirs:
        other = [d.name for d in subdirs if d.name not in mapping]
        if other:
            log.warning("%s: skipping folders not in the set map: %s", base, ", ".join(other))
        shards = [Shard(p.relative_to(root).as_posix(), mapping[d.name])
                  for d in set_dirs for p in shards_in(d)]
        layout = "per_set"
    else:
        shards = [Shard(p.relative_to(root).as_posix(), None) for p in shards_in(base)]
        layout = "chunks"
    if not shards:
        raise InputError(base, "no shards (*.jsonl.zst) found: expected train/chunkN/*.jsonl.zst"
                               " or one folder per set (e.g. train/RedPajamaC4/)")
    return layout, shards


class DistinctSketch:
    """How many distinct texts a category holds: a k-minimum-values sketch (Bar-Yossef et
    al. 2002) over 64-bit text hashes. Exact below ``k`` distinct texts; above, the estimate
    ``(k - 1) / (k-th smallest hash / 2**64)`` has a relative error of about 1/sqrt(k)
    (1.6% at k = 4096). Mergeable across shards and ranks, in memory O(k), so duplicates are
    counted (and kept out of the pool sizes) without a set of every text."""

    def __init__(self, k: int = 4096, values: Iterable[int] = ()):
        self.k = k
        self.heap: list[int] = []  # max-heap (negated) of the k smallest hashes
        self.members: set[int] = set()
        for v in values:
            self.offer(v)

    def offer(self, h: int) -> None:
        if h in self.members:
            return
        if len(self.heap) < self.k:
            heapq.heappush(self.heap, -h)
            self.members.add(h)
        elif h < -self.heap[0]:
            old = -heapq.heapreplace(self.heap, -h)
            self.members.discard(old)
            self.members.add(h)

    @property
    def exact(self) -> bool:
        return len(self.heap) < self.k

    def estimate(self) -> float:
        if self.exact:
            return float(len(self.heap))
        return (self.k - 1) / (-self.heap[0] / 2.0 ** 64)

    def values(self) -> list[int]:
        return sorted(self.members)


class _BottomK:
    """The ``n`` smallest-key items, at most one per text hash when ``dedup``."""

    def __init__(self, n: int, dedup: bool):
        self.n, self.dedup = n, dedup
        self.heap: list[tuple[int, bytes | int]] = []  # (-key, id), a max-heap on key
        self.items: dict[bytes | int, tuple[int, Any]] = {}  # id -> (key, payload)

    def offer(self, key: int, th: bytes | int, payload: Any) -> None:
        if th in self.items:  # same text seen before: keep the smaller key
            if key < self.items[th][0]:
                self.items[th] = (key, payload)
                self.heap = [(-k, t) for t, (k, _) in self.items.items()]
                heapq.heapify(self.heap)
            return
        if len(self.heap) < self.n:
            heapq.heappush(self.heap, (-key, th))
        elif self.n > 0 and key < -self.heap[0][0]:
            _, old = heapq.heapreplace(self.heap, (-key, th))
            del self.items[old]
        else:
            return
        self.items[th] = (key, payload)

    def sorted(self) -> list[tuple[int, bytes | int, Any]]:
        return sorted((k, t, p) for t, (k, p) in self.items.items())


@dataclass
class _ShardResult:
    relpath: str
    kept: dict[str, list[tuple[int, bytes | int, dict]]] = field(default_factory=dict)
    eligible: dict[str, int] = field(default_factory=dict)
    unmapped: dict[str, int] = field(default_factory=dict)
    records: int = 0
    too_short: dict[str, int] = field(default_factory=dict)
    error: tuple[str, int | None] | None = None  # (problem, line)
    bad_shards: list[str] = field(default_factory=list)  # a rank's skipped shards
    distinct: dict[str, list[int]] = field(default_factory=dict)  # DistinctSketch values


def _set_name(meta: Any) -> str:
    if isinstance(meta, dict) and isinstance(meta.get("redpajama_set_name"), str):
        return meta["redpajama_set_name"]
    raise ValueError('record has no "meta.redpajama_set_name"')


def _sample_shard(task: tuple) -> _ShardResult:
    """Bottom-k per category over one shard (runs in a worker process)."""
    root, shard, mapping, n, seed, min_chars, max_chars, dedup = task
    res = _ShardResult(shard.relpath)
    tops: dict[str, _BottomK] = {}
    sketches: dict[str, DistinctSketch] = {}
    try:
        for lineno, rec in iter_jsonl_numbered(Path(root) / shard.relpath):
            if not isinstance(rec.get("text"), str):
                res.error = ('expected a JSON object with a string "text"', lineno)
                return res
            meta = rec.get("meta", {})
            if isinstance(meta, str):  # Parquet mirrors store meta as a JSON string
                try:
                    meta = json.loads(meta)
                except json.JSONDecodeError:
                    res.error = ('"meta" is a string but not valid JSON', lineno)
                    return res
            res.records += 1
            if shard.category is not None:
                cat = shard.category
            else:
                try:
                    name = _set_name(meta)
                except ValueError as e:
                    res.error = (str(e), lineno)
                    return res
                cat = mapping.get(name)
                if cat is None:
                    res.unmapped[name] = res.unmapped.get(name, 0) + 1
                    continue
            text = rec["text"]
            if len(text.strip()) < min_chars:
                res.too_short[cat] = res.too_short.get(cat, 0) + 1
                continue
            res.eligible[cat] = res.eligible.get(cat, 0) + 1
            key = record_key(seed, shard.relpath, lineno)
            if cat not in tops:
                tops[cat] = _BottomK(n, dedup)
                sketches[cat] = DistinctSketch()
            th = _text_hash(text) if dedup else key
            if dedup:
                sketches[cat].offer(int.from_bytes(th[:8], "big"))
            out = {"id": f"{shard.relpath}:{lineno}",
                   "text": text if max_chars is None else text[:max_chars],
                   "meta": meta if isinstance(meta, dict) else {"value": meta},
                   "source": {"shard": shard.relpath, "line": lineno}}
            tops[cat].offer(key, th, out)
    except InputError as e:  # bad JSON, unreadable file or corrupt zstd stream
        res.error = (e.problem, e.line)
        return res
    res.kept = {c: t.sorted() for c, t in tops.items()}
    res.distinct = {c: sk.values() for c, sk in sketches.items()}
    return res


def _map_tasks(fn: Callable, tasks: list, num_proc: int) -> Iterable:
    if num_proc <= 1 or len(tasks) <= 1:
        yield from map(fn, tasks)
        return
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(min(num_proc, len(tasks))) as pool:
        yield from pool.imap(fn, tasks, chunksize=1)


def _reduce(results: Iterable[_ShardResult], root: PathLike, n: int, dedup: bool,
            cats: list[str], skip_bad: bool) -> tuple[dict[str, _BottomK], dict[str, Any]]:
    """Merge shard (or rank) results: bottom-k per category, summed counts, bad shards."""
    merged = {c: _BottomK(n, dedup) for c in cats}
    sketches = {c: DistinctSketch() for c in cats}
    stats: dict[str, Any] = {"records": 0, "too_short": dict.fromkeys(cats, 0),
                             "eligible": dict.fromkeys(cats, 0), "unmapped": {},
                             "bad_shards": [], "sketches": sketches}
    for res in results:
        if res.error is not None:
            problem, line = res.error
            err = InputError(Path(root) / res.relpath, problem, line)
            if not skip_bad:
                raise err
            log.warning("skipping bad shard: %s", err.message)
            stats["bad_shards"].append(err.message)
            continue
        stats["bad_shards"] += res.bad_shards
        stats["records"] += res.records
        for c, k in res.too_short.items():
            stats["too_short"][c] += k
        for c, k in res.eligible.items():
            stats["eligible"][c] += k
        for c, vals in res.distinct.items():
            for v in vals:
                sketches[c].offer(v)
        for name, k in res.unmapped.items():
            stats["unmapped"][name] = stats["unmapped"].get(name, 0) + k
        for c, items in res.kept.items():
            for key, th, rec in items:
                merged[c].offer(key, th, rec)
    return merged, stats


def _tasks(root: PathLike, shards: list[Shard], mapping: Mapping[str, str], n: int, seed: int,
           min_chars: int, max_chars: int | None, dedup: bool) -> list[tuple]:
    return [(str(root), s, mapping, n, seed, min_chars, max_chars, dedup) for s in shards]


def _finish(merged: dict[str, _BottomK], stats: dict[str, Any], layout: str, n_shards: int,
            n_per_category: int, dedup: bool, min_chars: int
            ) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """The samples and the statistics, every dropped record counted per category:
    ``too_short`` (under ``min_chars``), ``duplicates`` (eligible records whose text another
    eligible record has, estimated by :class:`DistinctSketch` above 4096 distinct texts),
    ``unmapped`` (set names outside the map), ``bad_shards``. ``distinct`` (eligible minus
    duplicates) is the pool size the Min-K%++ arm weights by. A category left with no sample
    is one error saying why."""
    cats = sorted(merged)
    samples = {c: [rec for _, _, rec in merged[c].sorted()] for c in cats}
    sk = stats["sketches"]
    distinct = ({c: (round(sk[c].estimate()) if stats["eligible"][c] else 0) for c in cats}
                if dedup else dict(stats["eligible"]))
    out = {"layout": layout, "shards": n_shards, "records": stats["records"],
           "too_short": stats["too_short"], "eligible": stats["eligible"],
           "distinct": distinct,
           "distinct_exact": {c: (sk[c].exact if dedup else True) for c in cats},
           "duplicates": {c: max(0, stats["eligible"][c] - distinct[c]) for c in cats},
           "kept": {c: len(v) for c, v in samples.items()},
           "unmapped": dict(sorted(stats["unmapped"].items())),
           "bad_shards": sorted(stats["bad_shards"])}
    empty = [c for c in cats if out["kept"][c] == 0]
    if empty and n_per_category > 0:
        why = "; ".join(
            f"{c}: {out['too_short'][c]} records shorter than --min_chars {min_chars}"
            if out["too_short"][c] else f"{c}: no record of its set names" for c in empty)
        raise InputError(None, f"no sample for {len(empty)} categories ({why}); lower "
                               "--min_chars, or pass --set_map with the sets these shards "
                               "hold")
    for c in cats:
        if out["kept"][c] < n_per_category:
            log.warning("%s: only %d of %d requested records available", c,
                        out["kept"][c], n_per_category)
    return samples, out


def sample_categories(root: PathLike, n_per_category: int, seed: int = 42, num_proc: int = 1,
                      mapping: Mapping[str, str] | None = None, skip_bad: bool = False,
                      min_chars: int = 0, max_chars: int | None = None, dedup: bool = True,
                      progress: Callable[[Iterable, int], Iterable] | None = None,
                      ) -> tuple[dict[str, list[dict]], dict[str, Any]]:
    """The samples (records sorted by key, per category) and statistics; writes nothing.

    A corrupt shard (bad zstd, bad JSON, a record without text or set name) raises
    InputError naming the shard and line, or with ``skip_bad`` is left out entirely (a
    warning; listed in ``stats["bad_shards"]``).
    """
    if n_per_category < 0:
        raise ValueError("n_per_category must be >= 0")
    mapping = dict(DEFAULT_SET_MAP if mapping is None else mapping)
    layout, shards = find_shards(root, mapping)
    tasks = _tasks(root, shards, mapping, n_per_category, seed, min_chars, max_chars, dedup)
    results = _map_tasks(_sample_shard, tasks, num_proc)
    if progress is not None:
        results = progress(results, len(tasks))
    merged, stats = _reduce(results, root, n_per_category, dedup, sorted(set(mapping.values())),
                            skip_bad)
    return _finish(merged, stats, layout, len(shards), n_per_category, dedup, min_chars)


def _pack(merged: dict[str, _BottomK], stats: dict[str, Any]) -> dict[str, Any]:
    """A rank's reduction as JSON (text hashes as hex)."""
    kept = {c: [[k, t.hex() if isinstance(t, bytes) else t, r] for k, t, r in b.sorted()]
            for c, b in merged.items()}
    st = {k: v for k, v in stats.items() if k != "sketches"}
    st["distinct"] = {c: [str(v) for v in sk.values()] for c, sk in stats["sketches"].items()}
    return {"kept": kept, "stats": st}


def _unpack(payload: Mapping[str, Any]) -> _ShardResult:
    st = payload["stats"]
    return _ShardResult("", {c: [tuple(x) for x in v] for c, v in payload["kept"].items()},
                        dict(st["eligible"]), dict(st["unmapped"]), st["records"],
                        dict(st["too_short"]), None, list(st["bad_shards"]),
                        {c: [int(v) for v in vals] for c, vals in st["distinct"].items()})


class _FetchStep:
    """The shards split over ranks; each rank's part is its bottom-k reduction."""

    name = "fetch_category_samples"
    per_rank = True  # bottom-k of a union = bottom-k of the parts' bottom-k: any grouping
    n_units = 1
    world_size = 1

    def __init__(self, root, layout, shards, mapping, n, seed, min_chars, max_chars, dedup,
                 num_proc, skip_bad, output, fp, files, args, progress):
        self.root, self.layout, self.shards, self.mapping = root, layout, shards, mapping
        self.n, self.seed, self.min_chars, self.max_chars = n, seed, min_chars, max_chars
        self.dedup, self.num_proc, self.skip_bad = dedup, num_proc, skip_bad
        self.output, self.fingerprint, self.files, self.args = output, fp, files, args
        self.progress = progress
        self.cats = sorted(set(mapping.values()))

    def compute_unit(self, u: int) -> dict[str, Any]:
        mine = self.shards[u::self.world_size]
        tasks = _tasks(self.root, mine, self.mapping, self.n, self.seed, self.min_chars,
                       self.max_chars, self.dedup)
        results = _map_tasks(_sample_shard, tasks, self.num_proc)
        if self.progress is not None:
            results = self.progress(results, len(tasks))
        return _pack(*_reduce(results, self.root, self.n, self.dedup, self.cats,
                              self.skip_bad))

    def merge(self, load) -> dict[str, Any]:
        merged, stats = _reduce((_unpack(load(u)) for u in range(self.n_units)), self.root,
                                self.n, self.dedup, self.cats, self.skip_bad)
        from anatomy.execution import staged

        samples, stats = _finish(merged, stats, self.layout, len(self.shards), self.n,
                                 self.dedup, self.min_chars)
        stats["files"] = {c: p.name for c, p in self.files.items()}
        with staged(self.output) as stage:  # every category file appears, or none
            for c, path in self.files.items():
                write_jsonl(stage(path), samples[c])
            write_json(stage(self.output.files[-1]), {"args": self.args, "stats": stats})
        return {"kept": stats["kept"]}


def fetch_category_samples(root: PathLike, n_per_category: int, out_dir: PathLike,
                           seed: int = 42, num_proc: int = 1,
                           mapping: str | Mapping[str, str] | None = None,
                           skip_bad: bool = False, min_chars: int = 0,
                           max_chars: int | None = None, dedup: bool = True, ranks=None,
                           overwrite: bool = False, merge: bool = False,
                           progress: Callable[[Iterable, int], Iterable] | None = None,
                           ) -> dict[str, Any] | None:
    """Sample ``n_per_category`` records per category and write ``OUT/<category>.jsonl``.

    Each output record is ``{"id": "SHARD:LINE", "text", "meta": {original meta, parsed},
    "source": {"shard": relpath, "line": n}}``, sorted by sampling key, so reruns (and any
    ``num_proc`` or number of ``ranks``) give byte-identical files. ``text`` is cut to
    ``max_chars`` when given; records with fewer than ``min_chars`` non-space-stripped
    characters are not eligible. Also writes ``OUT/fetch_category_samples.meta.json``
    (arguments and statistics). Rank ``r`` of ``W`` reads shards ``r, r + W, ...`` (each
    with ``num_proc`` processes) and writes its bottom-k as its part; the last rank to finish
    merges. Returns the statistics (``kept``, ``eligible``, ``bad_shards``, ``files`` ...)
    in the process that merged (or found the output up to date on rank 0), else None.
    """
    from anatomy import execution

    ranks = ranks or execution.Ranks()
    if n_per_category < 0:
        raise InputError(None, "--n_per_category must be >= 0")
    set_map = parse_set_map(mapping if mapping is not None else None)
    out = Path(out_dir)
    files = {c: out / f"{c}.jsonl" for c in sorted(set(set_map.values()))}
    layout, shards = find_shards(root, set_map)
    args = {"n_per_category": n_per_category, "seed": seed, "set_map": set_map,
            "skip_bad": skip_bad, "min_chars": min_chars, "max_chars": max_chars,
            "dedup": dedup}
    fp = execution.fingerprint("fetch_category_samples", {"root": root}, args)
    output = execution.Output([*files.values(), out / STATS_FILE],
                              out / "fetch_category_samples.done.json", hashes=True)
    step = _FetchStep(root, layout, shards, set_map, n_per_category, seed, min_chars,
                      max_chars, dedup, num_proc, skip_bad, output, fp, files, args, progress)
    res = execution.run_step(step, ranks, overwrite=overwrite, merge_only=merge)
    if not res.lead:
        return None
    return read_json(out / STATS_FILE)["stats"]
