"""Text classifiers shared by the pipelines: which class does a text look like?

Three kinds behind one interface, ``fit(texts, labels, seed)`` and ``logits(texts) -> [n, K]``
(the pre-softmax scores that calibration needs):

* ``tfidf``: TF-IDF features (word 1-2-grams and character 3-5-grams inside word
  boundaries, sublinear tf; Salton & Buckley 1988) and a multinomial logistic regression
  (scikit-learn, L-BFGS, fixed ``random_state``);
* ``hashed``: the same n-grams hashed into a fixed number of buckets (scikit-learn's
  ``HashingVectorizer``, Weinberger et al. 2009), no vocabulary held in memory, so it
  streams through corpora of any size (the features DSIR and fastText-style filters use);
* an HF encoder (a folder or hub name, e.g. the offline MiniLM from
  :func:`anatomy.lm.default_embedder_path`, or ``distilbert`` =
  ``distilbert-base-uncased``), fine-tuned end to end with a linear head on its mean-pooled
  last hidden state (Devlin et al. 2019, sec. 4; mean pooling as sentence-transformers).

:func:`train_text_classifier` fits on a stratified split and scores the held-out rest;
:func:`bcts_fit` / :func:`temperature_fit` calibrate on those held-out logits and
:func:`bcts_apply` gives calibrated probabilities. Used by pipeline B (domain classifiers for
label shift) and next by C (code vs natural language) and D (classifier-based selection).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from scipy.optimize import minimize
from scipy.special import log_softmax, softmax

log = logging.getLogger("anatomy")

ENCODER_ALIASES = {"distilbert": "distilbert-base-uncased"}


# ---------------------------------------------------------------------------------------
# splits


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


class TextClassifier(Protocol):
    name: str

    def fit(self, texts: Sequence[str], labels: np.ndarray, seed: int = 0) -> TextClassifier:
        ...

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        ...


WORD_TOKENS = r"(?u)\b\w+\b|[^\w\s]"  # words and single punctuation marks


class _NgramClassifier:
    """Word 1-2 + char_wb 3-5 gram features (``vectorizer()``) + multinomial logistic
    regression (L-BFGS, ``random_state`` = the seed). ``logits`` is the decision function
    ``X W + b``, whose softmax is ``predict_proba``."""

    name = "ngram"

    def __init__(self, C: float = 4.0, max_iter: int = 1000):
        self.C, self.max_iter = C, max_iter
        self.vectorizer: Any = None
        self.model: Any = None

    def make_vectorizer(self):  # pragma: no cover - each kind defines its features
        raise NotImplementedError

    def fit(self, texts: Sequence[str], labels: np.ndarray, seed: int = 0) -> TextClassifier:
        from sklearn.linear_model import LogisticRegression

        self.vectorizer = self.make_vectorizer()
        X = self.vectorizer.fit_transform(list(texts))
        self.model = LogisticRegression(C=self.C, max_iter=self.max_iter, random_state=seed)
        self.model.fit(X, np.asarray(labels))
        return self

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        if self.model is None:
            raise RuntimeError("fit the classifier first")
        return _two_columns(self.model.decision_function(self.vectorizer.transform(list(texts))))


class TfidfClassifier(_NgramClassifier):
    """TF-IDF (word 1-2 + char_wb 3-5 grams, sublinear tf) + logistic regression.

    The published tool's recipe (C = 4, 200k features per vectoriser; mixture.md 6.2).
    """

    name = "tfidf"

    def __init__(self, max_features: int = 200_000, C: float = 4.0, max_iter: int = 1000):
        super().__init__(C, max_iter)
        self.max_features = max_features

    def make_vectorizer(self):
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.pipeline import FeatureUnion

        common = dict(sublinear_tf=True, min_df=1, max_features=self.max_features,
                      dtype=np.float32, lowercase=True)
        return FeatureUnion([
            ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2),
                                     token_pattern=WORD_TOKENS, **common)),
            ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), **common)),
        ])


class BagOfWordsClassifier(_NgramClassifier):
    """Word 1-2-gram TF-IDF + logistic regression: the model-free "blind" membership baseline
    (Das, Zhang and Tramer 2024, "Blind Baselines Beat Membership Inference Attacks for
    Foundation Models": a bag-of-words classifier beats published MIAs on benchmarks whose
    members and non-members differ in distribution)."""

    name = "bow"

    def make_vectorizer(self):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(analyzer="word", ngram_range=(1, 2), token_pattern=WORD_TOKENS,
                               sublinear_tf=True, lowercase=True, dtype=np.float32)


class HashedNgramClassifier(_NgramClassifier):
    """Hashed word 1-2 + char_wb 3-5 grams (``2**n_bits`` buckets each) + logistic regression.

    The TF-IDF recipe without a vocabulary: features are signed hashes (scikit-learn's
    ``HashingVectorizer``, ``alternate_sign`` as Weinberger et al. 2009), sublinear
    (``log1p`` of the counts) and l2-normalised per n-gram kind, so memory is fixed whatever
    the corpus and a fitted model transforms new text without having seen its n-grams.
    """

    name = "hashed"

    def __init__(self, n_bits: int = 18, C: float = 4.0, max_iter: int = 1000):
        super().__init__(C, max_iter)
        self.n_bits = n_bits

    def make_vectorizer(self):
        from sklearn.feature_extraction.text import HashingVectorizer
        from sklearn.pipeline import FeatureUnion, make_pipeline
        from sklearn.preprocessing import FunctionTransformer, Normalizer

        common = dict(n_features=2 ** self.n_bits, lowercase=True, norm=None,
                      alternate_sign=True, dtype=np.float32)

        def kind(**kw):
            return make_pipeline(HashingVectorizer(**kw, **common),
                                 FunctionTransformer(_signed_log1p, accept_sparse=True),
                                 Normalizer())

        return FeatureUnion([("word", kind(analyzer="word", ngram_range=(1, 2),
                                           token_pattern=WORD_TOKENS)),
                             ("char", kind(analyzer="char_wb", ngram_range=(3, 5)))])


def _signed_log1p(X):
    """Sublinear counts that keep the hash sign: sign(x) * log(1 + |x|), sparse in, out."""
    X = X.copy()
    X.data = np.sign(X.data) * np.log1p(np.abs(X.data))
    return X


def _two_columns(Z: np.ndarray) -> np.ndarray:
    """Binary LR returns one column: logits [0, z] give the same softmax."""
    if Z.ndim == 1:
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

        from anatomy.lm import mean_pool

        e = self.embedder
        enc = e.tokenizer(list(texts), padding=True, truncation=True,
                          max_length=self.max_length, return_tensors="pt")
        enc = {k: v.to(e.device) for k, v in enc.items()}
        ctx = (torch.autocast(e.device.type, dtype=e.autocast_dtype)
               if e.autocast_dtype is not None else _null())
        with ctx:
            hidden = e.model(**enc).last_hidden_state
        return mean_pool(hidden, enc["attention_mask"])

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


def make_classifier(spec: str, **kwargs: Any) -> TextClassifier:
    """``"tfidf"`` -> :class:`TfidfClassifier`, ``"hashed"`` -> :class:`HashedNgramClassifier`,
    ``"bow"`` -> :class:`BagOfWordsClassifier`; anything else is an encoder name or folder
    (``"minilm"`` = the offline all-MiniLM-L6-v2, ``"distilbert"`` = distilbert-base-uncased).
    ``kwargs`` go to the encoder's constructor (epochs, lr, batch_size, max_length ...)."""
    if spec == "tfidf":
        return TfidfClassifier()
    if spec == "hashed":
        return HashedNgramClassifier()
    if spec == "bow":
        return BagOfWordsClassifier()
    if spec == "minilm":
        from anatomy.lm import default_embedder_path

        spec = str(default_embedder_path())
    return EncoderClassifier(spec, **kwargs)


