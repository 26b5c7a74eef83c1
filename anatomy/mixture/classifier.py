"""Domain classifiers for the label-shift arm: which category does a text look like?

Trained on local samples (one JSONL per category, field ``text``; what
``fetch_category_samples.py`` writes) and applied to an LM's generations. The classifiers
themselves (TF-IDF or hashed n-grams + logistic regression, fine-tuned HF encoders, their
calibration) are the shared :mod:`anatomy.classifiers`; this module reads the category
samples (shared/reference/mixture.md section 6.2) and trains on them with a held-out
stratified validation split, never scoring the training texts.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from anatomy.classifiers import TrainedClassifier, train_text_classifier
from anatomy.io import InputError, PathLike, iter_jsonl_numbered

log = logging.getLogger("anatomy")

SAMPLE_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
WEB_PARTS = ("commoncrawl", "c4")


# ---------------------------------------------------------------------------------------
# data


@dataclass
class CategorySamples:
    texts: list[str]
    labels: np.ndarray  # int64, index into ``categories``
    categories: list[str]
    files: dict[str, list[str]]  # category -> sample files it came from
    # records not used, per reason and category: "blank" texts, "capped" by max_per_class
    # or balance
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)
    # how the folder was trusted: checked against fetch_category_samples.py's completion
    # record, or read as given (a folder made by hand)
    provenance: str = ""

    def by_category(self) -> dict[str, list[str]]:
        """The texts of each category, in file order."""
        out: dict[str, list[str]] = {c: [] for c in self.categories}
        for t, y in zip(self.texts, self.labels.tolist(), strict=True):
            out[self.categories[y]].append(t)
        return out


def _category_of(path: Path) -> str:
    name = path.name
    for s in SAMPLE_SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return path.stem


def samples_files(samples_dir: PathLike) -> tuple[list[Path], dict[str, Any] | None]:
    """A samples folder's ``<category>.jsonl`` files and, when fetch_category_samples.py
    wrote it, its completion record, the folder checked against it (:func:`_check_record`);
    None for a folder made by hand. Cheap: callers check before any model work."""
    d = Path(samples_dir)
    if not d.is_dir():
        raise InputError(d, "samples folder not found (write one with "
                            "fetch_category_samples.py --out_dir DIR)")
    ours = [p.name for p in d.iterdir() if p.name.startswith(("fetch_category_samples",
                                                                ".staging-fetch_category"))]
    if ours and "fetch_category_samples.done.json" not in ours:
        raise InputError(d, "an incomplete output of fetch_category_samples.py (no completion "
                            "marker): run it again")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.name.endswith(SAMPLE_SUFFIXES))
    if not files:
        raise InputError(d, "no <category>.jsonl sample files here")
    return files, (_check_record(d, files) if ours else None)


def load_category_samples(samples_dir: PathLike, merge_web: bool = False,
                          max_per_class: int | None = None, balance: bool = False,
                          seed: int = 0, min_per_class: int = 2) -> CategorySamples:
    """Read ``DIR/<category>.jsonl`` files (``.gz``/``.zst`` too; field ``text``).

    Categories are the file names, sorted. ``merge_web`` folds ``commoncrawl`` and ``c4``
    into one ``web`` class (SlimPajama's 7 sets -> 6 classes; files that are neither are
    untouched). ``max_per_class`` keeps a uniform random subset (seeded) of larger classes;
    ``balance`` cuts every class to the smallest one, as the published tool does, so the
    classifier's training priors are uniform. Blank texts are dropped; every dropped record
    is counted per category in ``dropped`` ("blank", "capped"). Raises InputError when
    the folder has no sample files or a class has fewer than ``min_per_class`` texts.
    """
    d = Path(samples_dir)
    files, record = samples_files(d)
    by_cat: dict[str, list[str]] = {}
    sources: dict[str, list[str]] = {}
    blank: dict[str, int] = {}
    rows: dict[str, int] = {}
    for f in files:
        cat = name = _category_of(f)
        rows[name] = 0  # per file (before merge_web), as the record counts them
        if merge_web and cat.lower() in WEB_PARTS:
            cat = "web"
        texts = by_cat.setdefault(cat, [])
        sources.setdefault(cat, []).append(f.name)
        for line, rec in iter_jsonl_numbered(f, required=("text",)):
            rows[name] += 1
            t = rec["text"]
            if not isinstance(t, str):
                raise InputError(f, '"text" is not a string', line)
            if t.strip():
                texts.append(t)
            else:
                blank[cat] = blank.get(cat, 0) + 1
    if record is not None:
        kept = (record.get("summary") or {}).get("kept") or {}
        off = [f"{c}: {rows[c]} rows, the record {kept[c]}" for c in sorted(kept)
               if c in rows and rows[c] != kept[c]]
        if off:
            raise InputError(d, "differs from its completion record: " + "; ".join(off)
                                + " (run fetch_category_samples.py again)")
        provenance = (f"checked against its completion record ({len(files)} files, "
                      f"{sum(rows.values()):,} rows" + (", sha256" if record.get("sha256")
                                                         else ", sizes") + ")")
    else:
        provenance = (f"no completion record (made by hand?): read {len(files)} files as "
                      f"given: " + ", ".join(f.name for f in files))
        log.info("%s: %s", d, provenance)
    cats = sorted(by_cat)
    small = [c for c in cats if len(by_cat[c]) < min_per_class]
    if small:
        raise InputError(d, f"categories {small} have fewer than {min_per_class} texts")
    if len(cats) < 2:
        raise InputError(d, "need at least two categories")
    rng = np.random.default_rng(seed)
    cap = max_per_class
    if balance:
        smallest = min(len(by_cat[c]) for c in cats)
        cap = smallest if cap is None else min(cap, smallest)
    texts, labels = [], []
    capped: dict[str, int] = {}
    for j, c in enumerate(cats):
        t = by_cat[c]
        if cap is not None and len(t) > cap:
            keep = np.sort(rng.choice(len(t), cap, replace=False))
            capped[c] = len(t) - cap
            t = [t[i] for i in keep]
        texts += t
        labels += [j] * len(t)
    dropped = {"blank": {c: blank.get(c, 0) for c in cats},
               "capped": {c: capped.get(c, 0) for c in cats}}
    for why, counts in dropped.items():
        if any(counts.values()):
            log.info("%s: %s", d, ", ".join(f"{c} {n}" for c, n in counts.items() if n)
                     + f" records dropped ({why})")
    return CategorySamples(texts, np.asarray(labels, dtype=np.int64), cats, sources, dropped,
                           provenance)


def _check_record(d: Path, files: list[Path]) -> dict[str, Any]:
    """fetch_category_samples.py's completion record, after checking the folder against it:
    every file it lists present, of its size and (when recorded) sha256, and no other sample
    file beside them (either would estimate another mixture than the one fetched)."""
    from anatomy import execution

    rec, problems = execution.verify_marker(d / "fetch_category_samples.done.json")
    listed = set(rec.get("files") or {})
    problems += [f"{f.name} is not in the record" for f in files if f.name not in listed]
    if problems:
        raise InputError(d, "differs from its completion record: " + "; ".join(problems)
                            + " (run fetch_category_samples.py again, or remove "
                              "fetch_category_samples.done.json to use the folder as it is)")
    return rec


def train_domain_classifier(samples: CategorySamples, spec: str = "tfidf",
                            val_fraction: float = 0.3, seed: int = 0,
                            **kwargs: Any) -> TrainedClassifier:
    """:func:`anatomy.classifiers.train_text_classifier` on the category samples: fit on a
    stratified ``1 - val_fraction``, logits of the held-out rest (the validation set the
    label-shift estimators calibrate on)."""
    return train_text_classifier(samples.texts, samples.labels, samples.categories, spec,
                                 val_fraction, seed, **kwargs)
