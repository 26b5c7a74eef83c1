"""The execution layer: ranks, threads, fingerprints, parts with completion markers, merges.

Every heavy step (a corpus pass or a model pass) is a list of *units* whose composition never
depends on the number of ranks: whole shards, or whole batches fixed by the item order and
the batch size. Rank ``r`` of ``W`` computes units ``r, r + W, r + 2W, ...`` (strided, so
length-sorted batches spread their cost evenly), and each unit's result is written as its own
file, so W ranks give byte-identical results to one rank in any precision.

CPU kernels split their reductions by thread, so the same batch gives different last bits
with 1 and 2 intra-op threads (measured here: up to 2e-6 in fp32 log-probs, 4e-3 in bf16
embeddings). On the CPU every unit is therefore computed with one torch thread, and a rank
runs ``Ranks.workers`` units at once (as fast here as one unit on two threads): the bytes
depend neither on the number of ranks nor on the cores each rank has.

On disk, for a final output ``OUT`` (a file, or a folder for steps that write several)::

    OUT.parts/<digest>/                     one folder per fingerprint: stale parts never mix
                                            (a run folder's parts: FOLDER/parts/<digest>/)
        fingerprint.json                    what produced these parts
        00003-of-00008/unit-000011.npz      rank 3's units (11 = 3 + 8), written one by one
        00003-of-00008.done.json            rank 3's completion marker (fingerprint, units)
    OUT                                     the merged output, written atomically
    OUT.done.json (or OUT/done.json)        the output's completion marker

A rank skips the units it already has (so a killed rank resumes where it stopped) and the
whole rank when its marker matches. The rank that completes the last part merges (under a
file lock, so two ranks finishing together merge once); ``--merge`` merges on its own, or
fails with one line naming the missing ranks. After the merge the parts are removed.

The same fingerprint rule guards every script's final output (:func:`check_output`): an
output whose marker records the same fingerprint is skipped, one with a different fingerprint
is refused with a message naming what differs, and ``--overwrite`` replaces it.

Ranks come from the scripts (:func:`resolve_ranks` reads ``--rank/--world_size``, torchrun's
or a Slurm array's environment); the library receives them as a :class:`Ranks` argument.
The design follows datatrove's executors (rank and world size passed in, per-task completion
markers) and TRAK's savers (results addressed by global index, a metadata file that makes an
incompatible resume impossible).
"""

from __future__ import annotations

import contextlib
import hashlib
import io as _io
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from anatomy import __version__
from anatomy.io import InputError, PathLike, atomic_write, read_json, write_json
from anatomy.progress import progress as _progress

log = logging.getLogger("anatomy")

# Files up to this size are identified by their sha256 (0.1 s for 64 MiB here), larger ones
# by size and modification time (hashing OLMo's 1.7 TB of token files is not an option).
HASH_LIMIT = 64 << 20
FOLDER_HASH_LIMIT = 256 << 20
_PART_RE = re.compile(r"^(\d{5})-of-(\d{5})\.done\.json$")


# ---------------------------------------------------------------------------------------
# ranks and threads


