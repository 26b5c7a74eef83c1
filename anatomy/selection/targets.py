"""Selection targets: the distribution a selection should serve, and its held-out half.

DsDm's targets are tasks (Engstrom et al. 2024, Sec. 4): a few target samples drive the
selection, held-out samples of the same task evaluate the model trained on it, and
``lm_task_mix`` is the mean of three tasks (jeopardy, squad, lambada; ``dsdm/selections.py``
averages the three score tensors). The miniworld's targets mirror that with its never-trained
documents (:meth:`anatomy.truth.World.unseen`): a category name is that category's documents,
the first half for selecting and the second half for evaluating; ``mix`` is the mean of
three categories (:data:`MIX`), each weighted equally whatever its size. A JSONL/parquet file
is a target too, split the same way: its first half of texts (in file order) selects, its
second half is held out for the evaluation; its name is the file's stem, in select_data.py's
sidecar and in eval_selection.py's table alike.

The held-out half is read by the evaluation, which first drops every held-out document that
shares more than 20 % of its word 8-grams with the pool or with the selection half
(:mod:`anatomy.selection.decontaminate`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from anatomy.io import InputError, PathLike
from anatomy.selection.pool import ListTexts, is_text_file, read_text_file

MIX = ("data", "license", "readme")  # the miniworld's "lm_task_mix": three small categories
MIX_NAME = "mix"


@dataclass
class Target:
    """``groups``: selection-side texts per group (one group unless a mix); ``eval_groups``:
    held-out texts per group. A mix weights its groups equally. ``distinct_halves``: the
    held-out texts are not the selection texts (False for a file target, which is both)."""

    name: str
    groups: dict[str, list[str]]
    eval_groups: dict[str, list[str]] = field(default_factory=dict)
    source: str | None = None
    distinct_halves: bool = True
    empty: int = 0  # empty records of a file target, left out

    def texts(self) -> list[str]:
        """Every selection-side text of every group, interleaved round-robin (a group that
        runs out drops out), none left out: DSIR and the classifier fit on all target rows,
        as the data-selection package does. DsDm weighs the groups equally by itself (a
        query per group, averaged)."""
        if len(self.groups) == 1:
            return list(next(iter(self.groups.values())))
        k = max(len(v) for v in self.groups.values())
        return [v[i] for i in range(k) for v in self.groups.values() if i < len(v)]

    def source_texts(self) -> ListTexts:
        return ListTexts(self.texts())

    def describe(self) -> str:
        g = ", ".join(f"{k} {len(v)}" for k, v in self.groups.items())
        e = ", ".join(f"{k} {len(v)}" for k, v in self.eval_groups.items())
        empty = f"; {self.empty} empty records left out" if self.empty else ""
        return f"{self.name} (select: {g}; held out: {e or 'none'}{empty})"


def groups_digest(groups: dict[str, list[str]]) -> str:
    """16 hex digits of sha256 over the groups' names and texts (for fingerprints)."""
    import hashlib

    h = hashlib.sha256()
    for g, texts in sorted(groups.items()):
        h.update(g.encode())
        for x in texts:
            h.update(x.encode("utf-8", "surrogatepass"))
    return h.hexdigest()[:16]


def world_target_names(world: PathLike) -> list[str]:
    from anatomy.truth import World

    return [*World.open(world).truth["categories"], MIX_NAME]


def world_target(world: PathLike, name: str, per_group: int | None = None) -> Target:
    """A named miniworld target (a category or ``mix``), from its never-trained documents."""
    from anatomy.truth import World

    w = World.open(world)
    cats = list(w.truth["categories"])
    if name == MIX_NAME:
        members = list(MIX)
    elif name in cats:
        members = [name]
    else:
        raise InputError(None, f"unknown miniworld target {name!r} (choose from "
                               f"{', '.join([*cats, MIX_NAME])}, or give a JSONL file)")
    by_cat: dict[str, list[str]] = {c: [] for c in members}
    for r in w.unseen():
        if r["category"] in by_cat:
            by_cat[r["category"]].append(r["text"])
    groups, held = {}, {}
    for c, texts in by_cat.items():
        if len(texts) < 2:
            raise InputError(w.root, f"the world has {len(texts)} never-trained {c} documents; "
                                     "a target needs at least 2 (one to select, one to test)")
        half = len(texts) // 2
        sel, ev = texts[:half], texts[half:]
        if per_group is not None:
            sel, ev = sel[:per_group], ev[:per_group]
        groups[c], held[c] = sel, ev
    return Target(name, groups, held, source=str(w.root))


def file_target(path: PathLike, text_key: str = "text", per_group: int | None = None
                ) -> Target:
    """A JSONL/parquet file as a target named by its stem: the first half of its texts (file
    order) to select with, the second half held out for the evaluation, as a miniworld
    target's never-trained documents are split. Empty records are left out and counted
    (``Target.empty``). Needs at least 2 texts."""
    from anatomy.selection.pool import count_empty

    p = Path(path)
    texts = read_text_file(p, text_key, keep_empty=True)
    empty = count_empty(texts)
    texts = [t for t in texts if t]
    if len(texts) < 2:
        raise InputError(p, f"{len(texts)} text(s): a target needs at least 2 (one to select "
                            "with, one to evaluate on)")
    half = len(texts) // 2
    sel, ev = texts[:half], texts[half:]
    if per_group is not None:
        sel, ev = sel[:per_group], ev[:per_group]
    return Target(p.stem, {p.stem: sel}, {p.stem: ev}, source=str(p), empty=empty)


def load_target(spec: str | None, world: PathLike | None = None, text_key: str = "text",
                per_group: int | None = None) -> Target:
    """``spec`` is a JSONL/parquet file of target texts, or a miniworld target name."""
    if spec is None or not str(spec).strip():
        raise InputError(None, "this method needs a --target")
    p = Path(spec)
    if p.is_file() and is_text_file(p):
        return file_target(p, text_key, per_group)
    if p.suffix in (".jsonl", ".json", ".gz", ".zst", ".parquet") or "/" in str(spec):
        raise InputError(p, "no such target file")
    if world is None:
        raise InputError(None, f"target {spec!r} is not a file and no --world names it")
    return world_target(world, str(spec), per_group)
