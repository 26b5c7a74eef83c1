"""Trained sequences for the memorization pipeline, from OLMo's or Pythia's on-disk data.

A *sequence* is one training row: an OLMo instance (``seq_len`` tokens of the token files,
trained at data-order position ``step * B + b``) or a row of Pythia's pre-shuffled Pile
(2049 tokens, row ``step * 1024 + b``; EleutherAI ``utils/batch_viewer.py``). Its
``sequence_id`` is the instance number (OLMo) or the row (Pythia), as the published tables
key them. A *sample* is a sequence's first ``prompt_len + cont_len`` tokens (32 + 32,
Biderman et al. 2023). The *trained stream* is every sequence trained in the run's steps,
the set over which duplicates and token frequencies are counted.

Both readers expose the same interface, so every pipeline-C step runs on either; corpus-wide
passes go through :meth:`TrainingData.shard`, which reads contiguous storage (token files in
order, Pythia rows in order) and keeps only trained sequences.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from anatomy.io import InputError, PathLike


@dataclass
class TrainingData:
    """Common interface; see :class:`OlmoTraining` and :class:`PythiaTraining`."""

    kind: str
    batch_size: int
    seq_len: int
    n_steps: int  # steps of the trained stream

    # -- to implement ------------------------------------------------------------------
    def ids_at_positions(self, positions: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def rows(self, ids: np.ndarray, length: int) -> np.ndarray:
        raise NotImplementedError

    @property
    def n_storage(self) -> int:
        """Sequences in storage order (the unit of :meth:`shard`)."""
        raise NotImplementedError

    def storage_block(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def trained_mask(self, start: int, stop: int) -> np.ndarray:
        raise NotImplementedError

    def sources(self) -> list[str]:
        """The files (or URLs) whose contents the data is: a fingerprint's inputs."""
        raise NotImplementedError

    def layout(self) -> dict:
        """How the files are read (a fingerprint's parameters)."""
        return {"kind": self.kind, "batch_size": self.batch_size, "seq_len": self.seq_len,
                "n_steps": self.n_steps}

    # -- shared --------------------------------------------------------------------------
    @property
    def n_trained(self) -> int:
        return self.n_steps * self.batch_size

    def ids_for_steps(self, start: int, end: int) -> np.ndarray:
        """Sequence ids trained in steps ``[start, end)``, in training order."""
        if not 0 <= start < end:
            raise InputError(None, f"need 0 <= start < end, got steps {start}:{end}")
        if end > self.n_steps:
            raise InputError(None, f"steps {start}:{end} run past the trained stream "
                                   f"({self.n_steps} steps)")
        pos = np.arange(start * self.batch_size, end * self.batch_size, dtype=np.int64)
        return self.ids_at_positions(pos)

    def check_ids(self, ids: np.ndarray, where: PathLike | None = None) -> None:
        """Every id must be a trained sequence (the published tables only hold those)."""
        bad = ids[(ids < 0) | (ids >= self.n_storage)]
        if len(bad):
            raise InputError(where, f"{len(bad)} sequence ids out of range (first {int(bad[0])};"
                                    f" the data holds {self.n_storage} sequences)")
        trained = np.zeros(len(ids), dtype=bool)
        order = np.argsort(ids, kind="stable")
        # one pass over storage in blocks: masks of sorted ids
        s = ids[order]
        step = 1 << 20
        for a in range(0, self.n_storage, step):
            b = min(self.n_storage, a + step)
            lo, hi = np.searchsorted(s, [a, b])
            if hi > lo:
                trained[order[lo:hi]] = self.trained_mask(a, b)[s[lo:hi] - a]
        if not trained.all():
            raise InputError(where, f"{int((~trained).sum())} sequence ids were never trained "
                                    f"in the {self.n_steps} steps (first "
                                    f"{int(ids[~trained][0])})")

    def samples(self, ids: np.ndarray, prompt_len: int = 32, cont_len: int = 32) -> np.ndarray:
        """The first ``prompt_len + cont_len`` tokens of each sequence, ``(k, P + C)`` int64."""
        n = prompt_len + cont_len
        if n > self.seq_len:
            raise InputError(None, f"a sample of {n} tokens does not fit a {self.seq_len}-token "
                                   "sequence")
        return self.rows(np.asarray(ids, dtype=np.int64), n).astype(np.int64)

    def shard(self, unit: int, n_units: int) -> np.ndarray:
        """The trained sequences of storage block ``unit`` of ``n_units`` (whole rows)."""
        bounds = np.linspace(0, self.n_storage, n_units + 1).round().astype(np.int64)
        a, b = int(bounds[unit]), int(bounds[unit + 1])
        rows = self.storage_block(a, b)
        return rows[self.trained_mask(a, b)]