# ---------------------------------------------------------------------------------------
# training with a held-out validation split


@dataclass
class TrainedClassifier:
    classifier: TextClassifier
    categories: list[str]
    logits_val: np.ndarray  # [n_val, K] on the held-out split
    y_val: np.ndarray
    n_train: np.ndarray  # training texts per class
    val_accuracy: float


def train_text_classifier(texts: Sequence[str], labels: np.ndarray, categories: Sequence[str],
                          spec: str = "tfidf", val_fraction: float = 0.3, seed: int = 0,
                          **kwargs: Any) -> TrainedClassifier:
    """Fit a classifier on a stratified ``1 - val_fraction`` of the texts and score the
    held-out rest (what calibration and label-shift estimators use, never training texts)."""
    labels = np.asarray(labels)
    tr, va = stratified_split(labels, val_fraction, seed)
    clf = make_classifier(spec, **kwargs)
    clf.fit([texts[i] for i in tr], labels[tr], seed=seed)
    Zv = clf.logits([texts[i] for i in va])
    yv = labels[va]
    acc = float(np.mean(Zv.argmax(axis=1) == yv))
    log.info("classifier %s: %d train / %d validation texts, validation accuracy %.3f",
             getattr(clf, "name", spec), tr.size, va.size, acc)
    return TrainedClassifier(clf, list(categories), Zv, yv,
                             np.bincount(labels[tr], minlength=len(categories)), acc)


