"""Domain classifiers for the label-shift arm: which category does a text look like?

Trained on local samples (one JSONL per category, field ``text``; what
``fetch_category_samples.py`` writes) and applied to an LM's generations. Two kinds, as in the
published tool (shared/reference/mixture.md section 6.2):

* ``tfidf``: TF-IDF features (word 1-2-grams and character 3-5-grams inside word
  boundaries, sublinear tf; Salton & Buckley 1988) and a multinomial logistic regression
  (scikit-learn, L-BFGS, fixed ``random_state``);
* an HF encoder (a folder or hub name, e.g. the offline MiniLM from
  :func:`anatomy.lm.default_embedder_path`, or ``distilbert`` =
  ``distilbert-base-uncased``), fine-tuned end to end with a linear head on its mean-pooled
  last hidden state (Devlin et al. 2019, sec. 4; mean pooling as sentence-transformers).

Both expose ``fit(texts, labels, seed)`` and ``logits(texts) -> [n, K]``, the pre-softmax
scores that the calibration in :mod:`anatomy.mixture.labelshift` (BCTS) needs. Calibration,
confusion matrices and their bootstrap use a held-out stratified validation split
(:func:`stratified_split`), never the training texts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from anatomy.io import InputError, PathLike, iter_jsonl

log = logging.getLogger("anatomy")

SAMPLE_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst")
WEB_PARTS = ("commoncrawl", "c4")
ENCODER_ALIASES = {"distilbert": "distilbert-base-uncased"}


# ---------------------------------------------------------------------------------------
# data


@dataclass
class CategorySamples:
    texts: list[str]
    labels: np.ndarray  # int64, index into ``categories``
    categories: list[str]
    files: dict[str, list[str]]  # category -> sample files it came from


def _category_of(path: Path) -> str:
    name = path.name
    for s in SAMPLE_SUFFIXES:
        if name.endswith(s):
            return name[: -len(s)]
    return path.stem


def load_category_samples(samples_dir: PathLike, merge_web: bool = False,
                          max_per_class: int | None = None, balance: bool = False,
                          seed: int = 0, min_per_class: int = 2) -> CategorySamples:
    """Read ``DIR/<category>.jsonl`` files (``.gz``/``.zst`` too; field ``text``).

    Categories are the file names, sorted. ``merge_web`` folds ``commoncrawl`` and ``c4``
    into one ``web`` class (SlimPajama's 7 sets -> 6 classes; files that are neither are
    untouched). ``max_per_class`` keeps a uniform random subset (seeded) of larger classes;
    ``balance`` cuts every class to the smallest one, as the published tool does, so the
    classifier's training priors are uniform. Empty texts are dropped. Raises InputError when
    the folder has no sample files or a class has fewer than ``min_per_class`` texts.
    """
    d = Path(samples_dir)
    if not d.is_dir():
        raise InputError(d, "samples folder not found (write one with "
                            "fetch_category_samples.py --out_dir DIR)")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.name.endswith(SAMPLE_SUFFIXES))
    if not files:
        raise InputError(d, "no <category>.jsonl sample files here")
    by_cat: dict[str, list[str]] = {}
    sources: dict[str, list[str]] = {}
    for f in files:
        cat = _category_of(f)
        if merge_web and cat.lower() in WEB_PARTS:
            cat = "web"
        texts = by_cat.setdefault(cat, [])
        sources.setdefault(cat, []).append(f.name)
        for rec in iter_jsonl(f, required=("text",)):
            t = rec["text"]
            if not isinstance(t, str):
                raise InputError(f, '"text" is not a string')
            if t.strip():
                texts.append(t)
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
    for j, c in enumerate(cats):
        t = by_cat[c]
        if cap is not None and len(t) > cap:
            keep = np.sort(rng.choice(len(t), cap, replace=False))
            t = [t[i] for i in keep]
        texts += t
        labels += [j] * len(t)
    return CategorySamples(texts, np.asarray(labels, dtype=np.int64), cats, sources)


def stratified_split(labels: np.ndarray, val_fraction: float = 0.3, seed: int = 0
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Indices ``(train, val)``: ``round(val_fraction * n_j)`` of each class (at least 1, and
    at least 1 left for training) to validation, drawn uniformly with ``seed``."""
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must be in (0, 1)")
    y = np.asarray(labels)
    rng = np.random.default_rng(seed)
    tr, va = [], []
    for j in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == j))
        if idx.size < 2:
            raise ValueError(f"class {j} has fewer than 2 examples: cannot split")
        k = min(max(1, round(val_fraction * idx.size)), idx.size - 1)
        va.append(idx[:k])
        tr.append(idx[k:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))


# ---------------------------------------------------------------------------------------
# classifiers


class DomainClassifier(Protocol):
    name: str

    def fit(self, texts: Sequence[str], labels: np.ndarray, seed: int = 0) -> DomainClassifier:
        ...

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        ...


class TfidfClassifier:
    """TF-IDF (word 1-2 + char_wb 3-5 grams) + multinomial logistic regression.

    The published tool's recipe (C = 4, 200k features per vectoriser; mixture.md 6.2).
    ``logits`` is the decision function ``X W + b``, whose softmax is ``predict_proba``.
    """

    name = "tfidf"

    def __init__(self, max_features: int = 200_000, C: float = 4.0, max_iter: int = 1000):
        self.max_features = max_features
        self.C = C
        self.max_iter = max_iter
        self.vectorizer: Any = None
        self.model: Any = None

    def fit(self, texts: Sequence[str], labels: np.ndarray, seed: int = 0) -> TfidfClassifier:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import FeatureUnion

        common = dict(sublinear_tf=True, min_df=1, max_features=self.max_features,
                      dtype=np.float32, lowercase=True)
        self.vectorizer = FeatureUnion([
            ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2),
                                     token_pattern=r"(?u)\b\w+\b|[^\w\s]", **common)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), **common)),
        ])
        X = self.vectorizer.fit_transform(list(texts))
        self.model = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=seed)
        self.model.fit(X, np.asarray(labels))
        return self

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the classifier first")
        Z = self.model.decision_function(self.vectorizer.transform(list(texts)))
        if Z.ndim == 1:  # binary LR returns one column: logits [0, z] give the same softmax
            Z = np.stack([np.zeros_like(Z), Z], axis=1)
        return np.asarray(Z, dtype=np.float64)


