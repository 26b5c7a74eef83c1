"""anatomy.classifiers: the hashed n-gram classifier's features against scikit-learn's
HashingVectorizer applied by hand, and both n-gram classifiers on a synthetic task."""

from __future__ import annotations

import numpy as np
import pytest

from anatomy import classifiers

VOCAB = {"code": ["def", "return", "import", "self", "lambda"],
         "prose": ["the", "river", "morning", "quiet", "walked"],
         "data": ["0.5", "1,2", "id", "null", "true"]}


def _synthetic(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for j, words in enumerate(VOCAB.values()):
        for _ in range(n):
            texts.append(" ".join(rng.choice(words + ["a", "of"], size=12)))
            labels.append(j)
    return texts, np.array(labels)


def test_hashed_features_equal_a_hand_computation():
    from sklearn.feature_extraction.text import HashingVectorizer

    clf = classifiers.HashedNgramClassifier(n_bits=10)
    texts = ["def f(x): return x", "The river was quiet."]
    X = clf.make_vectorizer().fit_transform(texts).toarray()
    parts = []
    for analyzer, ngrams, pattern in (("word", (1, 2), r"(?u)\b\w+\b|[^\w\s]"),
                                      ("char_wb", (3, 5), None)):
        kw = {"token_pattern": pattern} if pattern else {}
        h = HashingVectorizer(analyzer=analyzer, ngram_range=ngrams, n_features=1024,
                              norm=None, alternate_sign=True, **kw).transform(texts).toarray()
        h = np.sign(h) * np.log1p(np.abs(h))
        parts.append(h / np.linalg.norm(h, axis=1, keepdims=True))
    np.testing.assert_allclose(X, np.hstack(parts), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("spec", ["tfidf", "hashed"])
def test_ngram_classifiers_learn_and_are_deterministic(spec):
    texts, labels = _synthetic(30, 0)
    a = classifiers.train_text_classifier(texts, labels, list(VOCAB), spec, seed=2)
    b = classifiers.train_text_classifier(texts, labels, list(VOCAB), spec, seed=2)
    assert a.val_accuracy >= 0.95
    np.testing.assert_array_equal(a.logits_val, b.logits_val)
    test, y = _synthetic(10, 1)
    assert np.mean(a.classifier.logits(test).argmax(1) == y) >= 0.95
    # calibrated probabilities on the held-out logits are a proper distribution
    cal = classifiers.bcts_fit(a.logits_val, a.y_val)
    p = classifiers.bcts_apply(a.logits_val, cal)
    np.testing.assert_allclose(p.sum(1), 1.0)