@dataclass(frozen=True)
class Ranks:
    """Which share of a step this process computes.

    ``local_world_size`` is the number of ranks on this host (torchrun's
    ``LOCAL_WORLD_SIZE``), used to share the host's cores between them.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1
    source: str = "single"  # flags | torchrun | slurm | single
    threads: int | None = None  # CPU threads of this rank (None: its share of the host)

    def __post_init__(self) -> None:
        if self.world_size < 1 or not 0 <= self.rank < self.world_size:
            raise InputError(None, f"need 0 <= rank < world_size, got rank {self.rank} of "
                                   f"{self.world_size} ({self.source})")

    def units(self, n_units: int) -> list[int]:
        """This rank's units of ``n_units``: ``rank, rank + W, ...``.

        Example: 5 units, 2 ranks -> rank 0 gets [0, 2, 4], rank 1 gets [1, 3].
        """
        return list(range(self.rank, n_units, self.world_size))

    @property
    def label(self) -> str:
        return f"rank {self.rank} of {self.world_size}"

    @property
    def workers(self) -> int:
        """CPU units computed at once: ``threads``, else the host's cores / local ranks."""
        if self.threads is not None:
            return max(1, self.threads)
        return max(1, host_cores() // max(1, self.local_world_size))


def _env_int(environ: Mapping[str, str], key: str) -> int | None:
    value = environ.get(key)
    if value is None or value == "":
        return None
    try:
        return int(value)
    except ValueError:
        raise InputError(None, f"environment variable {key}={value!r} is not an integer") from None


def resolve_ranks(rank: int | None = None, world_size: int | None = None,
                  environ: Mapping[str, str] | None = None) -> Ranks:
    """Ranks from ``--rank/--world_size``, else torchrun, else a Slurm array, else one process.

    torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``LOCAL_WORLD_SIZE``. A Slurm
    array sets ``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT``; ids start at
    ``SLURM_ARRAY_TASK_MIN`` and advance by ``SLURM_ARRAY_TASK_STEP`` (``--array=1-15:2``
    gives ids 1, 3, ..., 15, ranks 0..7). Called by the scripts only.
    """
    env = os.environ if environ is None else environ
    if rank is not None or world_size is not None:
        if rank is None or world_size is None:
            raise InputError(None, "pass --rank and --world_size together")
        return Ranks(rank, world_size, 0, 1, "flags")
    r, w = _env_int(env, "RANK"), _env_int(env, "WORLD_SIZE")
    if r is not None and w is not None:
        lr = _env_int(env, "LOCAL_RANK")
        lw = _env_int(env, "LOCAL_WORLD_SIZE")
        return Ranks(r, w, r if lr is None else lr, w if lw is None else lw, "torchrun")
    task, count = _env_int(env, "SLURM_ARRAY_TASK_ID"), _env_int(env, "SLURM_ARRAY_TASK_COUNT")
    if task is not None and count is not None:
        lo = _env_int(env, "SLURM_ARRAY_TASK_MIN") or 0
        stride = _env_int(env, "SLURM_ARRAY_TASK_STEP") or 1
        return Ranks((task - lo) // stride, count, 0, 1, "slurm")
    return Ranks()


def host_cores() -> int:
    """Cores this process may run on (its CPU affinity: Slurm's and taskset's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def thread_share(ranks: Ranks, threads: int | None = None,
                 environ: Mapping[str, str] | None = None, cores: int | None = None) -> int:
    """Threads for this rank: ``threads`` if given, else the host's cores / ranks on the host.

    Under torchrun that is ``cores // LOCAL_WORLD_SIZE`` (torchrun's own default is 1). Outside
    torchrun an explicit ``OMP_NUM_THREADS`` is respected (several ``--rank`` processes on one
    machine should set it, or pass ``--threads``). Measured here: two torch processes with
    default threads on 2 cores slowed a miniworld training step from ~1 s to ~10 s.
    """
    if threads is not None:
        if threads < 1:
            raise InputError(None, f"--threads must be >= 1, got {threads}")
        return threads
    env = os.environ if environ is None else environ
    cores = host_cores() if cores is None else cores
    if ranks.source != "torchrun":
        omp = _env_int(env, "OMP_NUM_THREADS")
        if omp is not None and omp >= 1:
            return omp
    return max(1, cores // max(1, ranks.local_world_size))


def apply_threads(n: int) -> None:
    """Use ``n`` threads in torch, faiss and BLAS (and in child processes, by environment)."""
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[key] = str(n)
    import sys

    if "torch" in sys.modules:  # else torch reads OMP_NUM_THREADS when it is imported
        sys.modules["torch"].set_num_threads(n)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(n)


class UnitPlan:
    """Units of several kinds in one step, numbered kind after kind.

    Example: ``UnitPlan(score=3, recall=2)``: units 0-2 are ``("score", 0..2)``, units 3-4
    ``("recall", 0..1)``; with 2 ranks rank 0 gets score 0, score 2 and recall 1.
    """

    def __init__(self, **counts: int):
        self.counts = dict(counts)
        self.starts: dict[str, int] = {}
        n = 0
        for kind, c in self.counts.items():
            self.starts[kind] = n
            n += c
        self.n_units = n

    def locate(self, unit: int) -> tuple[str, int]:
        for kind, c in self.counts.items():
            if self.starts[kind] <= unit < self.starts[kind] + c:
                return kind, unit - self.starts[kind]
        raise IndexError(f"unit {unit} outside [0, {self.n_units})")

    def unit(self, kind: str, i: int) -> int:
        if not 0 <= i < self.counts[kind]:
            raise IndexError(f"{kind} unit {i} outside [0, {self.counts[kind]})")
        return self.starts[kind] + i


# ---------------------------------------------------------------------------------------
# fingerprints

_sha_cache: dict[tuple[str, int, int], str] = {}


def _sha256(path: Path, st: os.stat_result) -> str:
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _sha_cache:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(1 << 20):
                h.update(block)
        _sha_cache[key] = h.hexdigest()
    return _sha_cache[key]


def _file_identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    if st.st_size <= HASH_LIMIT:
        return {"size": st.st_size, "sha256": _sha256(path, st)}
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def identity(source: PathLike | Sequence[PathLike] | None) -> dict[str, Any] | list | None:
    """What identifies an input: its content for a file or folder, its name otherwise.

    Files: size and sha256 (size and mtime above :data:`HASH_LIMIT`). Folders: one sha256 over
    their files' relative paths and identities (contents up to :data:`FOLDER_HASH_LIMIT` in
    all, sizes and mtimes beyond; hidden files, completion markers and ``*.parts``
    skipped). URLs
    and hub names: the string itself. A list: the list of its items' identities. ``path`` is
    recorded but not part of the identity, so a moved or relinked input still matches.
    """
    if source is None:
        return None
    if isinstance(source, list | tuple):
        return [identity(x) for x in source]
    s = str(source)
    p = Path(s).expanduser()
    if "://" in s or not p.exists():
        return {"name": s}
    if p.is_file():
        return {"path": s, **_file_identity(p)}
    files = []
    for f in sorted(q for q in p.rglob("*") if q.is_file()):
        rel = f.relative_to(p)
        if any(part.startswith(".") or part.endswith(".parts") for part in rel.parts) \
                or f.name.endswith(".done.json"):
            continue
        files.append((rel.as_posix(), f, f.stat()))
    # a large folder (a corpus, a 7B checkpoint) is identified by sizes and mtimes only
    by_content = sum(st.st_size for _, _, st in files) <= FOLDER_HASH_LIMIT
    h = hashlib.sha256()
    for rel, f, st in files:
        ident = ({"size": st.st_size, "sha256": _sha256(f, st)} if by_content
                 else {"size": st.st_size, "mtime_ns": st.st_mtime_ns})
        h.update(json.dumps([rel, ident], sort_keys=True).encode())
    return {"path": s, "files": len(files), "sha256": h.hexdigest()}


def _canonical(obj: Any) -> Any:
    """JSON-ready: tuples -> lists, Paths -> str, numpy scalars -> Python."""
    if isinstance(obj, Mapping):
        return {str(k): _canonical(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_canonical(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


@dataclass
class Fingerprint:
    """What produced an output: the step, its inputs' identities, its parameters, our version."""

    step: str
    inputs: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    version: str = __version__

    def _core(self) -> dict[str, Any]:
        inputs = {k: _without_paths(v) for k, v in self.inputs.items()}
        return {"step": self.step, "inputs": inputs, "params": self.params,
                "version": self.version}

    def digest(self) -> str:
        core = json.dumps(self._core(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(core.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        return {"step": self.step, "inputs": self.inputs, "params": self.params,
                "version": self.version, "digest": self.digest()}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Fingerprint:
        return cls(d.get("step", "?"), dict(d.get("inputs") or {}), dict(d.get("params") or {}),
                   d.get("version", "?"))

    def differences(self, old: Fingerprint) -> list[str]:
        """Human-readable differences from ``old`` (what an earlier run recorded)."""
        out = []
        if old.step != self.step:
            out.append(f"step {old.step} -> {self.step}")
        if old.version != self.version:
            out.append(f"data-anatomy {old.version} -> {self.version}")
        a, b = old._core()["inputs"], self._core()["inputs"]
        for k in sorted(set(a) | set(b)):
            if a.get(k) != b.get(k):
                was, now = old.inputs.get(k), self.inputs.get(k)
                ref = now or was or {}
                ref = ref if isinstance(ref, dict) else {"path": f"{len(ref)} files"}
                where = ref.get("path") or ref.get("name") or "?"
                out.append(f"input {k} ({where}) changed" if was and now else
                           f"input {k} {'added' if now else 'removed'}")
        for k in sorted(set(old.params) | set(self.params)):
            if old.params.get(k, "<unset>") != self.params.get(k, "<unset>"):
                out.append(f"{k} {_short(old.params.get(k, '<unset>'))} -> "
                           f"{_short(self.params.get(k, '<unset>'))}")
        return out or ["the recorded fingerprint differs"]


def _without_paths(v: Any) -> Any:
    if isinstance(v, dict):
        return {k: x for k, x in v.items() if k != "path"}
    if isinstance(v, list):
        return [_without_paths(x) for x in v]
    return v


def _short(v: Any, n: int = 40) -> str:
    s = json.dumps(v) if not isinstance(v, str) else v
    return s if len(s) <= n else s[: n - 3] + "..."


def fingerprint(step: str, inputs: Mapping[str, PathLike | None] | None = None,
                params: Mapping[str, Any] | None = None) -> Fingerprint:
    """A :class:`Fingerprint` of ``step`` from its inputs (paths, URLs or names) and flags."""
    return Fingerprint(step, {k: identity(v) for k, v in (inputs or {}).items()},
                       _canonical(dict(params or {})))


# ---------------------------------------------------------------------------------------
# final outputs


@dataclass
class Output:
    """A step's final output files and the completion marker that vouches for them."""

    files: list[Path]
    marker: Path
    hashes: bool = False  # the marker also records each file's sha256 (small outputs)

    @classmethod
    def file(cls, path: PathLike, *also: PathLike) -> Output:
        """One output file (plus companions), marker ``PATH.done.json``."""
        p = Path(path)
        return cls([p, *map(Path, also)], p.with_name(p.name + ".done.json"))

    @classmethod
    def folder(cls, path: PathLike, names: Iterable[str]) -> Output:
        """Files inside a run folder, marker ``FOLDER/done.json``."""
        d = Path(path)
        return cls([d / n for n in names], d / "done.json")

    def key(self, f: Path) -> str:
        """How the marker names an output file: its path relative to the marker's folder."""
        try:
            return f.relative_to(self.marker.parent).as_posix()
        except ValueError:
            return str(f)

    @property
    def name(self) -> str:
        """How messages name the output: the run folder, or the marker's file."""
        if self.marker.name == "done.json":
            return str(self.marker.parent)
        return str(self.marker)[: -len(".done.json")]

    @property
    def parts_dir(self) -> Path:
        """Where this output's parts live while it is computed, beside its marker:
        ``FILE.parts/`` for ``FILE.done.json``, ``FOLDER/parts/`` for ``FOLDER/done.json``."""
        if self.marker.name == "done.json":
            return self.marker.parent / "parts"
        return self.marker.with_name(self.marker.name[: -len(".done.json")] + ".parts")


def _read_marker(path: Path) -> dict[str, Any] | None:
    try:
        d = read_json(path)
    except InputError:
        return None
    return d if isinstance(d, dict) and "fingerprint" in d else None


def output_state(output: Output, fp: Fingerprint) -> tuple[str, list[str]]:
    """``("missing" | "done" | "incomplete" | "differs" | "unmarked", differences)``."""
    rec = _read_marker(output.marker) if output.marker.is_file() else None
    if rec is None:
        if output.marker.is_file() or any(f.exists() for f in output.files):
            return "unmarked", []
        return "missing", []
    old = Fingerprint.from_json(rec["fingerprint"])
    if rec.get("digest") != fp.digest():
        return "differs", fp.differences(old)
    sizes = rec.get("files") or {}
    for f in output.files:
        want = sizes.get(output.key(f))
        if not f.is_file() or (want is not None and f.stat().st_size != want):
            return "incomplete", [f"{f} is missing or changed"]
    return "done", []


def check_output(output: Output, fp: Fingerprint, overwrite: bool = False) -> bool:
    """The one output policy. True: compute (the marker, if any, is removed); False: skip.

    - same fingerprint and every file intact: skip (one log line), unless ``overwrite``;
    - a different fingerprint: InputError naming what differs, unless ``overwrite``;
    - files without a marker (an older version, another tool, an interrupted run): an
      InputError, unless ``overwrite``;
    - a marker whose files are missing or resized: computed again.
    """
    state, diffs = output_state(output, fp)
    if state == "done" and not overwrite:
        log.info("%s: up to date (same inputs and flags), skipped; --overwrite to redo",
                 output.name)
        return False
    if state == "differs" and not overwrite:
        raise InputError(output.name, "exists from other inputs or flags: " + "; ".join(diffs)
                         + " (pass --overwrite to replace it)")
    if state == "unmarked" and not overwrite:
        raise InputError(output.name, "exists without a completion marker (written by an "
                                      "older version, another tool or an interrupted run); "
                                      "pass --overwrite to replace it")
    if state == "incomplete":
        log.info("%s: %s; computing it again", output.name, diffs[0])
    with contextlib.suppress(FileNotFoundError):
        output.marker.unlink()
    return True


@contextlib.contextmanager
def staged(output: Output):
    """Write an output of several files so that it appears whole or not at all.

    Yields ``stage(final_path) -> path to write``; the files are written into a hidden
    staging folder beside the marker and moved into place together when the block ends
    without an error (then the caller writes the marker). A killed writer leaves only the
    staging folder, which the next run replaces; readers that check the marker
    (:func:`anatomy.mixture.classifier.load_category_samples`) never see part of an output.
    """
    stage_dir = output.marker.with_name(f".staging-{output.marker.name[:-len('.json')]}")
    shutil.rmtree(stage_dir, ignore_errors=True)
    stage_dir.mkdir(parents=True)
    moves: dict[Path, Path] = {}

    def stage(final: PathLike) -> Path:
        final = Path(final)
        p = stage_dir / output.key(final).replace("/", "__")
        moves[final] = p
        return p

    try:
        yield stage
        for final, p in moves.items():
            final.parent.mkdir(parents=True, exist_ok=True)
            os.replace(p, final)
    finally:
        shutil.rmtree(stage_dir, ignore_errors=True)


def mark_output(output: Output, fp: Fingerprint, summary: Mapping[str, Any] | None = None
                ) -> None:
    """Write the completion marker, after every output file is in place."""
    missing = [str(f) for f in output.files if not f.is_file()]
    if missing:
        raise RuntimeError(f"cannot mark {output.name} complete: missing {missing}")
    rec = {"fingerprint": fp.to_json(), "digest": fp.digest(),
           "files": {output.key(f): f.stat().st_size for f in output.files},
           "summary": _canonical(dict(summary or {}))}
    if output.hashes:
        rec["sha256"] = {output.key(f): _sha256(f, f.stat()) for f in output.files}
    write_json(output.marker, rec)


def verify_marker(marker: PathLike) -> tuple[dict[str, Any], list[str]]:
    """``(record, problems)``: how the files a completion marker vouches for differ from its
    record (missing, resized, or, where it recorded sha256, changed). For a reader that
    trusts a folder written by a step, e.g. one category file removed after the fact."""
    marker = Path(marker)
    rec = _read_marker(marker) if marker.is_file() else None
    if rec is None:
        return {}, [f"{marker} is not a completion record"]
    problems = []
    hashes = rec.get("sha256") or {}
    for key, size in (rec.get("files") or {}).items():
        f = marker.parent / key
        if not f.is_file():
            problems.append(f"{key} is missing")
        elif f.stat().st_size != size:
            problems.append(f"{key} has {f.stat().st_size:,} bytes, the record {size:,}")
        elif key in hashes and _sha256(f, f.stat()) != hashes[key]:
            problems.append(f"{key} differs from the record (sha256)")
    return rec, problems


def recorded_summary(output: Output) -> dict[str, Any]:
    """The summary a completed output's marker recorded (for a skipped run's report)."""
    rec = _read_marker(output.marker)
    return dict((rec or {}).get("summary") or {})


# ---------------------------------------------------------------------------------------
# unit payloads: dicts of arrays and JSON values in one .npz


def save_payload(path: PathLike, payload: Mapping[str, Any]) -> None:
    """Atomically save ``{name: array | JSON value}`` as one ``.npz``."""
    arrays = {}
    for k, v in payload.items():
        if isinstance(v, np.ndarray):
            arrays[k] = v
        else:
            arrays["__json__" + k] = np.frombuffer(json.dumps(_canonical(v)).encode(), np.uint8)
    buf = _io.BytesIO()
    np.savez(buf, **arrays)
    with atomic_write(path, "wb") as f:
        f.write(buf.getvalue())


def load_payload(path: PathLike) -> dict[str, Any]:
    with np.load(path, allow_pickle=False) as z:
        out: dict[str, Any] = {}
        for k in z.files:
            if k.startswith("__json__"):
                out[k[len("__json__"):]] = json.loads(z[k].tobytes().decode())
            else:
                out[k] = z[k]
    return out


# ---------------------------------------------------------------------------------------
# parts


class Parts:
    """The parts of one sharded step: ``TOP/<digest>/RRRRR-of-WWWWW/`` and their markers."""

    def __init__(self, top: PathLike, fp: Fingerprint, world_size: int):
        self.top = Path(top)
        self.fp = fp
        self.world_size = world_size
        self.root = self.top / fp.digest()[:16]

    def name(self, rank: int) -> str:
        return f"{rank:05d}-of-{self.world_size:05d}"

    def rank_dir(self, rank: int) -> Path:
        return self.root / self.name(rank)

    def marker(self, rank: int) -> Path:
        return self.root / f"{self.name(rank)}.done.json"

    def unit_path(self, unit: int) -> Path:
        return self.rank_dir(unit % self.world_size) / f"unit-{unit:06d}.npz"

    def is_done(self, rank: int) -> bool:
        rec = _read_marker(self.marker(rank)) if self.marker(rank).is_file() else None
        return rec is not None and rec.get("digest") == self.fp.digest()

    def missing(self) -> list[int]:
        return [r for r in range(self.world_size) if not self.is_done(r)]

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        fp_file = self.root / "fingerprint.json"
        if not fp_file.is_file():
            write_json(fp_file, self.fp.to_json())

    def mark_done(self, rank: int, info: Mapping[str, Any]) -> None:
        write_json(self.marker(rank), {"fingerprint": self.fp.to_json(),
                                       "digest": self.fp.digest(), "rank": rank,
                                       "world_size": self.world_size, **_canonical(dict(info))})

    def has_unit(self, unit: int) -> bool:
        return self.unit_path(unit).is_file()

    def save_unit(self, unit: int, payload: Mapping[str, Any]) -> None:
        save_payload(self.unit_path(unit), payload)

    def load_unit(self, unit: int) -> dict[str, Any]:
        return load_payload(self.unit_path(unit))

    def remove(self) -> None:
        shutil.rmtree(self.top, ignore_errors=True)

    @staticmethod
    def world_sizes_on_disk(top: PathLike, fp: Fingerprint) -> list[int]:
        root = Path(top) / fp.digest()[:16]
        sizes = {int(m.group(2)) for p in (root.iterdir() if root.is_dir() else [])
                 if (m := _PART_RE.match(p.name))}
        return sorted(sizes)


@contextlib.contextmanager
def _merge_lock(root: Path):
    """An exclusive, non-blocking lock (flock: released if the holder dies).

    Yields True (held), False (another rank holds it) or None (the parts folder is gone:
    another rank merged and removed it)."""
    import fcntl

    try:
        fd = os.open(root / "merge.lock", os.O_CREAT | os.O_RDWR, 0o644)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# steps


class Step(Protocol):
    """A heavy step: ``n_units`` W-independent units, each computed alone, then one merge.

    ``run_step`` sets ``world_size`` before computing. A step with ``on_cpu = True`` (a
    model pass on the CPU) has its units computed single-threaded, several at once, so its
    ``compute_unit`` must be thread-safe (read-only models are). A step with
    ``per_rank = True`` is an associative reduction (its merge gives the same output however
    the items were grouped): it gets one unit per rank, unit ``u`` taking items
    ``u, u + W, ...``.
    """

    name: str
    output: Output
    fingerprint: Fingerprint
    n_units: int

    def compute_unit(self, unit: int) -> Mapping[str, Any]:
        """The result of one unit (arrays and JSON values)."""

    def merge(self, load: Callable[[int], Mapping[str, Any]]) -> Mapping[str, Any] | None:
        """Write the final output files atomically from the units (``load(u)``, any order,
        each loaded once); return a small summary for the marker and the report."""


@dataclass
class StepResult:
    """What :func:`run_step` did in this process."""

    status: str  # "skipped" (up to date) | "merged" | "part" (waiting for other ranks)
    output: Output
    computed: int = 0  # units computed here
    resumed: int = 0  # units found on disk from an interrupted run
    missing: list[int] = field(default_factory=list)  # ranks without a finished part
    summary: dict[str, Any] = field(default_factory=dict)

    lead: bool = False  # this process reports and continues: it merged, or rank 0 skipped

    @property
    def final(self) -> bool:
        """True when the final output exists (merged here or up to date already)."""
        return self.status in ("skipped", "merged")


def run_units(step: Step, units: Sequence[int] | None = None,
              prepare: Callable[[], None] | None = None) -> dict[str, Any] | None:
    """Compute ``units`` (default all) in memory and merge: the one-process library path.

    Gives the same result as :func:`run_step` on any number of ranks (same units, same merge).
    """
    units = range(step.n_units) if units is None else units
    if prepare is not None:
        prepare()
    results = {u: step.compute_unit(u) for u in units}
    summary = step.merge(results.__getitem__)
    return None if summary is None else dict(summary)


def run_step(step: Step, ranks: Ranks = Ranks(), *, overwrite: bool = False,
             merge_only: bool = False, prepare: Callable[[], None] | None = None,
             show_progress: bool = True) -> StepResult:
    """Run this rank's share of ``step``, then merge if every part is complete.

    ``prepare`` runs once before the first unit this process computes (e.g. loading a
    model), so a rank with nothing left to do never loads anything.
    """
    out = step.output
    fp = step.fingerprint
    if not check_output(out, fp, overwrite and not merge_only):
        return StepResult("skipped", out, summary=recorded_summary(out),
                          lead=ranks.rank == 0 or merge_only)
    world = ranks.world_size
    if merge_only and world == 1:
        sizes = Parts.world_sizes_on_disk(out.parts_dir, fp)
        if len(sizes) > 1:
            raise InputError(out.name, f"parts for several world sizes {sizes} on disk: pass "
                                       "--world_size with --merge")
        world = sizes[0] if sizes else 1
    parts = Parts(out.parts_dir, fp, world)
    made = _missing_parents(parts.top)
    if getattr(step, "per_rank", False):
        # an associative reduction (e.g. bottom-k samples): one unit per rank, whose
        # composition depends on W but whose merge does not; units live in W's own folders
        step.n_units = world
    step.world_size = world
    if merge_only:
        missing = parts.missing()
        if missing:
            raise InputError(out.name, f"cannot merge {step.name}: ranks "
                                       f"{_ranges(missing)} of {world} have no finished part "
                                       f"under {parts.root}")
    else:
        computed, resumed = _compute_part(step, parts, ranks, overwrite, prepare, show_progress)
        missing = parts.missing()
        if missing:
            log.info("%s: %s done (%d units computed, %d resumed); waiting for ranks %s "
                     "(the last rank to finish merges, or run again with --merge)",
                     step.name, ranks.label, computed, resumed, _ranges(missing))
            return StepResult("part", out, computed, resumed, missing)
    with _merge_lock(parts.root) as held:
        if held is None and output_state(out, fp)[0] == "done":
            return StepResult("skipped", out, summary=recorded_summary(out))
        if not held:
            log.info("%s: another rank is merging", step.name)
            return StepResult("part", out)
        if output_state(out, fp)[0] == "done":  # merged by a rank that finished just before
            return StepResult("skipped", out, summary=recorded_summary(out))
        t = time.time()
        try:
            summary = dict(step.merge(parts.load_unit) or {})
        except InputError:
            # the units are bad input for the merge (e.g. a category left empty): the same
            # flags would fail again, so leave nothing behind
            parts.remove()
            for d in made:
                with contextlib.suppress(OSError):
                    d.rmdir()
            raise
        mark_output(out, fp, summary)
        log.info("%s: merged %d parts into %s (%.1fs)", step.name, world, out.name,
                 time.time() - t)
    parts.remove()
    res = StepResult("merged", out, summary=summary, lead=True)
    if not merge_only:
        res.computed, res.resumed = computed, resumed
    return res


def _compute_part(step: Step, parts: Parts, ranks: Ranks, overwrite: bool,
                  prepare: Callable[[], None] | None, show_progress: bool) -> tuple[int, int]:
    rank = ranks.rank
    if parts.is_done(rank) and not overwrite:
        log.info("%s: %s already done (matching completion marker), skipped", step.name,
                 ranks.label)
        return 0, 0
    made = _missing_parents(parts.top)
    try:
        return _compute_units(step, parts, ranks, overwrite, prepare, show_progress)
    except BaseException:
        # nothing to resume from (e.g. bad input on the first unit): leave nothing behind
        if not any(parts.top.rglob("unit-*.npz")):
            shutil.rmtree(parts.top, ignore_errors=True)
            for d in made:
                with contextlib.suppress(OSError):
                    d.rmdir()
        raise


def _missing_parents(path: Path) -> list[Path]:
    """The folders above ``path`` (itself included) that do not exist yet, deepest first."""
    out = []
    for d in [path, *path.parents]:
        if d.exists():
            break
        out.append(d)
    return out


def _compute_units(step: Step, parts: Parts, ranks: Ranks, overwrite: bool,
                   prepare: Callable[[], None] | None, show_progress: bool) -> tuple[int, int]:
    rank = ranks.rank
    parts.start()
    with contextlib.suppress(FileNotFoundError):
        parts.marker(rank).unlink()
    mine = ranks.units(step.n_units)
    todo = mine if overwrite else [u for u in mine if not parts.has_unit(u)]
    resumed = len(mine) - len(todo)
    if resumed:
        log.info("%s: %s resumes: %d of its %d units are on disk", step.name, ranks.label,
                 resumed, len(mine))
    t = time.time()
    if todo and prepare is not None:
        prepare()

    def one(u: int) -> None:
        parts.save_unit(u, step.compute_unit(u))

    bar = None if show_progress else True
    if getattr(step, "on_cpu", False):
        with single_threaded_torch():
            _map_concurrently(one, todo, ranks.workers, step.name, bar)
    else:
        for u in _progress(todo, step.name, "unit", len(todo), bar):
            one(u)
    parts.mark_done(rank, {"units": len(mine), "computed": len(todo), "resumed": resumed,
                           "seconds": round(time.time() - t, 3)})
    return len(todo), resumed


@contextlib.contextmanager
def single_threaded_torch():
    """One intra-op torch thread inside the block (the previous count restored after)."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def _map_concurrently(fn: Callable[[int], None], units: Sequence[int], workers: int,
                      desc: str, disable: bool | None) -> None:
    """``fn(u)`` for every unit, ``workers`` at a time in threads (torch releases the GIL
    inside its kernels); the first exception cancels what has not started and is raised."""
    if workers <= 1 or len(units) <= 1:
        for u in _progress(units, desc, "unit", len(units), disable):
            fn(u)
        return
    from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

    with ThreadPoolExecutor(workers, thread_name_prefix="unit") as pool:
        futures = [pool.submit(fn, u) for u in units]
        bar = iter(_progress(range(len(futures)), desc, "unit", len(futures), disable))
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for f in done:
                if f.exception() is not None:
                    for p in pending:
                        p.cancel()
                    raise f.exception()
                next(bar, None)


def _ranges(ranks: Sequence[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` -> ``"0-2, 5, 7-8"``."""
    out: list[str] = []
    for r in ranks:
        if out and (m := re.fullmatch(r"(\d+)(?:-(\d+))?", out[-1])) and \
                int(m.group(2) or m.group(1)) == r - 1:
            out[-1] = f"{m.group(1)}-{r}"
        else:
            out.append(str(r))
    return ", ".join(out)
