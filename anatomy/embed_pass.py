"""One embedding pass over a list of texts as a step of the execution layer.

Units are whole batches of the length-sorted plan (:func:`anatomy.lm.length_batches` over
the character length of instruction + text), so the plan depends only on the texts and the
batch size: any number of ranks writes the bytes of one, a killed rank resumes, and the
embedder is loaded only by a rank with units left. Used by OLMoMIA's pool vectors (A) and
by the contrastive filter and miner (E), which embed each unique text once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from anatomy import execution, io


class EmbedStep:
    """Rows ``[len(texts), d]`` float32 in input order, written as one ``.npy``."""

    name = "embed"

    def __init__(self, texts: Sequence[str], out: Path, fp: execution.Fingerprint, *,
                 batch_size: int, max_length: int, instruction: str = "",
                 normalize: bool = False, name: str = "embed",
                 lengths: Sequence[int] | None = None):
        from anatomy.lm import length_batches

        self.texts, self.max_length, self.instruction = list(texts), max_length, instruction
        self.normalize = normalize
        self.name = name
        self.output = execution.Output.file(out)
        self.fingerprint = fp
        # batches of similar length: by token counts when the caller has them (measured on
        # stdlib code, benchmarks/bench_contrastive.py: 1.015x padding at batch 32, against
        # 1.296x by characters)
        if lengths is None:
            lengths = [len(instruction + t) for t in self.texts]
        self.batches = length_batches(list(lengths), batch_size)
        self.n_units = len(self.batches)
        self.embedder: Any = None  # set by prepare
        self.on_cpu = True

    def compute_unit(self, u: int) -> dict[str, Any]:
        from anatomy.lm import embed_texts

        batch = self.batches[u]
        vecs = embed_texts(self.embedder, [self.texts[i] for i in batch], batch_size=len(batch),
                           max_length=self.max_length, instruction=self.instruction,
                           normalize=self.normalize, progress=False)
        return {"rows": np.asarray(batch, dtype=np.int64), "vecs": vecs}

    def merge(self, load) -> dict[str, Any]:
        out = self.output.files[0]
        if self.n_units == 0:
            io.save_npy(out, np.zeros((0, 0), np.float32))
            return {"shape": [0, 0]}
        first = load(0)
        shape = (len(self.texts), first["vecs"].shape[1])
        with io.atomic_npy(out, shape, np.float32) as arr:
            for u in range(self.n_units):
                part = first if u == 0 else load(u)
                arr[part["rows"]] = part["vecs"]
        return {"shape": list(shape)}


def run_embed(texts: Sequence[str], out: Path, fp: execution.Fingerprint, *,
              model: str | None, batch_size: int, max_length: int, device: Any,
              precision: str = "auto", instruction: str = "", normalize: bool = False,
              ranks: execution.Ranks | None = None, overwrite: bool = False,
              merge: bool = False, progress: bool = True, name: str = "embed",
              lengths: Sequence[int] | None = None) -> execution.StepResult:
    """Embed ``texts`` into ``out`` (``fp`` names the inputs and flags) on ``ranks``;
    ``lengths`` (e.g. token counts) group the batches, else the texts' characters."""
    from anatomy import lm

    step = EmbedStep(texts, Path(out), fp, batch_size=batch_size, max_length=max_length,
                     instruction=instruction, normalize=normalize, name=name,
                     lengths=lengths)
    step.on_cpu = lm.resolve_device(device).type == "cpu" if device is not None else True

    def prepare() -> None:
        step.embedder = lm.load_embedder(model, device=None if device is None else str(device),
                                         precision=precision)

    return execution.run_step(step, ranks or execution.Ranks(), overwrite=overwrite,
                              merge_only=merge, prepare=prepare, show_progress=progress)