class OlmoTraining(TrainingData):
    """OLMo memmap token files + ``global_indices.npy`` (:class:`anatomy.olmo_data.OlmoData`)."""

    def __init__(self, data, n_steps: int | None = None):
        self.data = data
        steps = data.n_steps if n_steps is None else int(n_steps)
        if steps > data.n_steps:
            raise InputError(data.config.path, f"{steps} steps asked, the data order holds "
                                               f"{data.n_steps}")
        super().__init__("olmo", data.batch_size, data.config.seq_len, steps)
        self.token_dtype = np.dtype(data.files.dtype)
        self._mask: np.ndarray | None = None

    def ids_at_positions(self, positions: np.ndarray) -> np.ndarray:
        return np.asarray(self.data.order[positions], dtype=np.int64)

    def rows(self, ids: np.ndarray, length: int) -> np.ndarray:
        got = self.data.files.instances([int(i) for i in ids])
        out = np.empty((len(ids), length), dtype=np.int64)
        for j, g in enumerate(got):
            if isinstance(g, Exception):
                raise InputError(self.data.config.path, str(g))
            out[j] = g[:length]
        return out

    @property
    def n_storage(self) -> int:
        return len(self.data.files)

    def storage_block(self, start: int, stop: int) -> np.ndarray:
        return self.data.files.block(start, stop)

    def trained_mask(self, start: int, stop: int) -> np.ndarray:
        if self._mask is None:  # one bool per stored instance: 1 GB per 10^9 instances
            m = np.zeros(self.n_storage, dtype=bool)
            step = 1 << 24
            for a in range(0, self.n_trained, step):
                idx = np.asarray(self.data.order[a:min(self.n_trained, a + step)], np.int64)
                if len(idx) and idx.max() >= self.n_storage:
                    raise InputError(self.data.config.path,
                                     f"the data order names instance {int(idx.max())}, the "
                                     f"token files hold {self.n_storage} (OLMo #538)")
                m[idx] = True
            self._mask = m
        return self._mask[start:stop]

    def sources(self) -> list[str]:
        return [*self.data.config.paths, str(self.data.order.source)]


class PythiaTraining(TrainingData):
    """Pythia's pre-shuffled ``MMapIndexedDataset``: row ``r`` is trained at step ``r // B``."""

    def __init__(self, prefix: PathLike, batch_size: int = 1024, seq_len: int = 2049,
                 n_steps: int | None = None):
        from anatomy.pythia_data import PythiaData

        self.data = PythiaData(prefix, batch_size=batch_size, seq_len=seq_len)
        self.prefix = str(prefix)
        n_rows = len(self.data)
        steps = n_rows // batch_size if n_steps is None else int(n_steps)
        if steps * batch_size > n_rows or steps <= 0:
            raise InputError(f"{prefix}.idx", f"{steps} steps of {batch_size} rows asked, the "
                                              f"dataset holds {n_rows} rows")
        super().__init__("pythia", batch_size, seq_len, steps)
        self.token_dtype = np.dtype(self.data.data.dtype)

    def ids_at_positions(self, positions: np.ndarray) -> np.ndarray:
        return np.asarray(positions, dtype=np.int64)

    def rows(self, ids: np.ndarray, length: int) -> np.ndarray:
        return self.data.data.rows(np.asarray(ids, dtype=np.int64), length)

    @property
    def n_storage(self) -> int:
        return len(self.data.data)

    def storage_block(self, start: int, stop: int) -> np.ndarray:
        ds = self.data.data
        if stop <= start:
            return np.zeros((0, self.seq_len), dtype=ds.dtype)
        first, last = int(ds.pointers[start]), int(ds.pointers[stop - 1])
        if last - first == (stop - 1 - start) * self.seq_len * ds.dtype.itemsize:
            # rows written back to back (as GPT-NeoX writes them): one contiguous read
            flat = np.frombuffer(ds._bin_map, dtype=ds.dtype, count=(stop - start) * self.seq_len,
                                 offset=first)
            return flat.reshape(stop - start, self.seq_len)
        return ds.rows(np.arange(start, stop, dtype=np.int64), self.seq_len)

    def trained_mask(self, start: int, stop: int) -> np.ndarray:
        return np.arange(start, stop) < self.n_trained

    def sources(self) -> list[str]:
        return [f"{self.prefix}.bin", f"{self.prefix}.idx"]


