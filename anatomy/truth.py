"""A built miniworld's ground truth, read-only: the trained stream, documents, plants, unseen text.

Everything here is derived from the files on disk (token files, data order, ``truth.json``,
``truth/docs.jsonl.gz``, ``truth/unseen.jsonl.gz``), so every pipeline and test reads the same
known answers without importing the builder (:mod:`anatomy.world.build`; only the corpus's
source files are read through its archive reader, :mod:`anatomy.world.corpus`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from anatomy import io

# every plant kind the memorization test can sample, in report order
MEMORIZATION_PLANTS = ("mem_dense", "mem_spread", "mem_late", "templates", "reconstruct",
                       "recollect")

UNSEEN = "truth/unseen.jsonl.gz"


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

    @property
    def name(self) -> str:
        """``miniworld-{preset}``, the model name the world's outputs carry."""
        return f"miniworld-{self.truth['preset']['name']}"

    @cached_property
    def corpus_digest(self) -> str:
        """12 hex digits of sha256 over the corpus manifest (every source file and its
        sha256): worlds built from different sources differ here, so a reader can tell a
        regression from a different world."""
        import hashlib
        import json

        sources = io.read_json(self.root / "corpus" / "manifest.json")["sources"]
        blob = json.dumps(sorted(sources.items()), separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:12]

    def source_files(self) -> tuple[list[tuple[str, Path]], list[str]]:
        """The corpus's source files on this machine: ``([(source, path)], changed)``.

        The manifest names each file the corpus read (``name==version:path`` inside a pinned
        archive, :mod:`anatomy.world.sources`) with its sha256; each is read out of its
        checked archive into a cache, and a file that is missing or whose bytes differ from
        the build's is left out and named in ``changed``, so text taken from the sources is
        always the text the world was built from. Sources in manifest order.
        """
        from anatomy.world.corpus import source_files

        return source_files(io.read_json(self.root / "corpus" / "manifest.json")["sources"])

    def describe(self) -> str:
        """One line naming this world: preset, seed, corpus digest, model size."""
        t = self.truth
        m = t["model"]
        weights = f", weights {m['weights_sha256'][:12]}" if "weights_sha256" in m else ""
        return (f"{self.name} (seed {t['seed']}, corpus {self.corpus_digest}, "
                f"{m['n_params'] / 1e6:.2f}M params, {'bf16' if m['bf16'] else 'fp32'} "
                f"training{weights})")

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
        return self.truth["planted"].get(kind, [])

    @property
    def memorization_plants(self) -> list[str]:
        """The plant kinds the memorization test samples (each copy starting a sequence):
        repeated passages (recitation), templates, and, in worlds that have them, the
        near-duplicated reconstruct and recollect plants."""
        return [k for k in MEMORIZATION_PLANTS if k in self.truth["planted"]]

    @cached_property
    def planted_sha1(self) -> dict[str, str]:
        """sha1 of every planted passage's tokens (uint16 little-endian) -> its plant kind."""
        return {r["sha1"]: kind for kind, rows in self.truth["planted"].items() for r in rows}

    def plant_kind(self, input_ids) -> str | None:
        """Which plant a document's token ids are (``mia``, ``mia_control``, ``mem_dense``,
        ``templates`` ...), or None for an ordinary document."""
        import hashlib

        blob = np.asarray(input_ids, dtype="<u2").tobytes()
        return self.planted_sha1.get(hashlib.sha1(blob).hexdigest())

    @cached_property
    def order(self) -> np.ndarray:
        """``global_indices``: the stored instance trained at each slot."""
        return np.fromfile(self.root / "global_indices.npy", dtype="<u4").astype(np.int64)

    def planted_sequence_starts(self, kind: str, prompt_len: int = 32, cont_len: int = 32
                                ) -> list[dict]:
        """Per memorization plant (``mem_dense``, ``mem_spread``, ``mem_late``,
        ``templates``): the sequence ids (instance numbers) of its trained copies that start
        a training sequence, and ``expected_duplicates``, the number of its trained copies
        whose continuation (passage tokens ``[P, P + C)``) lies inside one sequence, which is
        what ``sequence_duplicates`` counts for those samples unless the same tokens also occur
        elsewhere in the stream. Needs a world built with aligned plants (format 2)."""
        t = self.truth
        L, n_trained = t["seq_len"], t["n_trained_instances"]
        out = []
        for r in self.planted(kind):
            if "copies" not in r:
                raise io.InputError(self.root / "truth.json", "this miniworld records no plant "
                                    "copies (built by an older version): rebuild it")
            if r["length"] < prompt_len + cont_len:
                continue
            a, b = prompt_len, prompt_len + cont_len - 1  # first and last continuation token
            trained = [(o, al) for o, al in r["copies"] if (o + b) // L < n_trained]
            inside = sum((o + a) // L == (o + b) // L for o, _ in trained)
            starts = [int(self.order[o // L]) for o, al in trained if al]
            out.append({"doc": r["doc"], "kind": kind, "sequence_ids": starts,
                        "trained_copies": len(trained), "expected_duplicates": inside,
                        **({"template": r["template"]} if "template" in r else {}),
                        **({"intended": r["intended"]} if "intended" in r else {})})
        return out

    def checkpoint_path(self, step: int) -> Path:
        for c in self.truth["checkpoints"]:
            if c["step"] == step:
                return self.root / c["path"]
        raise io.InputError(self.root, f"no checkpoint at step {step}")

    def unseen(self, n_per_category: int | None = None) -> list[dict]:
        """Corpus documents the world never trained on and left out of its pools.

        ``{"text", "category", "source", "part"}`` records, the first ``n_per_category`` of
        each category (all with None), in the order the builder wrote them: known
        non-members of the right category (mostly from files the build read past its token
        budget, so their distribution differs slightly from the pools').
        """
        path = self.root / UNSEEN
        if not path.is_file():
            raise io.InputError(path, "this miniworld has no never-trained documents (built "
                                      "by an older version): rebuild it with build_world.py")
        got: dict[str, int] = {}
        out = []
        for r in io.iter_jsonl(path, required=("text", "category")):
            k = got.get(r["category"], 0)
            if n_per_category is None or k < n_per_category:
                out.append(r)
                got[r["category"]] = k + 1
        return out