class EncoderClassifier:
    """An HF encoder + linear head on the mean-pooled last hidden state, fine-tuned.

    AdamW (lr ``lr`` for the encoder, 10x for the head), ``epochs`` passes over the training
    texts in a seeded order, texts cut to ``max_length`` tokens; bf16 autocast where
    :func:`anatomy.lm.load_embedder` uses it. Deterministic for a seed on one device: the head
    initialisation, dropout and the batch order draw from torch's RNG forked and seeded
    inside :meth:`fit` (the caller's global RNG state is restored afterwards).
    """

    def __init__(self, name_or_path: str, epochs: int = 3, lr: float = 5e-5,
                 batch_size: int = 16, max_length: int = 256, device: str | None = None,
                 precision: str = "auto"):
        self.name = ENCODER_ALIASES.get(name_or_path, name_or_path)
        self.epochs, self.lr, self.batch_size = epochs, lr, batch_size
        self.max_length, self.device, self.precision = max_length, device, precision
        self.embedder: Any = None
        self.head: Any = None

    def _pooled(self, texts: Sequence[str]):
        import torch

        e = self.embedder
        enc = e.tokenizer(list(texts), padding=True, truncation=True,
                          max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(e.device) for k, v in enc.items()}
        ctx = (torch.autocast(e.device.type, dtype=e.autocast_dtype)
               if e.autocast_dtype is not None else _null())
        with ctx:
            hidden = e.model(**enc).last_hidden_state
        hidden = hidden.float()
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1e-9)

    def fit(self, texts: Sequence[str], labels: np.ndarray, seed: int = 0) -> EncoderClassifier:
        import torch

        from anatomy.lm import load_embedder

        y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        k = int(y.max()) + 1
        self.embedder = load_embedder(self.name, device=self.device, precision=self.precision)
        model, dev = self.embedder.model, self.embedder.device
        devices = [dev.index or 0] if dev.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            self.head = torch.nn.Linear(model.config.hidden_size, k).to(dev)
            opt = torch.optim.AdamW([{"params": model.parameters(), "lr": self.lr},
                                     {"params": self.head.parameters(), "lr": 10 * self.lr}])
            gen = torch.Generator().manual_seed(seed)
            texts = list(texts)
            model.train()
            for _ in range(self.epochs):
                order = torch.randperm(len(texts), generator=gen).tolist()
                for a in range(0, len(order), self.batch_size):
                    idx = order[a:a + self.batch_size]
                    out = self.head(self._pooled([texts[i] for i in idx]))
                    loss = torch.nn.functional.cross_entropy(out, y[idx].to(dev))
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            model.eval()
        return self

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if self.head is None:
            raise RuntimeError("fit the classifier first")
        texts = list(texts)
        out = np.zeros((len(texts), self.head.out_features), dtype=np.float64)
        with torch.inference_mode():
            for a in range(0, len(texts), 4 * self.batch_size):
                z = self.head(self._pooled(texts[a:a + 4 * self.batch_size]))
                out[a:a + z.shape[0]] = z.float().cpu().numpy()
        return out


def _null():
    import contextlib

    return contextlib.nullcontext()


def make_classifier(spec: str, **kwargs: Any) -> DomainClassifier:
    """``"tfidf"`` -> :class:`TfidfClassifier`; anything else is an encoder name or folder
    (``"minilm"`` = the offline all-MiniLM-L6-v2, ``"distilbert"`` = distilbert-base-uncased).
    ``kwargs`` go to the encoder's constructor (epochs, lr, batch_size, max_length ...)."""
    if spec == "tfidf":
        return TfidfClassifier()
    if spec == "minilm":
        from anatomy.lm import default_embedder_path

        spec = str(default_embedder_path())
    return EncoderClassifier(spec, **kwargs)


# ---------------------------------------------------------------------------------------
# training with a held-out validation split


@dataclass
class TrainedClassifier:
    classifier: DomainClassifier
    categories: list[str]
    logits_val: np.ndarray  # [n_val, K] on the held-out split
    y_val: np.ndarray
    n_train: np.ndarray  # training texts per class
    val_accuracy: float


def train_domain_classifier(samples: CategorySamples, spec: str = "tfidf",
                            val_fraction: float = 0.3, seed: int = 0,
                            **kwargs: Any) -> TrainedClassifier:
    """Fit a classifier on a stratified ``1 - val_fraction`` of the samples and score the
    held-out rest (the validation set the label-shift estimators calibrate on)."""
    tr, va = stratified_split(samples.labels, val_fraction, seed)
    clf = make_classifier(spec, **kwargs)
    clf.fit([samples.texts[i] for i in tr], samples.labels[tr], seed=seed)
    Zv = clf.logits([samples.texts[i] for i in va])
    yv = samples.labels[va]
    acc = float(np.mean(Zv.argmax(axis=1) == yv))
    k = len(samples.categories)
    log.info("classifier %s: %d train / %d validation texts, validation accuracy %.3f",
             getattr(clf, "name", spec), tr.size, va.size, acc)
    return TrainedClassifier(clf, list(samples.categories), Zv, yv,
                             np.bincount(samples.labels[tr], minlength=k), acc)
