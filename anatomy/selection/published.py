"""DsDm's released score files (MadryLab/DsDm ``data/``, Git LFS; shared/reference/selection.md
Sec. 1): ``{dsdm,classifier,dsir}/{target}.pt``, each one float32 1-D tensor with one score per
candidate row (216,948,746 rows of ``loganengstrom/dsdm-candidate-c4``), and ``sdd.pt``, the
int32 row indices SemDeDup kept (~19.6 % of the pool).

``lm_task_mix`` is the element-wise mean of the raw jeopardy, squad and lambada tensors, as
``dsdm/selections.py`` computes it (CS-Algorithms is not in the mix); ``standardize=True``
z-scores each first (the raw tasks differ in scale: squad's std ~3.1, lambada's ~2.3, so the
published mean weights them by scale). The published ``gpt3_mix`` DsDm call crashes
(``dm_params`` unbound) and there is no file for it: here it is one clear error.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from anatomy.io import InputError, PathLike

PUBLISHED_TARGETS = ("jeopardy", "squad", "lambada", "cs_algorithms", "lm_task_mix",
                     "gpt3_mix")
LM_TASK_MIX = ("jeopardy", "squad", "lambada")


def _load_tensor(path: Path) -> np.ndarray:
    import torch

    if not path.is_file():
        raise InputError(path, "no such score file (DsDm's data/ is Git LFS: run `git lfs "
                               "pull`, a pointer file is not the tensor)")
    if path.stat().st_size < 1024 and path.read_bytes()[:40].startswith(b"version https://git-lfs"):
        raise InputError(path, "a Git LFS pointer, not the tensor: run `git lfs pull` (or "
                               "`git lfs checkout` after `git lfs fetch --all`)")
    try:
        t = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise InputError(path, f"not a torch tensor file: {type(e).__name__}: {e}") from None
    a = t.numpy() if hasattr(t, "numpy") else np.asarray(t)
    if a.ndim != 1:
        raise InputError(path, f"expected a 1-D tensor, got shape {a.shape}")
    return a


def published_scores(data_dir: PathLike, method: str, target: str,
                     standardize: bool = False) -> np.ndarray:
    """The released per-row scores of ``method`` (dsdm, classifier, dsir) for ``target``."""
    d = Path(data_dir)
    if method not in ("dsdm", "classifier", "dsir"):
        raise InputError(None, f"no published score files for method {method!r}")
    if target not in PUBLISHED_TARGETS:
        raise InputError(None, f"unknown published target {target!r} (choose from "
                               f"{', '.join(PUBLISHED_TARGETS)})")
    if method == "dsdm" and target == "lm_task_mix":
        parts = [_load_tensor(d / "dsdm" / f"{t}.pt").astype(np.float64) for t in LM_TASK_MIX]
        if len({len(p) for p in parts}) != 1:
            raise InputError(d / "dsdm", "the three task tensors differ in length")
        if standardize:
            parts = [(p - p.mean()) / (p.std() or 1.0) for p in parts]
        return np.mean(parts, axis=0).astype(np.float32)
    if method == "dsdm" and target == "gpt3_mix":
        raise InputError(d / "dsdm", "DsDm released no gpt3_mix datamodel (the published "
                                     "get_indices crashes here with UnboundLocalError)")
    return _load_tensor(d / method / f"{target}.pt").astype(np.float32)


def published_semdedup(data_dir: PathLike) -> np.ndarray:
    """The row indices SemDeDup kept (``sdd.pt``), int64 ascending."""
    return np.sort(_load_tensor(Path(data_dir) / "sdd.pt").astype(np.int64))