def cross_val_scores(texts: Sequence[str], labels: np.ndarray, spec: str = "bow",
                     folds: int = 5, seed: int = 0, **kwargs: Any) -> np.ndarray:
    """Out-of-fold scores of class 1: each text scored by a classifier fitted on the other
    folds (stratified, seeded), never on itself. For two classes the score is the logit
    difference ``z_1 - z_0`` (monotone in P(class 1)); higher = class 1.

    With fewer than 2 texts of a class per fold the fold count shrinks to what the smaller
    class allows (at least 2).
    """
    from sklearn.model_selection import StratifiedKFold

    y = np.asarray(labels).astype(np.int64)
    counts = np.bincount(y, minlength=2)
    if y.ndim != 1 or len(y) != len(texts) or counts.size != 2 or counts.min() < 2:
        raise ValueError("cross_val_scores needs two classes of at least 2 texts each")
    k = int(min(folds, counts.min()))
    out = np.zeros(len(y), dtype=np.float64)
    skf = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for tr, te in skf.split(np.zeros(len(y)), y):
        clf = make_classifier(spec, **kwargs).fit([texts[i] for i in tr], y[tr], seed=seed)
        z = clf.logits([texts[i] for i in te])
        out[te] = z[:, 1] - z[:, 0]
    return out


# ---------------------------------------------------------------------------------------
# checks


def score_matrix(P: np.ndarray, name: str) -> np.ndarray:
    """``P`` as a non-empty float64 ``[n, K]`` array (probabilities or logits)."""
    P = np.asarray(P, dtype=np.float64)
    if P.ndim != 2 or P.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty [n, K] array, got shape {P.shape}")
    return P


def class_labels(y: np.ndarray, n: int, k: int) -> np.ndarray:
    """``y`` as ``n`` integer labels in ``[0, k)``, every class present."""
    y = np.asarray(y)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be {n} integers, got shape {y.shape} dtype {y.dtype}")
    if y.min() < 0 or y.max() >= k:
        raise ValueError(f"labels must lie in [0, {k})")
    missing = np.setdiff1d(np.arange(k), y)
    if missing.size:
        raise ValueError(f"classes {missing.tolist()} have no validation examples")
    return y


# ---------------------------------------------------------------------------------------
# calibration: temperature scaling and bias-corrected temperature scaling


@dataclass
class Calibration:
    """``softmax(logits / temperature + bias)``."""

    temperature: float
    bias: np.ndarray

    def to_dict(self) -> dict[str, Any]:
        return {"temperature": self.temperature, "bias": self.bias.tolist()}


def _nll_and_grad(params: np.ndarray, Z: np.ndarray, onehot: np.ndarray,
                  with_bias: bool) -> tuple[float, np.ndarray]:
    # params = [log(1/T), b_1..b_K]; s = Z / T + b
    a = np.exp(params[0])
    b = params[1:] if with_bias else 0.0
    s = Z * a + b
    logp = log_softmax(s, axis=1)
    n = Z.shape[0]
    nll = -np.sum(logp * onehot) / n
    g_s = (np.exp(logp) - onehot) / n
    g = [np.sum(g_s * Z) * a]
    if with_bias:
        g.extend(g_s.sum(axis=0))
    return float(nll), np.asarray(g)


def _fit_calibration(logits_val: np.ndarray, y_val: np.ndarray, with_bias: bool) -> Calibration:
    Z = score_matrix(logits_val, "logits_val")
    k = Z.shape[1]
    y = class_labels(y_val, Z.shape[0], k)
    onehot = np.eye(k)[y]
    x0 = np.zeros(1 + (k if with_bias else 0))
    res = minimize(_nll_and_grad, x0, args=(Z, onehot, with_bias), jac=True,
                   method="L-BFGS-B", options={"maxiter": 1000, "gtol": 1e-9, "ftol": 1e-12})
    bias = res.x[1:] - res.x[1:].mean() if with_bias else np.zeros(k)  # softmax is shift-invariant
    return Calibration(float(np.exp(-res.x[0])), bias)


def bcts_fit(logits_val: np.ndarray, y_val: np.ndarray) -> Calibration:
    """Bias-corrected temperature scaling: fit ``T`` and a bias per class by validation NLL.

    Alexandari, Kundaje & Shrikumar (ICML 2020), "BCTS": ``softmax(z / T + b)``.
    Minimised with L-BFGS on the analytic gradient over ``(log(1/T), b)``; deterministic.
    The bias is reported centred (mean 0), since softmax ignores a common shift.
    """
    return _fit_calibration(logits_val, y_val, with_bias=True)


def temperature_fit(logits_val: np.ndarray, y_val: np.ndarray) -> Calibration:
    """Plain temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural
    Networks"): one ``T`` fitted by validation NLL."""
    return _fit_calibration(logits_val, y_val, with_bias=False)


def bcts_apply(logits: np.ndarray, cal: Calibration) -> np.ndarray:
    """Calibrated probabilities ``softmax(logits / T + b)`` (also for temperature-only fits)."""
    Z = np.asarray(logits, dtype=np.float64)
    return softmax(Z / cal.temperature + cal.bias, axis=1)
