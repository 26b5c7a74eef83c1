"""Code vs natural language of samples (pipeline C): ``nl_scores`` and a three-way label.

Published (EleutherAI/semantic-memorization; Prashanth et al. 2024, "Recite, Reconstruct,
Recollect"; ``reference/memorization.md`` section 2(a)): ``usvsnsp/code-vs-nl``, a DistilBERT
sequence classifier trained on bookcorpus vs codeparrot/github-code, scores each decoded
sample; ``nl_scores`` is softmax column 0 (``working_dirs/orz/classify_code_vs_nl.py``:
batches of 128, padding, truncation at the model's maximum length, fp16 on GPU). A sample is
natural language at ``nl_scores >= 0.525``, code at ``<= 0.4``, else uncertain
(``NATURAL_LANGUAGE_SCORE_THRESHOLDS``, the zero-false-positive points on 490 hand-labelled
samples). ``nl_scores`` is not a taxonomy feature: it splits the analyses into code and NL.

Two scorers behind one interface (``logits(texts) -> [n, K]`` as in
:mod:`anatomy.classifiers`, plus ``nl_label_index``, the natural-language column):

- :func:`train_code_vs_nl`: a shared-module classifier (TF-IDF n-grams + logistic regression
  by default, or an encoder) trained on local code and prose texts, NL as class 0 like the
  published model;
- :func:`load_hf_code_vs_nl`: any HF sequence classifier, e.g. ``usvsnsp/code-vs-nl``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.special import softmax

from anatomy.io import InputError

NL_THRESHOLDS = (0.525, 0.4)  # published: nl at >= 0.525, code at <= 0.4, else uncertain
LABELS = ("nl", "code", "uncertain")
NL_CLASS, CODE_CLASS = 0, 1  # class order of train_code_vs_nl, as the published model's


def train_code_vs_nl(code_texts: Sequence[str], nl_texts: Sequence[str], spec: str = "tfidf",
                     seed: int = 0, **kwargs: Any) -> Any:
    """A classifier of :mod:`anatomy.classifiers` (``make_classifier(spec, **kwargs)``) fitted
    on all the given texts, natural language as class 0 and code as class 1.

    The local stand-in for ``usvsnsp/code-vs-nl`` (published: DistilBERT on equal-sized
    subsets of bookcorpus and codeparrot/github-code). Score it with :func:`nl_scores`; for a
    held-out estimate of its quality use :func:`anatomy.classifiers.train_text_classifier`.
    """
    from anatomy.classifiers import make_classifier

    code, nl = list(code_texts), list(nl_texts)
    if not code or not nl:
        raise InputError(None, f"the code-vs-NL classifier needs code and prose texts, got "
                               f"{len(code)} code and {len(nl)} prose")
    labels = np.array([NL_CLASS] * len(nl) + [CODE_CLASS] * len(code), dtype=np.int64)
    clf = make_classifier(spec, **kwargs)
    clf.fit(nl + code, labels, seed=seed)
    clf.nl_label_index = NL_CLASS
    return clf


class HFSequenceClassifier:
    """An HF ``AutoModelForSequenceClassification`` behind the shared ``logits`` interface.

    As the published scorer: texts in batches (``batch_size``, 128 published; grouped by
    length here, results in input order), padded, truncated at ``max_length`` (default: the
    tokenizer's model maximum), under fp16/bf16 autocast on GPU (``precision``).
    """

    def __init__(self, model: Any, tokenizer: Any, nl_label_index: int = 0,
                 batch_size: int = 128, max_length: int | None = None,
                 autocast_dtype: Any = None, name: str = "hf"):
        n_labels = int(getattr(model.config, "num_labels", 2))
        if not 0 <= nl_label_index < n_labels:
            raise InputError(None, f"nl_label_index {nl_label_index} is not a column of a "
                                   f"{n_labels}-label classifier")
        self.model, self.tokenizer, self.name = model, tokenizer, name
        self.nl_label_index, self.batch_size = int(nl_label_index), int(batch_size)
        self.max_length, self.autocast_dtype = max_length, autocast_dtype

    @property
    def device(self) -> Any:
        return next(self.model.parameters()).device

    def fit(self, texts: Sequence[str], labels: np.ndarray, seed: int = 0) -> Any:
        raise NotImplementedError("a loaded HF classifier is used as trained")

    def logits(self, texts: Sequence[str]) -> np.ndarray:
        """``[n, num_labels]`` float64 logits, rows in input order."""
        import contextlib

        import torch

        from anatomy.lm import length_batches

        texts = list(texts)
        out = np.zeros((len(texts), int(self.model.config.num_labels)), np.float64)
        dev = self.device
        amp = (torch.autocast(dev.type, dtype=self.autocast_dtype)
               if self.autocast_dtype is not None else contextlib.nullcontext())
        for idx in length_batches([len(t) for t in texts], self.batch_size):
            enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                 max_length=self.max_length, return_tensors="pt")
            enc = {k: v.to(dev) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
            with torch.inference_mode(), amp:
                z = self.model(**enc).logits
            out[idx] = z.float().cpu().numpy()
        return out


def load_hf_code_vs_nl(name_or_path: str | os.PathLike = "usvsnsp/code-vs-nl",
                       nl_label_index: int = 0, device: str | None = None,
                       precision: str = "auto", batch_size: int = 128,
                       max_length: int | None = None) -> HFSequenceClassifier:
    """Load an HF sequence classifier (folder or hub name) as a code-vs-NL scorer.

    Published: ``usvsnsp/code-vs-nl`` with its natural-language probability in softmax column
    0 (``nl_label_index``). ``precision="auto"`` autocasts to fp16/bf16 on GPU (published:
    ``.half()``) and runs fp32 on CPU; ``"fp32"`` never autocasts. Offline, a hub name must be
    in the local HF cache (:func:`anatomy.lm.load_embedder`'s rules).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from anatomy.lm import _hub_errors, _locate, resolve_device, resolve_precision

    loc, rev, _ = _locate(name_or_path, None)
    dev = resolve_device(device)
    cpu_auto = dev.type != "cuda" and precision == "auto"
    prec = "fp32" if cpu_auto else resolve_precision(dev, precision)
    amp = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[prec]
    tok = _hub_errors(loc, lambda: AutoTokenizer.from_pretrained(loc, revision=rev))
    model = _hub_errors(loc, lambda: AutoModelForSequenceClassification.from_pretrained(
        loc, revision=rev, dtype=torch.float32))
    return HFSequenceClassifier(model.to(dev).eval(), tok, nl_label_index, batch_size,
                                max_length, amp, name=str(name_or_path))


def nl_scores(classifier: Any, texts: Sequence[str], batch_size: int = 8192) -> np.ndarray:
    """Probability of natural language per text (float64): the softmax of the classifier's
    logits at its ``nl_label_index`` column (0 when it has none, as the published model).

    ``classifier`` is anything with ``logits(texts) -> [n, K]``: :func:`train_code_vs_nl`,
    :func:`load_hf_code_vs_nl` or a :mod:`anatomy.classifiers` classifier. Texts go to it
    ``batch_size`` at a time.
    """
    texts = list(texts)
    col = int(getattr(classifier, "nl_label_index", 0))
    out = np.zeros(len(texts), np.float64)
    for a in range(0, len(texts), batch_size):
        z = np.asarray(classifier.logits(texts[a:a + batch_size]), dtype=np.float64)
        out[a:a + len(z)] = softmax(z, axis=1)[:, col]
    return out


def nl_label(scores: np.ndarray, thresholds: tuple[float, float] = NL_THRESHOLDS
             ) -> np.ndarray:
    """``"nl"`` where ``score >= thresholds[0]``, ``"code"`` where ``score <= thresholds[1]``,
    else ``"uncertain"`` (published ``NATURAL_LANGUAGE_SCORE_THRESHOLDS = [0.525, 0.4]``).
    NaN scores are uncertain. Returns a numpy array of str."""
    nl, code = (float(t) for t in thresholds)
    if code > nl:
        raise InputError(None, f"thresholds (nl, code) need code <= nl, got ({nl}, {code})")
    s = np.asarray(scores, dtype=np.float64)
    return np.select([s >= nl, s <= code], [LABELS[0], LABELS[1]], LABELS[2]).astype(str)
