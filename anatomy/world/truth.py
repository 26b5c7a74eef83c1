"""Read a built miniworld's ground truth: the trained stream, documents, planted passages.

Everything here is derived from the files on disk (token files, data order, truth.json,
truth/docs.jsonl.gz), so downstream pipelines and tests use the same known answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from anatomy import io


@dataclass
class World:
    root: Path

    @classmethod
    def open(cls, root: str | Path) -> World:
        root = Path(root)
        io.require_file(root / "truth.json", "miniworld truth file")
        return cls(root)

    @cached_property
    def truth(self) -> dict:
        return io.read_json(self.root / "truth.json")

    @cached_property
    def docs(self) -> dict[int, dict]:
        return {r["doc"]: r for r in io.iter_jsonl(self.root / "truth" / "docs.jsonl.gz")}

    @cached_property
    def stream(self) -> np.ndarray:
        """Every instance in training-slot order (trained ones first), flattened, uint16."""
        t = self.truth
        L = t["seq_len"]
        parts = []
        for p in t["token_files"]:
            a = np.fromfile(self.root / p, dtype="<u2")
            parts.append(a[: len(a) // L * L].reshape(-1, L))
        order = np.fromfile(self.root / "global_indices.npy", dtype="<u4")
        return np.concatenate(parts)[order].ravel()

    def doc_tokens(self, doc: int) -> np.ndarray:
        r = self.docs[doc]
        off = r["occurrences"][0][0]
        return self.stream[off: off + r["length"]]

    def step_of_slot(self, slot: int) -> int:
        return slot // self.truth["batch_size"]

    def regular_docs_in_steps(self, lo: int, hi: int, min_len: int = 1,
                              max_len: int = 1 << 30) -> list[int]:
        """Documents seen exactly once, wholly inside training steps [lo, hi)."""
        B = self.truth["batch_size"]
        out = []
        for d, r in self.docs.items():
            occ = r["occurrences"]
            if r["kinds"] == ["regular"] and len(occ) == 1 and lo * B <= occ[0][1] \
                    and occ[0][2] < hi * B and min_len <= r["length"] <= max_len:
                out.append(d)
        return sorted(out)

    def planted(self, kind: str) -> list[dict]:
        return self.truth["planted"][kind]

    def checkpoint_path(self, step: int) -> Path:
        for c in self.truth["checkpoints"]:
            if c["step"] == step:
                return self.root / c["path"]
        raise io.InputError(self.root, f"no checkpoint at step {step}")


def write_mixture_spec(root: str | Path) -> Path:
    """``truth/mixture_spec.yaml``: the world's training-token mixture in the published
    ``category_weights`` spec format (pipeline B's ground truth for this world)."""
    w = World.open(root)
    t = w.truth
    spec = {
        "schema": "category-mixture-v1",
        "name": f"miniworld-{t['preset']['name']} (seed {t['seed']})",
        "source": "truth.json mixture: tokens of training steps [0, T3) by category, "
                  "separators counted with the document they end",
        "categories": list(t["categories"]),
        "category_weights": {c: round(v, 6) for c, v in t["mixture"].items()},
    }
    path = w.root / "truth" / "mixture_spec.yaml"
    io.write_yaml(path, spec)
    return path
