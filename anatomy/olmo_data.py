"""OLMo training data: token files and the ``global_indices`` data order together.

Step ``s``, slot ``b`` -> the tokens trained there (:class:`OlmoData`), and the OLMo #538
check that the files hold every instance the data order names (:func:`check_coverage`).
The parts live in their own modules: :mod:`anatomy.olmo_config` (the TrainConfig YAML),
:mod:`anatomy.token_files` (flat memmaps, read and written), :mod:`anatomy.data_order`
(``global_indices.npy``) and :mod:`anatomy.byte_ranges` (local, http(s) and fsspec reads
with retries). Sources: allenai/OLMo ``olmo/data/memmap_dataset.py``, ``olmo/util.py``,
``olmo/data/iterable_dataset.py``; ``shared/reference/olmomia.md`` sections 2, 8 and 9.
An instance number beyond the files (OLMo #538) raises :class:`InstanceOutOfRange`, which
batch readers return per item so callers count and log it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from anatomy.data_order import DataOrder, PositionOutOfRange
from anatomy.io import InputError
from anatomy.olmo_config import OlmoDataConfig
from anatomy.token_files import TokenFiles

log = logging.getLogger("anatomy")


@dataclass(frozen=True)
class Coverage:
    """Do the token files hold every instance the data order names? (OLMo #538)."""

    n_instances: int  # instances in the token files
    order_max: int  # largest instance number in the data order

    @property
    def ok(self) -> bool:
        return self.order_max < self.n_instances

    @property
    def n_missing(self) -> int:
        """Instance numbers in ``[n_instances, order_max]``: what the files lack at least."""
        return max(0, self.order_max + 1 - self.n_instances)

    def message(self) -> str:
        if self.ok:
            return (f"data order covered: max instance {self.order_max} < "
                    f"{self.n_instances} instances in the token files")
        return (f"data order refers to instance {self.order_max} but the token files hold only "
                f"{self.n_instances} (OLMo #538): {self.n_missing} instance numbers have no "
                "data; fetching them raises InstanceOutOfRange")


def check_coverage(config: OlmoDataConfig | None, data_order_max: int, n_instances: int,
                   strict: bool = False) -> Coverage:
    """The OLMo #538 check: ``max(global_indices) < instances in the files``.

    Returns the :class:`Coverage`; with ``strict`` a failed check raises InputError naming
    the config file, otherwise it is logged as a warning.
    """
    cov = Coverage(int(n_instances), int(data_order_max))
    if not cov.ok:
        if strict:
            raise InputError(None if config is None else config.path, cov.message())
        log.warning("%s%s", "" if config is None else f"{config.path}: ", cov.message())
    return cov



class OlmoData:
    """A training run's data: step ``s``, slot ``b`` -> the tokens trained there."""

    def __init__(self, config: OlmoDataConfig, global_indices: str | None = None,
                 batch_size: int | None = None, retries: int = 5, timeout: float = 60.0,
                 backoff: float = 1.0, num_workers: int = 8):
        self.config = config
        order = global_indices if global_indices is not None else config.global_indices
        if order is None:
            raise InputError(config.path, 'no data order: set "data_anatomy.global_indices" '
                                          "or pass the global_indices path/URL")
        self.batch_size = int(batch_size if batch_size is not None else config.batch_size)
        if self.batch_size <= 0:
            raise InputError(config.path, f"batch size must be positive, got {self.batch_size}")
        self.num_workers = num_workers
        self.files = TokenFiles(config.paths, config.seq_len, config.dtype, retries=retries,
                                timeout=timeout, backoff=backoff, num_workers=num_workers,
                                expected_sizes=config.token_file_bytes)
        self.order = DataOrder(order, retries=retries, timeout=timeout, backoff=backoff,
                               num_workers=num_workers)

    @property
    def n_steps(self) -> int:
        """Whole global batches in the data order."""
        return len(self.order) // self.batch_size

    def position(self, step: int, index: int) -> int:
        """Data-order position ``step * B + index``."""
        if step < 0 or not 0 <= index < self.batch_size:
            raise InputError(None, f"need step >= 0 and 0 <= index < {self.batch_size}, got "
                                   f"step {step}, index {index}")
        return step * self.batch_size + index

    def instance_at(self, position: int) -> int:
        return int(self.order[position])

    def batch(self, step: int) -> np.ndarray:
        """Instance numbers of a whole training step (one ranged read when remote)."""
        a = self.position(step, 0)
        return self.order[a:a + self.batch_size]

    def tokens_at(self, step: int, index: int) -> np.ndarray:
        return self.files.instance(self.instance_at(self.position(step, index)))

    def tokens_at_positions(self, positions: Sequence[int], num_workers: int | None = None
                            ) -> list[np.ndarray | Exception]:
        """Tokens at many data-order positions, in input order, each array or its exception.

        The ``fetch_many`` of :func:`anatomy.mia.sampling.sample_records`. A position beyond
        the data order gives :class:`PositionOutOfRange`, an instance beyond the files
        :class:`InstanceOutOfRange`.
        """
        workers = self.num_workers if num_workers is None else num_workers
        pos = np.asarray(positions, dtype=np.int64).ravel()
        valid = (pos >= 0) & (pos < len(self.order))
        ids = self.order[pos[valid]]
        fetched = iter(self.files.instances(ids, num_workers=workers))
        return [next(fetched) if ok else PositionOutOfRange(int(p), len(self.order),
                                                            self.order.source)
                for p, ok in zip(pos, valid, strict=True)]

    def coverage(self, strict: bool = False, chunk: int = 1 << 24) -> Coverage:
        """The OLMo #538 check over the whole data order and all token files."""
        return check_coverage(self.config, self.order.max(chunk), len(self.files), strict)

    def close(self) -> None:
        self.files.close()
        self.order.close()

    def __enter__(self) -> OlmoData:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