def world_steps(config) -> int | None:
    """Trained steps recorded by the config (``data_anatomy.trained_steps``), if any; else
    every whole batch of the data order counts as trained."""
    v = config.extra.get("trained_steps")
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or v <= 0:
        raise InputError(config.path, f'"data_anatomy.trained_steps" must be a positive '
                                      f"integer, got {v!r}")
    return v


def open_training_data(config_path: PathLike | None = None, pythia_prefix: PathLike | None = None,
                       global_indices: str | None = None, n_steps: int | None = None,
                       batch_size: int | None = None, seq_len: int | None = None,
                       retries: int = 5) -> TrainingData:
    """OLMo data from a config, or Pythia data from a ``.bin``/``.idx`` prefix."""
    if (config_path is None) == (pythia_prefix is None):
        raise InputError(None, "give the training data as an OLMo config or a Pythia prefix, "
                               "not both")
    if pythia_prefix is not None:
        return PythiaTraining(pythia_prefix, batch_size or 1024, seq_len or 2049, n_steps)
    from anatomy.olmo_config import load_olmo_config
    from anatomy.olmo_data import OlmoData

    config = load_olmo_config(config_path)
    data = OlmoData(config, global_indices=global_indices, batch_size=batch_size,
                    retries=retries)
    return OlmoTraining(data, n_steps if n_steps is not None else world_steps(config))



def parse_steps(spec: str) -> tuple[int, int]:
    """``"A:B"`` -> ``(A, B)``, steps ``[A, B)``."""
    try:
        a, b = (int(x) for x in spec.split(":"))
    except ValueError:
        raise InputError(None, f"--steps wants START:END (e.g. 0:1000), got {spec!r}") from None
    return a, b


def select_ids(data: TrainingData, sequence_ids: PathLike | None = None,
               steps: str | None = None, all_sequences: bool = False,
               sample: int | None = None, seed: int = 0) -> np.ndarray:
    """The samples' sequence ids: from a file (checked trained), a step range (in training
    order) or every trained sequence (in training order); ``sample`` keeps a uniform random
    subset of a step range or of every trained sequence (EleutherAI's 5M-sequence
    "pile" sample is such a subset), in training order."""
    ids = _select_ids(data, sequence_ids, steps, all_sequences)
    if sample is None:
        return ids
    if sequence_ids is not None:
        raise InputError(sequence_ids, "--sample draws from --steps or --all_sequences, not "
                                       "from a given id list")
    if not 0 < sample <= len(ids):
        raise InputError(None, f"--sample {sample}: choose 1..{len(ids)}")
    keep = np.sort(np.random.default_rng(seed).choice(len(ids), sample, replace=False))
    return ids[keep]


def _select_ids(data: TrainingData, sequence_ids: PathLike | None, steps: str | None,
                all_sequences: bool) -> np.ndarray:
    given = sum(x is not None and x is not False for x in (sequence_ids, steps, all_sequences))
    if given != 1:
        raise InputError(None, "choose the samples with exactly one of --sequence_ids FILE, "
                               "--steps A:B or --all_sequences")
    if sequence_ids is not None:
        from anatomy.memorization.table import sequence_ids_from_file

        ids = sequence_ids_from_file(sequence_ids)
        data.check_ids(ids, sequence_ids)
        return ids
    if steps is not None:
        return data.ids_for_steps(*parse_steps(steps))
    return data.ids_for_steps(0, data.n_steps)


def write_pythia(data: TrainingData, prefix: PathLike, block: int = 4096,
                 progress: bool = False) -> int:
    """The trained stream in Pythia's layout: one row per trained sequence, in training
    order (row ``step * B + b``), as a GPT-NeoX ``MMapIndexedDataset`` (``.bin`` + ``.idx``).
    Returns the number of rows."""
    from anatomy.progress import progress as bar
    from anatomy.pythia_data import write_indexed_dataset

    dtype = data.token_dtype
    starts = range(0, data.n_trained, block)

    def rows():
        for a in bar(starts, "convert", "block", len(starts), None if progress else True):
            pos = np.arange(a, min(data.n_trained, a + block), dtype=np.int64)
            yield from data.rows(data.ids_at_positions(pos), data.seq_len).astype(dtype)

    return write_indexed_dataset(prefix, rows(), dtype=dtype)
