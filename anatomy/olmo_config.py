"""What the data readers need from an OLMo ``TrainConfig`` YAML (plus our ``data_anatomy:``).

Source: allenai/OLMo ``configs/official/OLMo-7B.yaml``; see ``shared/reference/olmomia.md``
section 8 (the batch size the checkpoint names imply).
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from anatomy.byte_ranges import check_scheme, is_remote
from anatomy.io import InputError, PathLike, read_yaml
from anatomy.token_files import DTYPES


@dataclass(frozen=True)
class OlmoDataConfig:
    """What the data readers need from an OLMo ``TrainConfig`` YAML.

    ``paths`` and ``global_indices`` are resolved: relative local paths are joined to the
    config file's folder, URLs and absolute paths are kept. ``batch_size`` is the true global
    batch size (``data_anatomy.batch_size`` when given, else ``global_train_batch_size``);
    ``config_batch_size`` is the file's ``global_train_batch_size``. ``extra`` is the raw
    ``data_anatomy`` section.
    """

    path: str
    paths: list[str]
    seq_len: int
    batch_size: int
    config_batch_size: int
    eos_token_id: int
    pad_token_id: int
    dtype: str
    global_indices: str | None
    model_name: str
    tokenizer: str | None
    extra: dict = field(default_factory=dict)
    vocab_size: int | None = None
    run_name: str | None = None
    token_file_bytes: list[int] | None = None  # sizes at training time, when recorded

    @property
    def root(self) -> Path:
        return Path(self.path).parent

    def resolve(self, value: PathLike) -> str:
        """A config path as usable here: URLs and absolute paths as is, else under the root."""
        return _resolve(self.root, str(value))

    def resolve_name(self, value: str) -> str:
        """A path-or-hub-name: resolved under the root if that exists there, else kept."""
        if is_remote(value) or os.path.isabs(value):
            return value
        local = self.root / value
        return str(local) if local.exists() else value

    @property
    def checkpoints(self) -> dict[int, str]:
        """``data_anatomy.checkpoints``: training step -> checkpoint name (revision)."""
        return {int(k): str(v) for k, v in (self.extra.get("checkpoints") or {}).items()}


def _resolve(root: Path, value: str) -> str:
    if is_remote(value) or os.path.isabs(value):
        return value
    return str(root / value)


class _Section:
    """Typed look-ups in one YAML mapping, errors naming the file and the dotted key."""

    def __init__(self, path: Path, data: Any, prefix: str = ""):
        if not isinstance(data, dict):
            what = f'"{prefix.rstrip(".")}"' if prefix else "the top level"
            raise InputError(path, f"expected a mapping at {what}, got {type(data).__name__}")
        self.path, self.data, self.prefix = path, data, prefix

    def _get(self, key: str, required: bool) -> Any:
        if key not in self.data or self.data[key] is None:
            if required:
                raise InputError(self.path, f'missing key "{self.prefix}{key}"')
            return None
        return self.data[key]

    def section(self, key: str, required: bool = True) -> _Section | None:
        value = self._get(key, required)
        return None if value is None else _Section(self.path, value, f"{self.prefix}{key}.")

    def get_int(self, key: str, required: bool = True, positive: bool = False,
                nonneg: bool = False) -> int | None:
        value = self._get(key, required)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(self.path, f'"{self.prefix}{key}" must be an integer, got '
                                        f"{value!r}")
        if positive and value <= 0:
            raise InputError(self.path, f'"{self.prefix}{key}" must be positive, got {value}')
        if nonneg and value < 0:
            raise InputError(self.path, f'"{self.prefix}{key}" must be >= 0, got {value}')
        return value

    def get_str(self, key: str, required: bool = True) -> str | None:
        value = self._get(key, required)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            raise InputError(self.path, f'"{self.prefix}{key}" must be a non-empty string, '
                                        f"got {value!r}")
        return value


def load_olmo_config(path: PathLike) -> OlmoDataConfig:
    """Read an OLMo ``TrainConfig`` YAML (plus our optional ``data_anatomy:`` section).

    Read: ``model.max_sequence_length``, ``model.eos_token_id``, ``model.pad_token_id``,
    ``model.vocab_size`` (optional), ``data.paths``, ``data.memmap_dtype`` (default uint16),
    ``global_train_batch_size``, ``run_name`` and ``tokenizer.identifier`` (optional).
    ``data_anatomy`` may set ``global_indices``, ``batch_size`` (the true batch size where the
    file's is wrong, as for OLMo-7B: 2160, not 2048), ``model_name``, ``tokenizer`` and
    ``checkpoints`` (step -> name). Missing keys and wrong types raise :class:`InputError`
    naming the file and key.
    """
    p = Path(path)
    top = _Section(p, read_yaml(p))
    model = top.section("model")
    data = top.section("data")
    assert model is not None and data is not None
    seq_len = model.get_int("max_sequence_length", positive=True)
    eos = model.get_int("eos_token_id", nonneg=True)
    pad = model.get_int("pad_token_id", nonneg=True)
    vocab = model.get_int("vocab_size", required=False, positive=True)
    config_b = top.get_int("global_train_batch_size", positive=True)
    run_name = top.get_str("run_name", required=False)

    raw_paths = data._get("paths", True)
    if not isinstance(raw_paths, list) or not raw_paths:
        raise InputError(p, '"data.paths" must be a non-empty list of paths or URLs')
    for k, item in enumerate(raw_paths):
        if not isinstance(item, str) or not item:
            raise InputError(p, f'"data.paths[{k}]" must be a non-empty string, got {item!r}')
    dtype = data.get_str("memmap_dtype", required=False) or "uint16"
    if dtype not in DTYPES:
        raise InputError(p, f'"data.memmap_dtype" must be one of {sorted(DTYPES)}, got {dtype!r}')

    ext = top.section("data_anatomy", required=False) or _Section(p, {}, "data_anatomy.")
    batch = ext.get_int("batch_size", required=False, positive=True) or config_b
    order = ext.get_str("global_indices", required=False)
    model_name = ext.get_str("model_name", required=False) or run_name or p.stem
    sizes = ext._get("token_file_bytes", False)
    if sizes is not None and (not isinstance(sizes, list) or len(sizes) != len(raw_paths)
                              or not all(isinstance(x, int) and not isinstance(x, bool)
                                         and x >= 0 for x in sizes)):
        raise InputError(p, f'"data_anatomy.token_file_bytes" must list one size in bytes per '
                            f"token file ({len(raw_paths)})")
    ckpts = ext._get("checkpoints", False)
    if ckpts is not None and not isinstance(ckpts, dict):
        raise InputError(p, '"data_anatomy.checkpoints" must be a mapping step -> name')
    tok_section = top.section("tokenizer", required=False)
    tokenizer = ext.get_str("tokenizer", required=False) or (
        tok_section.get_str("identifier", required=False) if tok_section else None)

    root = p.parent
    for raw in [*raw_paths, *([order] if order else [])]:
        check_scheme(raw)
    cfg = OlmoDataConfig(
        path=str(p), paths=[_resolve(root, x) for x in raw_paths], seq_len=seq_len,
        batch_size=batch, config_batch_size=config_b, eos_token_id=eos, pad_token_id=pad,
        dtype=dtype, global_indices=None if order is None else _resolve(root, order),
        model_name=model_name, tokenizer=None, extra=dict(ext.data), vocab_size=vocab,
        run_name=run_name, token_file_bytes=sizes)
    if tokenizer is not None:
        object.__setattr__(cfg, "tokenizer", cfg.resolve_name(tokenizer))
    return cfg



_REVISION = re.compile(r"step(\d+)-tokens(\d+)([KMBT])")
_UNITS = {"K": 10**3, "M": 10**6, "B": 10**9, "T": 10**12}


def batch_sizes_from_checkpoints(names: Iterable[str], seq_len: int) -> list[int]:
    """Global batch sizes consistent with every ``step{S}-tokens{N}{K|M|B|T}`` name.

    A name says the token count ``S * B * seq_len`` rounds to ``N`` units, so each name
    allows a small interval of ``B``; the result is their intersection (OLMo-7B's four
    MIA checkpoints leave only 2160, not the config's 2048; olmomia.md section 8).
    Names that do not match the pattern are ignored; step 0 says nothing.
    """
    lo, hi = 1, math.inf
    for name in names:
        m = _REVISION.search(name)
        if m is None or int(m.group(1)) == 0:
            continue
        step, n, unit = int(m.group(1)), int(m.group(2)), _UNITS[m.group(3)]
        per_b = step * seq_len
        # round(x / unit) == n  =>  (n - 0.5) * unit <= x <= (n + 0.5) * unit (ties either way)
        lo = max(lo, -((-(2 * n - 1) * unit) // (2 * per_b)))
        hi = min(hi, (2 * n + 1) * unit // (2 * per_b))
    if hi is math.inf:
        return []
    return list(range(lo, int(hi) + 1))


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


def known_config(model_name: str) -> OlmoDataConfig | None:
    """The training config this repository ships for a hub model (``configs/OLMo-7B.yaml``
    for ``allenai/OLMo-7B``), or None."""
    path = CONFIGS / f"{model_name.rstrip('/').split('/')[-1]}.yaml"
    return load_olmo_config(path) if path.is_file() else None


def checkpoint_revision(config: OlmoDataConfig, step: int) -> str:
    """The hub revision of a training step: the config's ``data_anatomy.checkpoints``, else
    OLMo's naming ``step{S}-tokens{round(S * B * L / 1e9)}B`` (tokens seen, in billions).

    Example: OLMo-7B (B = 2160, L = 2048), step 100000 -> ``step100000-tokens442B``.
    """
    named = config.checkpoints.get(int(step))
    if named is not None:
        return named
    tokens = int(step) * config.batch_size * config.seq_len
    return f"step{int(step)}-tokens{round(tokens / 1e9)}B"
