"""The GPT-3-style quality classifier: DsDm's ``classifier`` baseline.

A linear classifier tells target texts (label 1) from pool texts (label 0); each pool row's
score is ``p(target | x)``, higher = keep. Where it comes from:

- GPT-3 (Brown et al. 2020, App. A): logistic regression on hashed-token features, curated
  text (WebText, Wikipedia, books) as positives and raw Common Crawl as negatives; a document
  is kept iff ``np.random.pareto(9) > 1 - score`` (:func:`anatomy.selection.indices.
  pareto_keep`).
- The DSIR paper's "heuristic classification" baseline (Xie et al. 2023,
  ``experimental/data_selection/heuristic_cls_pipeline.py``): fastText on lowercased word
  uni+bigrams (``wordNgrams=2``), target = label 1, Pile validation = label 0, score
  ``p(label 1)``, retrieval by the same Pareto rule (a top-k variant too).
- DsDm (Engstrom et al. 2024) releases one stored score per candidate row for each target and
  selects its deterministic top-n (``argsort(w)[::-1][:n]``; :func:`~anatomy.selection.
  indices.top_n`); its features and noise are undocumented.

Here the features are hashed, lowercased word unigrams + bigrams (``HashingVectorizer``,
``2**n_bits`` signed buckets, sublinear counts, l2-normalised: the word branch of
:class:`anatomy.classifiers.HashedNgramClassifier`) and the model is its L-BFGS logistic
regression; ``features="word+char"`` adds that classifier's char 3-5-grams. ``backend=
"fasttext"`` trains fastText as the DSIR pipeline does, when the ``fasttext`` package is
installed (it is not part of this project's stack).

The negatives are a seeded sample of the pool (GPT-3 and DSIR train on a raw sample, not on
the whole pool), and every pool row is then scored, a block of rows at a time, so a 200M-row
pool is never held as one list of texts. Training on a sample that is also scored is what
the published filters do.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
from typing import Any

import numpy as np
from scipy.special import expit

from anatomy.classifiers import HashedNgramClassifier
from anatomy.io import InputError
from anatomy.selection.pool import TextSource

log = logging.getLogger("anatomy")

NEGATIVES_PER_TARGET = 10  # default negatives: 10 pool rows per target text ...
MAX_NEGATIVES = 200_000  # ... at most this many (the texts are held in memory for the fit)
BLOCK_ROWS = 8192  # pool rows decoded and scored at once


class HashedWordNgramClassifier(HashedNgramClassifier):
    """Hashed word 1-2-grams + logistic regression: GPT-3's and DSIR's features
    (lowercased unigrams and bigrams, hashed), without the char n-grams of the parent."""

    name = "hashed-word"

    def make_vectorizer(self):
        # the parent's word branch (signed hashing, log1p, l2 norm), nothing duplicated
        return dict(super().make_vectorizer().transformer_list)["word"]


def sample_negatives(pool: TextSource, k: int, seed: int) -> tuple[np.ndarray, list[str]]:
    """``k`` distinct pool rows drawn uniformly with ``seed`` (ascending) and their texts,
    read run by run of consecutive rows (not row by row, not the whole pool)."""
    n = len(pool)
    rows = np.sort(np.random.default_rng(np.random.SeedSequence([int(seed), 0xC1A55])
                                         ).choice(n, size=k, replace=False)).astype(np.int64)
    texts: list[str] = []
    if k:
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        for run in np.split(rows, breaks):
            texts.extend(pool.texts(int(run[0]), int(run[-1]) + 1))
    if len(texts) != k:
        raise InputError(None, f"the pool returned {len(texts)} texts for {k} rows")
    return rows, texts


class _FastText:
    """fastText ``train_supervised`` (``wordNgrams=2``, one thread so a seed reproduces),
    as the DSIR heuristic-classification pipeline trains it (without its 30-minute
    autotune); texts lowercased with whitespace collapsed (fastText reads one line each)."""

    name = "fasttext"

    def __init__(self, dim: int = 100, epoch: int = 10, lr: float = 0.5):
        self.dim, self.epoch, self.lr = dim, epoch, lr
        self.model: Any = None

    @staticmethod
    def _line(t: str) -> str:
        return re.sub(r"\s+", " ", t.lower()).strip()

    def fit(self, texts: list[str], labels: np.ndarray, seed: int = 0) -> _FastText:
        import fasttext

        fd, path = tempfile.mkstemp(suffix=".txt", prefix="anatomy-fasttext-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                for t, y in zip(texts, labels, strict=True):
                    f.write(f"__label__{int(y)} {self._line(t)}\n")
            self.model = fasttext.train_supervised(
                input=path, wordNgrams=2, dim=self.dim, epoch=self.epoch, lr=self.lr,
                thread=1, seed=int(seed), verbose=0)
        finally:
            os.unlink(path)
        return self

    def p_target(self, texts: list[str]) -> np.ndarray:
        labels, probs = self.model.predict([self._line(t) for t in texts], k=2)
        out = np.empty(len(texts), dtype=np.float64)
        for i, (lab, p) in enumerate(zip(labels, probs, strict=True)):
            d = dict(zip(lab, p, strict=True))
            out[i] = d.get("__label__1", 1.0 - d.get("__label__0", 1.0))
        return np.clip(out, 0.0, 1.0)


def classifier_scores(pool: TextSource, target: TextSource, seed: int = 0,
                      negatives: int | None = None, block_rows: int = BLOCK_ROWS, *,
                      features: str = "word", backend: str = "sklearn", prior: str = "balanced",
                      n_bits: int = 18, C: float = 1.0, max_iter: int = 1000,
                      crossfit: bool = True, progress: bool = False) -> np.ndarray:
    """``p(target | x)`` for every pool row, float32 ``(len(pool),)``.

    Args:
        pool: the candidates; label-0 texts are sampled from it.
        target: the target texts (label 1), all used for the fit.
        seed: draws the negatives and seeds the fit.
        negatives: pool rows sampled (seeded, without replacement) as label 0; default
            ``min(len(pool), 10 * len(target), 200_000)``.
        block_rows: pool rows decoded and scored at once.
        features: ``"word"`` (hashed word 1-2-grams, GPT-3/DSIR) or ``"word+char"``
            (:class:`anatomy.classifiers.HashedNgramClassifier` as it is).
        backend: ``"sklearn"`` (logistic regression) or ``"fasttext"`` (needs the package).
        prior: ``"balanced"`` reports p at equal class priors: the fitted logit plus
            ``log(n_negatives / n_targets)`` (the prior correction for case-control samples,
            King & Zeng 2001), so the score does not depend on how many negatives were
            drawn; ``"sample"`` reports the fitted p (the training mix's prior). The
            ranking (top-n) is the same either way; the Pareto rule reads the value.
        n_bits, C, max_iter: ``2**n_bits`` hash buckets per n-gram kind; the logistic
            regression's inverse L2 strength (sklearn's default 1.0: with a few dozen target
            texts, the weaker C = 4 of the domain classifiers overfits rare n-grams; on the
            test's code-vs-prose toy the held-out AUC drops from 0.99 to 0.96) and its
            iterations.
        crossfit: the sampled negatives are pool rows that are scored too, and a model
            scores the rows it was trained on as label 0 lower (on a miniworld-sized pool
            the negatives are a third of it, target-like ones among them); so two models are
            fitted on the two halves of the negatives (alternate rows), each negative is
            scored by the model that did not see it, and every other row by the mean of
            the two models' logits. False: one fit on all negatives, as the published
            filters do (their pools dwarf the sample).
    """
    n_pool, n_tgt = len(pool), len(target)
    if n_tgt == 0:
        raise InputError(None, "the target has no texts: nothing to train the classifier on")
    if n_pool == 0:
        raise InputError(None, "the pool is empty: nothing to score")
    if block_rows < 1:
        raise InputError(None, f"block_rows must be >= 1, got {block_rows}")
    if prior not in ("balanced", "sample"):
        raise InputError(None, f"unknown prior {prior!r} (balanced, sample)")
    if features not in ("word", "word+char"):
        raise InputError(None, f"unknown features {features!r} (word, word+char)")
    if negatives is None:
        negatives = min(n_pool, NEGATIVES_PER_TARGET * n_tgt, MAX_NEGATIVES)
    negatives = int(negatives)
    if not 1 <= negatives <= n_pool:
        raise InputError(None, f"negatives must be in [1, {n_pool}] (the pool size), "
                               f"got {negatives}")
    pos = list(target.texts(0, n_tgt))
    neg_rows, neg = sample_negatives(pool, negatives, seed)
    texts = pos + neg
    y = np.concatenate([np.ones(len(pos), np.int64), np.zeros(len(neg), np.int64)])
    shift = float(np.log(len(neg) / len(pos))) if prior == "balanced" else 0.0

    if backend == "fasttext":
        try:
            import fasttext  # noqa: F401
        except ImportError:
            raise InputError(None, "backend fasttext needs the fasttext package, which is "
                                   "not installed; use backend sklearn") from None
        ft = _FastText().fit(texts, y, seed=seed)

        def p_block(t: list[str]) -> np.ndarray:
            p = np.clip(ft.p_target(t), 1e-12, 1 - 1e-12)
            return expit(np.log(p) - np.log1p(-p) + shift)
    elif backend == "sklearn":
        kind = HashedWordNgramClassifier if features == "word" else HashedNgramClassifier
        folds = (np.arange(len(neg)) % 2) if crossfit and len(neg) >= 2 else None

        def fit(keep: np.ndarray):
            texts_k = pos + [t for t, k in zip(neg, keep, strict=True) if k]
            y_k = np.concatenate([np.ones(len(pos), np.int64),
                                  np.zeros(int(keep.sum()), np.int64)])
            clf = kind(n_bits=n_bits, C=C, max_iter=max_iter).fit(texts_k, y_k, seed=seed)
            sh = float(np.log(keep.sum() / len(pos))) if prior == "balanced" else 0.0
            return clf, sh

        def logit(model, t: list[str]) -> np.ndarray:
            clf, sh = model
            z = clf.logits(t)  # [n, 2] = [0, logit of label 1]
            return z[:, 1] - z[:, 0] + sh

        if folds is None:
            models = [fit(np.ones(len(neg), bool))]
        else:
            models = [fit(folds != k) for k in (0, 1)]  # model k never saw fold k

        def p_block(t: list[str]) -> np.ndarray:
            return expit(np.mean([logit(m, t) for m in models], axis=0))
    else:
        raise InputError(None, f"unknown backend {backend!r} (sklearn, fasttext)")
    del texts

    from anatomy.progress import progress as _progress

    out = np.empty(n_pool, dtype=np.float32)
    starts = range(0, n_pool, block_rows)
    for a in _progress(starts, "classifier", "block", len(starts), None if progress else True):
        b = min(n_pool, a + block_rows)
        block = pool.texts(a, b)
        if len(block) != b - a:
            raise InputError(None, f"the pool returned {len(block)} texts for rows [{a}, {b})")
        out[a:b] = p_block(list(block))
    if backend == "sklearn" and folds is not None:
        for k in (0, 1):
            sel = folds == k
            out[neg_rows[sel]] = expit(logit(models[k], [t for t, f in zip(
                neg, sel, strict=True) if f]))
    log.info("classifier: %d target vs %d pool texts (%s, %s), %d pool rows scored, "
             "mean p(target) %.4f", n_tgt, negatives, backend, features, n_pool,
             float(out.mean()))
    return out
