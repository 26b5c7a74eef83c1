"""Memorization taxonomy: recitation, reconstruction, recollection, and the models built on it.

Prashanth et al. 2024, "Recite, Reconstruct, Recollect: Memorization in LMs as a Multifaceted
Phenomenon" (arXiv 2406.17746), as implemented in EleutherAI/semantic-memorization at HEAD
84ab8c0 (``reference/memorization.md`` sections 2-4):

- features (``model_parameters.py``: ``CONTINUOUS_FEATURE_COLUMNS``,
  ``CATEGORICAL_FEATURE_COLUMNS``, ``derive_is_templating_feature``): :data:`CONTINUOUS_FEATURES`,
  :data:`BINARY_FEATURES`;
- the taxonomy (``model_parameters.py`` ``taxonomy_function``, ``model_training.py``
  ``--sequence_duplication_threshold``): :func:`categorize`, :func:`memorized`,
  :func:`category_shares`;
- the baseline and taxonomic logistic regressions, their metrics and fold uncertainty
  (``model_training.py`` ``train_and_save_taxonomic_models``; ``model_utils.py``
  ``expected_calibration_error``, ``PredictionModel``): :func:`fit_taxonomy`;
- the "greedy taxonomic search" (``model_training.py`` ``train_and_save_all_taxonomy_pairs``,
  ``generate_optimal_taxonomy_candidate``; ``TAXONOMY_SEARCH_FEATURES``,
  ``TAXONOMY_QUANTILES``): :func:`partition_search`;
- Pearson, Spearman and Chatterjee's xi per feature (``model_training.py``
  ``calculate_all_correlation_coefficients``): :func:`correlations`, :func:`chatterjee_xi`;
- the figures of ``plotting/model_perf_testing.ipynb`` and
  ``plotting/Correlation_Coefficients.ipynb``: ``plot_*``.

Deliberate deviations from the published code (each switchable where reproducing it is
meaningful):

- the StandardScaler is fitted on the training rows only; the published code fits it on every
  row before the split (``published_scaling=True`` reproduces that);
- every metric comes from probabilities; the published aggregated ROC/PR AUCs were computed on
  hard 0/1 predictions (``hard_label_auc=True`` reproduces that);
- uncertainty refits the scaler and models on each of ``folds`` KFold training folds of the
  training split and scores the fixed test split (``resample="train"``, default). The published
  code fits once and takes 100 KFold "training" folds (99% subsamples) of the *test
  predictions*, unseeded (``resample="test"`` reproduces that, seeded);
- a category whose training rows hold one class gets its constant prior probability instead of
  the published "not trainable" abort (``check_training_eligibility``), and is reported;
- the published code trains each model on an inner 80% of the training rows (its other 20% a
  validation set whose scores are only logged); here models use every training row.
"""

from __future__ import annotations

import itertools
import math
import os
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import KFold, train_test_split
from sklearn.preprocessing import StandardScaler

PathLike = str | os.PathLike

# model_parameters.py CONTINUOUS_FEATURE_COLUMNS, in the published order.
CONTINUOUS_FEATURES: tuple[str, ...] = (
    "sequence_duplicates",
    "max_frequency",
    "avg_frequency",
    "min_frequency",
    "median_frequency",
    "p25_frequency",
    "p75_frequency",
    "generation_perplexity",
    "prompt_perplexity",
    "sequence_perplexity",
    "0_8_templates",  # "Textual Matches"
    "0_8_snowclones",  # "Semantic Matches"
    "huffman_coding_length",
)
# model_parameters.py CATEGORICAL_FEATURE_COLUMNS: is_templating = is_incrementing | is_repeating.
BINARY_FEATURES: tuple[str, ...] = ("is_templating",)
FEATURES: tuple[str, ...] = CONTINUOUS_FEATURES + BINARY_FEATURES
# model_parameters.py TAXONOMY_SEARCH_FEATURES and TAXONOMY_QUANTILES.
SEARCH_FEATURES: tuple[str, ...] = (
    "max_frequency",
    "avg_frequency",
    "min_frequency",
    "median_frequency",
    "0_8_templates",
    "0_8_snowclones",
    "sequence_duplicates",
    "huffman_coding_length",
    "is_templating",
    "generation_perplexity",
)
SEARCH_QUANTILES: tuple[float, ...] = (0.25, 0.5, 0.75)
CATEGORIES: tuple[str, ...] = ("recitation", "reconstruction", "recollection")
AGGREGATE = "aggregate"
METRICS: tuple[str, ...] = ("roc_auc", "pr_auc", "precision", "recall", "f1", "ece")
DUPLICATES_THRESHOLD = 5  # recitation iff sequence_duplicates > 5 (CLI: >= 6)
SEED = 1024  # model_parameters.py GLOBAL_SEED
NL_THRESHOLDS = (0.525, 0.4)  # NATURAL_LANGUAGE_SCORE_THRESHOLDS: nl >= 0.525, code <= 0.4


# ---------------------------------------------------------------------------------------
# taxonomy


def _require(df: pd.DataFrame, columns: Iterable[str]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise KeyError(f"the table lacks column(s) {missing}")


def _flag(df: pd.DataFrame, column: str) -> np.ndarray:
    return df[column].fillna(False).astype(bool).to_numpy()


def is_templating(df: pd.DataFrame) -> pd.Series:
    """``is_incrementing OR is_repeating`` as 0/1 (``model_parameters.py``
    ``derive_is_templating_feature``); an existing ``is_templating`` column is used when the two
    flags are absent. Missing flags count as False."""
    if "is_incrementing" in df.columns or "is_repeating" in df.columns:
        _require(df, ("is_incrementing", "is_repeating"))
        flag = _flag(df, "is_incrementing") | _flag(df, "is_repeating")
    else:
        _require(df, ("is_templating",))
        flag = _flag(df, "is_templating")
    return pd.Series(flag.astype(np.int64), index=df.index, name="is_templating")


def with_features(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the derived ``is_templating`` column added (a copy) when it is missing."""
    if "is_templating" in df.columns:
        return df
    out = df.copy()
    out["is_templating"] = is_templating(df)
    return out


def categorize(df: pd.DataFrame, duplicates_threshold: float = DUPLICATES_THRESHOLD
               ) -> pd.Series:
    """The category of every row, first rule that matches wins (Prashanth et al. 2024, §3;
    ``model_parameters.py`` ``taxonomy_function``):

    1. ``sequence_duplicates > duplicates_threshold``: ``"recitation"``;
    2. else ``is_incrementing or is_repeating``: ``"reconstruction"``;
    3. else ``"recollection"``.

    The default 5 is the paper's "more than 5 duplicates"; ``model_training.py``'s CLI default 6
    applied with ``>=`` is the same rule on integer counts. ``taxonomy_function``'s own default
    argument, 10 applied with ``>=`` (i.e. ``> 9``), is a known inconsistency of the published
    code and is not used here. A missing duplicate count is not recitation. Every row gets a
    category, memorized or not (the published analyses' "Not Memorized" label is
    ``~memorized(df)``, kept separate).
    """
    _require(df, ("sequence_duplicates",))
    dup = pd.to_numeric(df["sequence_duplicates"], errors="coerce").to_numpy(np.float64)
    with np.errstate(invalid="ignore"):
        recite = dup > float(duplicates_threshold)
    templ = is_templating(df).to_numpy().astype(bool)
    cat = np.select([recite, templ], [CATEGORIES[0], CATEGORIES[1]], CATEGORIES[2])
    return pd.Series(cat.astype(object), index=df.index, name="category")


def memorized(df: pd.DataFrame) -> pd.Series:
    """``memorization_score == 1.0`` (32 of 32 continuation tokens reproduced greedily;
    ``model_training.py`` ``preprocess_dataset``)."""
    _require(df, ("memorization_score",))
    score = pd.to_numeric(df["memorization_score"], errors="coerce")
    return pd.Series((score == 1.0).to_numpy(), index=df.index, name="memorized")


def _group_keys(values: pd.Series) -> list:
    uniq = pd.unique(values)
    if pd.api.types.is_numeric_dtype(values):
        return sorted(uniq)
    return list(uniq)  # strings such as "70m", "12b": order of first appearance


def category_shares(df: pd.DataFrame, by: str | None = "checkpoint",
                    duplicates_threshold: float = DUPLICATES_THRESHOLD) -> pd.DataFrame:
    """Counts and shares of the memorized samples per category, per ``by`` group when that
    column exists (the paper's table of shares across scale and training time; Kyle's
    ``results_analysis.ipynb``).

    One row per (group, category), every category listed even when empty: ``[by]``,
    ``category``, ``count`` (memorized rows of that category), ``share`` (count / memorized
    rows; NaN when none), ``n_memorized``, ``n_samples`` (all rows of the group) and
    ``memorized_fraction`` (n_memorized / n_samples). Numeric groups are sorted; others keep
    the order of first appearance.
    """
    cats = categorize(df, duplicates_threshold).to_numpy()
    mem = memorized(df).to_numpy()
    groups: list[tuple[Any, np.ndarray]]
    if by is not None and by in df.columns:
        col = df[by]
        groups = [(g, (col == g).to_numpy()) for g in _group_keys(col)]
    else:
        by = None
        groups = [(None, np.ones(len(df), dtype=bool))]
    rows = []
    for g, rows_of in groups:
        n_samples = int(rows_of.sum())
        n_mem = int((rows_of & mem).sum())
        for c in CATEGORIES:
            count = int((rows_of & mem & (cats == c)).sum())
            row = {} if by is None else {by: g}
            row.update(category=c, count=count,
                       share=count / n_mem if n_mem else math.nan,
                       n_memorized=n_mem, n_samples=n_samples,
                       memorized_fraction=n_mem / n_samples if n_samples else math.nan)
            rows.append(row)
    return pd.DataFrame(rows)


DS_TYPES = ("representative", "memories")  # model_training.py's ``ds_type`` values


@dataclass(frozen=True)
class ModelRows:
    """Which rows of one checkpoint's table the models and correlations use (:func:`model_rows`).

    ``used``: rows the models and correlations see; ``train_only``: among ``used``, rows that
    go to training only; counts for the report.
    """

    used: np.ndarray
    train_only: np.ndarray
    n_representative: int
    n_memories: int
    n_memories_memorized: int
    has_ds_type: bool

    def describe(self) -> str:
        if not self.has_ds_type:
            return (f"{len(self.used)} rows, no ds_type column: every row is treated as the "
                    "random sample (split into train and test)")
        left = self.n_memories - self.n_memories_memorized
        return (f"{self.n_representative} representative rows (the random sample, split into "
                f"train and test) + {self.n_memories} added rows (ds_type \"memories\"): "
                f"{self.n_memories_memorized} memorized, to training only; {left} not "
                "memorized, left out (the published memories set holds memorized sequences "
                "only)")


def model_rows(df: pd.DataFrame) -> ModelRows:
    """The published use of the two sample sets (``model_training.py`` lines 1068-1090 at
    84ab8c0): the "representative" rows (a random sample) are split into train and test; the
    "memories" rows (a set of memorized sequences added to the sample) join the training
    split only, and the correlations see both. Here the added set may hold sequences that are
    not memorized at this checkpoint (the miniworld adds every planted sequence): those are
    left out, since the published set holds none. A table without ``ds_type`` is all
    representative. Other ``ds_type`` values are an error."""
    n = len(df)
    if "ds_type" not in df.columns:
        z = np.zeros(n, bool)
        return ModelRows(np.ones(n, bool), z, n, 0, 0, False)
    kind = df["ds_type"].astype(str).to_numpy()
    bad = sorted(set(kind) - set(DS_TYPES))
    if bad:
        raise ValueError(f"ds_type holds {bad}; expected {list(DS_TYPES)}")
    extra = kind == "memories"
    mem = memorized(df).to_numpy()
    used = ~extra | mem
    return ModelRows(used, (extra & mem)[used], int((~extra).sum()), int(extra.sum()),
                     int((extra & mem).sum()), True)


def _one_checkpoint(df: pd.DataFrame) -> None:
    if "checkpoint" in df.columns and df["checkpoint"].nunique(dropna=False) > 1:
        raise ValueError("the table holds several checkpoints; select one "
                         "(df[df.checkpoint == c]) before fitting or correlating")


# ---------------------------------------------------------------------------------------
# metrics


def expected_calibration_error(labels: Sequence | np.ndarray, probs: Sequence | np.ndarray,
                               n_bins: int = 10, top_label: bool = True) -> float:
    """Expected calibration error with ``n_bins`` uniform bins: Σ_m |acc(B_m) − conf(B_m)|
    · |B_m| / n (Guo et al. 2017; ``model_utils.py`` ``expected_calibration_error``).

    ``probs`` are P(label = 1). With ``top_label`` (the published form) the confidence is
    ``max(p, 1 − p)`` and accuracy is whether the predicted class (``p > 0.5``; argmax, ties to
    class 0) equals the label; otherwise confidence is ``p`` and "accuracy" is the label (a
    positive-class reliability diagram). Bins are ``(lower, upper]`` as published, with 0 in
    the first bin. NaN when there are no samples. The published per-model ECE used 10 bins, its
    aggregated table the function's default 5.
    """
    y = np.asarray(labels).astype(bool)
    p = np.asarray(probs, dtype=np.float64)
    if len(y) != len(p):
        raise ValueError(f"{len(y)} labels but {len(p)} probabilities")
    if len(y) == 0:
        return math.nan
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    if top_label:
        conf = np.maximum(p, 1.0 - p)
        acc = (p > 0.5) == y
    else:
        conf, acc = p, y
    uppers = np.linspace(0.0, 1.0, n_bins + 1)[1:]
    b = np.minimum(np.searchsorted(uppers, conf, side="left"), n_bins - 1)
    count = np.bincount(b, minlength=n_bins).astype(np.float64)
    sum_conf = np.bincount(b, weights=conf, minlength=n_bins)
    sum_acc = np.bincount(b, weights=acc.astype(np.float64), minlength=n_bins)
    used = count > 0
    gap = np.abs(sum_acc[used] / count[used] - sum_conf[used] / count[used])
    return float(np.sum(gap * count[used]) / len(y))


def binary_metrics(labels: Sequence | np.ndarray, probs: Sequence | np.ndarray,
                   cutoff: float = 0.5, ece_bins: int = 10, hard_label_auc: bool = False,
                   zero_division: float = math.nan) -> dict[str, float]:
    """ROC AUC, PR AUC (average precision), precision, recall, F1 and ECE of P(label = 1).

    Predicted positive means ``p > cutoff`` (``model_utils.py`` ``PredictionModel.predict``).
    AUCs come from the probabilities unless ``hard_label_auc`` (the published aggregated
    table's bug: AUCs of the 0/1 predictions). A metric undefined on these rows is NaN: ROC AUC
    without both classes, PR AUC and recall without positives, precision without predicted
    positives, F1 without positives or predicted positives, everything on no rows.
    ``zero_division=0`` gives sklearn's ``precision_score`` / ``recall_score`` default (0,
    with a warning) instead, as the published metrics got.
    """
    y = np.asarray(labels).astype(bool)
    p = np.asarray(probs, dtype=np.float64)
    pred = p > cutoff
    tp = float(np.sum(pred & y))
    fp = float(np.sum(pred & ~y))
    fn = float(np.sum(~pred & y))
    n_pos = int(y.sum())
    score = pred.astype(np.float64) if hard_label_auc else p
    out = {
        "roc_auc": (float(roc_auc_score(y, score)) if 0 < n_pos < len(y) else math.nan),
        "pr_auc": float(average_precision_score(y, score)) if n_pos > 0 else math.nan,
        "precision": tp / (tp + fp) if tp + fp > 0 else zero_division,
        "recall": tp / (tp + fn) if tp + fn > 0 else zero_division,
        "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn > 0 else math.nan,
        "ece": expected_calibration_error(y, p, ece_bins),
    }
    return out


@dataclass(frozen=True)
class MetricConventions:
    """How the taxonomy's metrics are computed; :data:`OURS` and :data:`PUBLISHED`.

    ``PUBLISHED`` is ``model_training.py`` ``train_and_save_taxonomic_models`` (84ab8c0, lines
    770-800) and ``plotting/model_perf_testing.ipynb`` (``set_f1``): the full fit's test
    predictions are subsampled by the training parts of a 100-fold KFold per category
    (subsamples of one class skipped); ROC and PR AUC are taken on the 0/1 predictions;
    precision and recall are sklearn's (0 when undefined); ECE has 5 bins (the function's
    default; the per-model logs used 10); F1 is the notebook's, ``2PR / (P + R)`` of the mean
    precision and recall, its error propagated from their standard deviations.
    """

    name: str
    resample: str  # "train": refit on training folds; "test": subsample test predictions
    hard_label_auc: bool
    ece_bins: int
    f1_of_means: bool
    zero_division: float

    def describe(self, folds: int) -> str:
        spread = (f"mean +- sd over {folds} refits on KFold training folds, scored on the "
                  "fixed test split" if self.resample == "train" else
                  f"mean +- sd over {folds} KFold training-part subsamples of the test "
                  f"predictions; a category of fewer than {folds} test rows, where the "
                  "published code stops, shows its one test value without +-")
        return (f"metric conventions: {self.name} ({spread}; ROC/PR AUC from "
                f"{'0/1 predictions' if self.hard_label_auc else 'probabilities'}; ECE "
                f"{self.ece_bins} bins; F1 "
                f"{'2PR/(P+R) of the mean P and R' if self.f1_of_means else 'per fold'}; "
                f"undefined precision/recall {'0' if self.zero_division == 0 else 'NaN'})")


OURS = MetricConventions("ours", "train", False, 10, False, math.nan)
PUBLISHED = MetricConventions("published", "test", True, 5, True, 0.0)


def _f1_of_means(p: float, r: float, p_err: float, r_err: float) -> tuple[float, float]:
    """The notebook's F1 of mean precision and recall and its propagated error
    (``set_f1`` in ``plotting/model_perf_testing.ipynb``): ``2PR/(P+R)`` and
    ``2/(P+R)^2 * sqrt(R^4 sP^2 + P^4 sR^2)``; NaN when P + R is 0 or undefined."""
    if not np.isfinite(p + r) or p + r == 0:
        return math.nan, math.nan
    f1 = 2 * p * r / (p + r)
    err = 2 / (p + r) ** 2 * math.sqrt(r ** 4 * p_err ** 2 + p ** 4 * r_err ** 2)
    return f1, err


# ---------------------------------------------------------------------------------------
# design matrix, split, models


@dataclass
class _Design:
    x: np.ndarray  # raw feature values, rows x features
    y: np.ndarray  # memorized, bool
    cats: np.ndarray  # category strings
    scaled: np.ndarray  # bool per feature: standardised (continuous) or passed through
    features: list[str]


def _design(df: pd.DataFrame, features: Sequence[str] | None, duplicates_threshold: float,
            need_label: bool = True) -> _Design:
    _one_checkpoint(df)
    feats = list(FEATURES if features is None else features)
    if not feats:
        raise ValueError("no features given")
    if len(set(feats)) != len(feats):
        raise ValueError(f"features repeat: {feats}")
    data = with_features(df) if "is_templating" in feats else df
    _require(data, feats)
    x = data[feats].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = [f for f, ok in zip(feats, np.isfinite(x).all(axis=0), strict=True) if not ok]
    if bad:
        raise ValueError(f"features {bad} hold NaN, inf or non-numeric values; fill or drop "
                         "those rows first")
    scaled = np.array([f not in BINARY_FEATURES for f in feats])
    if need_label or "memorization_score" in df.columns:
        y = memorized(df).to_numpy()
    else:
        y = np.zeros(len(df), dtype=bool)
    return _Design(x=x, y=y, cats=categorize(df, duplicates_threshold).to_numpy(),
                   scaled=scaled, features=feats)


def _split(d: _Design, test_size: float, seed: int, train_only: Any
           ) -> tuple[np.ndarray, np.ndarray, str]:
    """Row positions of the training and test splits, and what the split stratified on.

    Published: ``train_test_split(..., test_size=0.2, random_state=1024, stratify=label +
    category)`` on the representative rows, with the memories set added to training only
    (``train_only``). When a stratum is too small for sklearn, falls back to the label, then
    to no stratification.
    """
    n = len(d.y)
    only = np.zeros(n, dtype=bool) if train_only is None else np.asarray(train_only, bool)
    if only.shape != (n,):
        raise ValueError(f"train_only has shape {only.shape}, the table {n} rows")
    pool = np.flatnonzero(~only)
    if len(pool) < 2:
        raise ValueError("fewer than 2 rows to split into train and test")
    strata = [("label+category", np.char.add(d.y[pool].astype(int).astype(str),
                                             d.cats[pool].astype(str))),
              ("label", d.y[pool].astype(int)), ("none", None)]
    for name, s in strata:
        try:
            tr, te = train_test_split(pool, test_size=test_size, random_state=seed, stratify=s)
        except ValueError:
            if s is None:
                raise
            continue
        return np.sort(np.concatenate([tr, np.flatnonzero(only)])), np.sort(te), name
    raise AssertionError("unreachable")


def _scaler(d: _Design, rows: np.ndarray) -> StandardScaler | None:
    if not d.scaled.any():
        return None
    return StandardScaler().fit(d.x[np.ix_(rows, np.flatnonzero(d.scaled))])


def _transform(d: _Design, scaler: StandardScaler | None, x: np.ndarray | None = None
               ) -> np.ndarray:
    x = d.x if x is None else x
    if scaler is None:
        return x.copy()
    out = x.copy()
    cols = np.flatnonzero(d.scaled)
    out[:, cols] = scaler.transform(x[:, cols])
    return out


@dataclass
class _Fitted:
    """A fitted LR, or a constant probability where the rows hold fewer than two classes."""

    model: LogisticRegression | None
    constant: float | None = None

    def proba(self, x: np.ndarray) -> np.ndarray:
        if self.model is None:
            return np.full(len(x), self.constant, dtype=np.float64)
        return self.model.predict_proba(x)[:, 1]

    def weights(self, n_features: int) -> np.ndarray:
        if self.model is None:
            return np.full(n_features + 1, np.nan)
        return np.concatenate([self.model.intercept_, self.model.coef_[0]])


def _lr(seed: int, C: float, max_iter: int) -> LogisticRegression:
    # model_parameters.py: L2 (sklearn's default; ``penalty`` is deprecated from 1.8), C = 1,
    # class_weight "balanced", max_iter 10,000, intercept, random_state GLOBAL_SEED.
    return LogisticRegression(C=C, class_weight="balanced", max_iter=max_iter,
                              fit_intercept=True, random_state=seed)


def _fit(x: np.ndarray, y: np.ndarray, fallback: float, seed: int, C: float, max_iter: int
         ) -> _Fitted:
    if len(y) == 0:
        return _Fitted(None, float(fallback))
    prior = float(np.mean(y))
    if prior in (0.0, 1.0):
        return _Fitted(None, prior)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)
        return _Fitted(_lr(seed, C, max_iter).fit(x, y.astype(np.int64)))


# ---------------------------------------------------------------------------------------
# taxonomic model


@dataclass
class TaxonomyResult:
    """What :func:`fit_taxonomy` returns. Models and coefficients are those fitted on the whole
    training split; ``metrics`` holds their test ``value`` and the ``mean``/``std`` over folds.

    - ``metrics``: tidy, one row per (model, category, metric): ``model`` ("taxonomic",
      "baseline"), ``category`` (the three and "aggregate"), ``metric`` (:data:`METRICS`),
      ``value``, ``mean``, ``std`` (np.std, ddof 0, as published), ``n_folds`` (folds where the
      metric was defined), ``n_test`` and ``n_positive`` (test rows of that category).
    - ``coefficients``: index ``["intercept", *features]``, columns ``["baseline",
      *CATEGORIES]``; weights on standardised continuous features (NaN for a constant model);
      ``coefficients_std``: their std over folds.
    - ``test``: per test row (original index): ``label``, ``category``, ``baseline_prob``,
      ``taxonomic_prob``.
    - ``constant``: the models (``"baseline"`` and categories) that score by a constant prior
      (training rows of a single class, or none: then the overall training prior) in the full
      fit; ``constant_folds``: in how many folds that happened to each category.
    """

    features: list[str]
    duplicates_threshold: float
    train_index: pd.Index
    test_index: pd.Index
    stratify: str
    scaler: StandardScaler | None
    baseline: LogisticRegression | None
    models: dict[str, LogisticRegression | None]
    constant: dict[str, float]
    constant_folds: dict[str, int]
    test: pd.DataFrame
    metrics: pd.DataFrame
    coefficients: pd.DataFrame
    coefficients_std: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)
    _fitted: dict[str, _Fitted] = field(default_factory=dict, repr=False)

    def metric(self, model: str, category: str, metric: str, stat: str = "value") -> float:
        """One number of ``metrics``, e.g. ``metric("taxonomic", "aggregate", "f1", "mean")``."""
        m = self.metrics
        row = m[(m.model == model) & (m.category == category) & (m.metric == metric)]
        if len(row) != 1:
            raise KeyError(f"no metric ({model}, {category}, {metric})")
        return float(row[stat].iloc[0])

    def predict(self, df: pd.DataFrame) -> pd.DataFrame:
        """``category``, ``baseline_prob`` and ``taxonomic_prob`` for new rows (same columns),
        through the fitted scaler and models; ``memorization_score`` is not needed."""
        d = _design(df, self.features, self.duplicates_threshold, need_label=False)
        x = _transform(d, self.scaler)
        tax = np.empty(len(df))
        for c in CATEGORIES:
            rows = d.cats == c
            tax[rows] = self._fitted[c].proba(x[rows])
        return pd.DataFrame({"category": d.cats, "baseline_prob": self._fitted["baseline"]
                             .proba(x), "taxonomic_prob": tax}, index=df.index)


def _fit_models(d: _Design, rows: np.ndarray, scaler: StandardScaler | None, seed: int,
                C: float, max_iter: int) -> dict[str, _Fitted]:
    x = _transform(d, scaler, d.x[rows])
    y, cats = d.y[rows], d.cats[rows]
    prior = float(np.mean(y)) if len(y) else 0.0
    fitted = {"baseline": _fit(x, y, prior, seed, C, max_iter)}
    for c in CATEGORIES:
        m = cats == c
        fitted[c] = _fit(x[m], y[m], prior, seed, C, max_iter)
    return fitted


def _test_probs(d: _Design, test: np.ndarray, scaler: StandardScaler | None,
                fitted: dict[str, _Fitted]) -> tuple[np.ndarray, np.ndarray]:
    x = _transform(d, scaler, d.x[test])
    base = fitted["baseline"].proba(x)
    tax = np.empty(len(test))
    cats = d.cats[test]
    for c in CATEGORIES:
        m = cats == c
        if m.any():
            tax[m] = fitted[c].proba(x[m])
    return base, tax


def _grouped_metrics(y: np.ndarray, cats: np.ndarray, probs: dict[str, np.ndarray],
                     cutoff: float, ece_bins: int, hard_label_auc: bool,
                     rows: np.ndarray | None = None, zero_division: float = math.nan
                     ) -> dict[tuple[str, str, str], float]:
    out = {}
    for model, p in probs.items():
        for c in (*CATEGORIES, AGGREGATE):
            m = np.ones(len(y), bool) if c == AGGREGATE else cats == c
            if rows is not None:
                m = m & rows
            vals = binary_metrics(y[m], p[m], cutoff, ece_bins, hard_label_auc, zero_division)
            for k, v in vals.items():
                out[(model, c, k)] = v
    return out


def _nan_stats(values: list[float]) -> tuple[float, float, int]:
    a = np.asarray(values, dtype=np.float64)
    a = a[np.isfinite(a)]
    if len(a) == 0:
        return math.nan, math.nan, 0
    return float(a.mean()), float(a.std()), len(a)


def fit_taxonomy(df: pd.DataFrame, features: Sequence[str] | None = None,
                 threshold: float = DUPLICATES_THRESHOLD, folds: int = 10, seed: int = SEED,
                 test_size: float = 0.2, *, published_scaling: bool = False,
                 hard_label_auc: bool = False, resample: str = "train", cutoff: float = 0.5,
                 ece_bins: int = 10, train_only: Sequence[bool] | np.ndarray | None = None,
                 C: float = 1.0, max_iter: int = 10_000,
                 conventions: MetricConventions | None = None) -> TaxonomyResult:
    """Baseline vs taxonomic logistic regression for ``memorized`` (Prashanth et al. 2024, §4;
    ``model_training.py`` ``train_and_save_baseline_and_taxonomic_models``).

    - Label: ``memorization_score == 1.0``; categories: :func:`categorize` at ``threshold``.
    - Split: ``test_size`` of the rows (not ``train_only`` ones, e.g. the published memories
      set) to test, stratified on label + category, ``random_state=seed``.
    - Scaling: StandardScaler on the continuous features, fitted on the training rows
      (``published_scaling``: on every row before the split, as published); ``is_templating``
      is passed through.
    - Models: ``LogisticRegression`` L2, ``C``, ``class_weight="balanced"``, ``max_iter``,
      ``random_state=seed``. Baseline: one on all training rows. Taxonomic: one per category on
      that category's training rows; each test row is scored by its own category's model. A
      category whose training rows hold a single class (or none) gets a constant probability,
      its prior (or the overall training prior), reported in ``constant``.
    - Metrics (:func:`binary_metrics`, from probabilities, ``p > cutoff`` for the thresholded
      ones, ``ece_bins`` top-label bins), per category and aggregated, for both models.
    - Uncertainty, ``resample="train"``: ``KFold(folds, shuffle=True, random_state=seed)`` over
      the training rows; each fold's training part ((folds − 1)/folds of them; 99% with the
      published 100 folds) refits scaler and models, scored on the fixed test split.
      ``resample="test"`` (published): the full-fit models' test predictions are subsampled the
      same way per category, subsamples with a single class skipped. ``folds < 2``: no
      resampling, ``mean`` and ``std`` NaN (read ``value``).
    - ``conventions`` (:data:`OURS`, :data:`PUBLISHED`) overrides ``resample``,
      ``hard_label_auc`` and ``ece_bins`` and adds the F1 and zero-division rules.
    """
    if conventions is not None:
        resample, hard_label_auc = conventions.resample, conventions.hard_label_auc
        ece_bins = conventions.ece_bins
    else:
        conventions = MetricConventions("custom", resample, hard_label_auc, ece_bins, False,
                                        math.nan)
    zd = conventions.zero_division
    if resample not in ("train", "test"):
        raise ValueError(f"resample is 'train' or 'test', not {resample!r}")
    d = _design(df, features, threshold)
    train, test, stratify = _split(d, test_size, seed, train_only)
    scale_rows = np.arange(len(d.y)) if published_scaling else train
    scaler = _scaler(d, scale_rows)
    fitted = _fit_models(d, train, scaler, seed, C, max_iter)
    base, tax = _test_probs(d, test, scaler, fitted)
    y_te, c_te = d.y[test], d.cats[test]
    probs = {"taxonomic": tax, "baseline": base}
    full = _grouped_metrics(y_te, c_te, probs, cutoff, ece_bins, hard_label_auc,
                            zero_division=zd)

    per_fold: dict[tuple[str, str, str], list[float]] = {k: [] for k in full}
    fold_weights: list[np.ndarray] = []
    constant_folds = dict.fromkeys(CATEGORIES, 0)
    if folds >= 2 and resample == "train":
        kf = KFold(n_splits=folds, shuffle=True, random_state=seed)
        for sub, _ in kf.split(train):
            rows = train[sub]
            sc = scaler if published_scaling else _scaler(d, rows)
            f = _fit_models(d, rows, sc, seed, C, max_iter)
            for c in CATEGORIES:
                constant_folds[c] += f[c].model is None
            b, t = _test_probs(d, test, sc, f)
            got = _grouped_metrics(y_te, c_te, {"taxonomic": t, "baseline": b}, cutoff,
                                   ece_bins, hard_label_auc, zero_division=zd)
            for k, v in got.items():
                per_fold[k].append(v)
            fold_weights.append(np.stack([f[m].weights(len(d.features))
                                          for m in ("baseline", *CATEGORIES)], axis=1))
    elif folds >= 2:
        for c in (*CATEGORIES, AGGREGATE):
            group = np.flatnonzero(np.ones(len(test), bool) if c == AGGREGATE else c_te == c)
            if len(group) < folds:
                continue
            kf = KFold(n_splits=folds, shuffle=True, random_state=seed)
            for sub, _ in kf.split(group):
                rows = group[sub]
                if len(np.unique(y_te[rows])) < 2:
                    continue
                for model, p in probs.items():
                    vals = binary_metrics(y_te[rows], p[rows], cutoff, ece_bins, hard_label_auc,
                                          zd)
                    for k, v in vals.items():
                        per_fold[(model, c, k)].append(v)

    records = []
    for (model, c, metric), value in full.items():
        mean, std, n_ok = _nan_stats(per_fold[(model, c, metric)])
        if metric == "f1" and conventions.f1_of_means:
            pm, ps, _ = _nan_stats(per_fold[(model, c, "precision")])
            rm, rs, _ = _nan_stats(per_fold[(model, c, "recall")])
            mean, std = _f1_of_means(pm, rm, ps, rs)
        m = np.ones(len(test), bool) if c == AGGREGATE else c_te == c
        records.append({"model": model, "category": c, "metric": metric, "value": value,
                        "mean": mean, "std": std, "n_folds": n_ok, "n_test": int(m.sum()),
                        "n_positive": int(y_te[m].sum())})
    metrics = pd.DataFrame(records)

    names = ["baseline", *CATEGORIES]
    index = ["intercept", *d.features]
    coefs = pd.DataFrame(np.stack([fitted[m].weights(len(d.features)) for m in names], axis=1),
                         index=index, columns=names)
    if fold_weights:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", category=RuntimeWarning)
            std_w = np.nanstd(np.stack(fold_weights), axis=0)
    else:
        std_w = np.full(coefs.shape, np.nan)
    coefs_std = pd.DataFrame(std_w, index=index, columns=names)

    idx = df.index
    test_df = pd.DataFrame({"label": y_te, "category": c_te, "baseline_prob": base,
                            "taxonomic_prob": tax}, index=idx[test])
    settings = dict(threshold=threshold, folds=folds, seed=seed, test_size=test_size,
                    published_scaling=published_scaling, hard_label_auc=hard_label_auc,
                    resample=resample, cutoff=cutoff, ece_bins=ece_bins, C=C,
                    max_iter=max_iter, conventions=conventions.name,
                    f1_of_means=conventions.f1_of_means,
                    zero_division=conventions.zero_division)
    return TaxonomyResult(
        features=d.features, duplicates_threshold=threshold, train_index=idx[train],
        test_index=idx[test], stratify=stratify, scaler=scaler,
        baseline=fitted["baseline"].model, models={c: fitted[c].model for c in CATEGORIES},
        constant={c: fitted[c].constant for c in ("baseline", *CATEGORIES)
                  if fitted[c].model is None},
        constant_folds=constant_folds, test=test_df, metrics=metrics, coefficients=coefs,
        coefficients_std=coefs_std, settings=settings, _fitted=fitted)


# ---------------------------------------------------------------------------------------
# partition search


def _search_rules(features: Sequence[str], quantiles: Sequence[float]
                  ) -> list[tuple[tuple[str, float], tuple[str, float]]]:
    # model_training.py: sorted(permutations(product(features, quantiles), 2)), same feature
    # dropped: 10 x 3 candidates give 30 x 27 = 810 ordered rules, in sorted order.
    cands = list(itertools.product(features, quantiles))
    return sorted(t for t in itertools.permutations(cands, 2) if t[0][0] != t[1][0])


def partition_search(df: pd.DataFrame, features: Sequence[str] = SEARCH_FEATURES,
                     quantiles: Sequence[float] = SEARCH_QUANTILES, *,
                     model_features: Sequence[str] | None = None,
                     threshold: float = DUPLICATES_THRESHOLD, seed: int = SEED,
                     test_size: float = 0.2, max_rules: int | None = None,
                     published_thresholds: bool = False, published_scaling: bool = False,
                     skip_ineligible: bool = False, cutoff: float = 0.5, ece_bins: int = 10,
                     train_only: Sequence[bool] | np.ndarray | None = None, C: float = 1.0,
                     max_iter: int = 10_000) -> pd.DataFrame:
    """The published "greedy taxonomic search" (an exhaustive one; ``model_training.py``
    ``train_and_save_all_taxonomy_pairs``, ``generate_optimal_taxonomy_candidate``).

    Candidates are (feature, ``quantile`` of that feature over the memorized rows) pairs; the
    memorized rows of the training split by default, every memorized row with
    ``published_thresholds`` (the published memories set). Every ordered pair of candidates on
    different features is a rule: class 1 if ``f1 >= t1``, else class 2 if ``f2 >= t2``, else
    class 3. Per rule, three LRs on ``model_features`` (default :data:`FEATURES`) are fitted on
    the training rows of their class and score the test rows of their class, as in
    :func:`fit_taxonomy` (same split, stratified on the :func:`categorize` categories, same
    scaler, same constant fallback), one fit, no folds. Identical class memberships are fitted
    once (class 1 depends on (f1, t1) only), which keeps 810 rules on a few thousand rows well
    under a minute on one core; ``max_rules`` keeps the first rules of the sorted order.

    Returns one row per rule, best aggregate F1 first (NaN last, ties in rule order): ``rule``
    (position in the published sorted order), ``feature_1``, ``quantile_1``, ``threshold_1``,
    ``feature_2``, ``quantile_2``, ``threshold_2``, ``n_train_1..3``, ``constant_classes``
    (classes scored by a constant prior), ``eligible`` (the published
    ``check_training_eligibility``: every class has training rows of both labels; with
    ``skip_ineligible`` other rules get NaN metrics, as the published code skipped them),
    then the aggregated test metrics of :func:`binary_metrics` and ``rank`` (1 = best).
    ``attrs["baseline"]`` holds the baseline model's aggregated metrics on the same split.
    """
    d = _design(df, model_features, threshold)
    feats = list(features)
    data = with_features(df) if "is_templating" in feats else df
    _require(data, feats)
    v = data[feats].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    train, test, _ = _split(d, test_size, seed, train_only)
    scaler = _scaler(d, np.arange(len(d.y)) if published_scaling else train)
    x = _transform(d, scaler)
    x_te, y_te = x[test], d.y[test]
    base = _fit(x[train], d.y[train], 0.0, seed, C, max_iter).proba(x_te)

    q_rows = d.y if published_thresholds else np.isin(np.arange(len(d.y)), train) & d.y
    if not q_rows.any():
        raise ValueError("no memorized rows to take the candidate quantiles from")
    mem = pd.DataFrame(v[q_rows], columns=feats)
    thr = {(f, q): float(mem[f].quantile(q)) for f in feats for q in quantiles}
    col = {f: i for i, f in enumerate(feats)}
    rules = _search_rules(feats, quantiles)
    if max_rules is not None:
        rules = rules[:max_rules]

    in_train = np.zeros(len(d.y), dtype=bool)
    in_train[train] = True
    train_prior = float(np.mean(d.y[train]))
    cache: dict[bytes, tuple[np.ndarray, bool, bool]] = {}

    def class_probs(member: np.ndarray) -> tuple[np.ndarray, bool, bool]:
        key = np.packbits(member).tobytes()
        if key not in cache:
            rows = member & in_train
            f = _fit(x[rows], d.y[rows], train_prior, seed, C, max_iter)
            yr = d.y[rows]
            eligible = bool(yr.any() and not yr.all())
            cache[key] = (f.proba(x_te), f.model is None, eligible)
        return cache[key]

    records = []
    for i, ((f1, q1), (f2, q2)) in enumerate(rules):
        t1, t2 = thr[(f1, q1)], thr[(f2, q2)]
        with np.errstate(invalid="ignore"):
            a = v[:, col[f1]] >= t1
            b = ~a & (v[:, col[f2]] >= t2)
        members = (a, b, ~a & ~b)
        tax = np.empty(len(test))
        const, eligible, n_train = [], True, []
        for k, member in enumerate(members, start=1):
            p, is_const, ok = class_probs(member)
            te = member[test]
            tax[te] = p[te]
            n_train.append(int((member & in_train).sum()))
            if is_const:
                const.append(k)
            eligible &= ok
        rec = {"rule": i, "feature_1": f1, "quantile_1": q1, "threshold_1": t1,
               "feature_2": f2, "quantile_2": q2, "threshold_2": t2,
               "n_train_1": n_train[0], "n_train_2": n_train[1], "n_train_3": n_train[2],
               "constant_classes": ",".join(map(str, const)), "eligible": eligible}
        if skip_ineligible and not eligible:
            rec.update(dict.fromkeys(METRICS, math.nan))
        else:
            rec.update(binary_metrics(y_te, tax, cutoff, ece_bins))
        records.append(rec)
    out = pd.DataFrame(records, columns=[
        "rule", "feature_1", "quantile_1", "threshold_1", "feature_2", "quantile_2",
        "threshold_2", "n_train_1", "n_train_2", "n_train_3", "constant_classes", "eligible",
        *METRICS])
    key = out["f1"].fillna(-np.inf)
    out = out.iloc[np.lexsort((out["rule"].to_numpy(), -key.to_numpy()))].reset_index(drop=True)
    out["rank"] = np.arange(1, len(out) + 1)
    out.attrs["baseline"] = binary_metrics(y_te, base, cutoff, ece_bins)
    return out


# ---------------------------------------------------------------------------------------
# correlations


def _xi_parts(x: np.ndarray, y: np.ndarray, seed: int) -> tuple[float, np.ndarray, np.ndarray]:
    n = len(x)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(n), x))  # sort by x, ties in x broken at random
    sorted_y = np.sort(y)
    ys = y[order]
    r = np.searchsorted(sorted_y, ys, side="right").astype(np.float64)  # #{j: y_j <= y}
    l_ = n - np.searchsorted(sorted_y, ys, side="left").astype(np.float64)  # #{j: y_j >= y}
    denom = 2.0 * np.sum(l_ * (n - l_))
    if n < 2 or denom == 0:
        return math.nan, r, l_
    return float(1.0 - n * np.sum(np.abs(np.diff(r))) / denom), r, l_


def chatterjee_xi(x: Sequence | np.ndarray, y: Sequence | np.ndarray, seed: int = 0) -> float:
    """Chatterjee's rank correlation ξ_n(x, y) (Chatterjee 2021, "A new coefficient of
    correlation", JASA): sort the pairs by x (ties in x broken at random, ``seed``), let r_i =
    #{j: y_j ≤ y_(i)} and l_i = #{j: y_j ≥ y_(i)}; then

        ξ_n = 1 − n Σ_i |r_{i+1} − r_i| / (2 Σ_i l_i (n − l_i)),

    which without ties in y is 1 − 3 Σ |r_{i+1} − r_i| / (n² − 1). It tends to 0 when y is
    independent of x and to 1 when y is a measurable function of x (monotone or not); it is
    not symmetric. NaN when y is constant or n < 2. The published code used the
    ``xicorrelation`` package (``xicorr``) on the standardised features.
    """
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError("x and y must be 1-d and of equal length")
    return _xi_parts(xa, ya, seed)[0]


def chatterjee_xi_test(x: Sequence | np.ndarray, y: Sequence | np.ndarray, seed: int = 0
                       ) -> tuple[float, float]:
    """ξ_n and its one-sided asymptotic p-value under independence: √n ξ_n → N(0, τ²), with
    τ² = 2/5 for continuous y and the tie-corrected variance of Chatterjee 2021 (Theorem 2.2)
    otherwise, estimated from the ranks."""
    xa, ya = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xa.shape != ya.shape or xa.ndim != 1:
        raise ValueError("x and y must be 1-d and of equal length")
    xi, r, l_ = _xi_parts(xa, ya, seed)
    if not np.isfinite(xi):
        return xi, math.nan
    n = len(xa)
    u = np.sort(r) / n
    g = l_ / n
    i = np.arange(1, n + 1, dtype=np.float64)
    w = 2 * n - 2 * i + 1
    a = np.mean(w * u * u) / n
    c = np.mean(w * u) / n
    m = (np.cumsum(u) + (n - i) * u) / n
    b = np.mean(m * m)
    cu = np.mean(g * (1 - g))
    var = (a - 2 * b + c * c) / (cu * cu)
    if not var > 0:
        return xi, math.nan
    return xi, float(stats.norm.sf(math.sqrt(n) * xi / math.sqrt(var)))


def _corr_row(x: np.ndarray, y: np.ndarray, seed: int) -> dict[str, float]:
    nan = dict(pearson=math.nan, pearson_p=math.nan, spearman=math.nan, spearman_p=math.nan,
               xi=math.nan, xi_p=math.nan)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pr = stats.pearsonr(x, y)
        sr = stats.spearmanr(x, y)
    xi, xi_p = chatterjee_xi_test(x, y, seed)
    return dict(pearson=float(pr.statistic), pearson_p=float(pr.pvalue),
                spearman=float(sr.statistic), spearman_p=float(sr.pvalue), xi=xi, xi_p=xi_p)


def correlations(df: pd.DataFrame, features: Sequence[str] | None = None,
                 by_category: bool = True, target: str = "memorized",
                 threshold: float = DUPLICATES_THRESHOLD, seed: int = 0,
                 split_nl: bool | None = None) -> pd.DataFrame:
    """Pearson, Spearman and Chatterjee ξ (with p-values) between each feature and ``target``
    (``"memorized"``, the 0/1 label the published code correlates, default; or a column such
    as ``"memorization_score"``; ``model_training.py`` ``calculate_all_correlation_coefficients``,
    lines 338-390 at 84ab8c0), for ``"baseline"`` (all rows) and, with ``by_category``, each
    category's rows.

    With ``split_nl`` (default: when the table has ``nl_scores``, as published) every group is
    also split into ``"nl"`` (``nl_scores >= 0.525``) and ``"code"`` (``<= 0.4``), in a
    ``subset`` column beside ``"all"``. ξ depends on ``seed`` through the random tie-breaking in x.
    A feature constant in a group gives NaN. Columns: ``group``, ``subset``, ``feature``,
    ``n``, ``pearson``, ``pearson_p``, ``spearman``, ``spearman_p``, ``xi``, ``xi_p``.
    """
    _one_checkpoint(df)
    feats = list(FEATURES if features is None else features)
    data = with_features(df) if "is_templating" in feats else df
    _require(data, feats)
    if target == "memorized":
        y = memorized(df).to_numpy().astype(np.float64)
    else:
        _require(df, (target,))
        y = pd.to_numeric(df[target], errors="coerce").to_numpy(np.float64)
    x_all = data[feats].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    groups = [("baseline", np.ones(len(df), bool))]
    if by_category:
        cats = categorize(df, threshold).to_numpy()
        groups += [(c, cats == c) for c in CATEGORIES]
    subsets = [("all", np.ones(len(df), bool))]
    if split_nl is None:
        split_nl = "nl_scores" in df.columns
    if split_nl:
        _require(df, ("nl_scores",))
        s = pd.to_numeric(df["nl_scores"], errors="coerce").to_numpy(np.float64)
        subsets += [("nl", s >= NL_THRESHOLDS[0]), ("code", s <= NL_THRESHOLDS[1])]
    rows = []
    for g, gm in groups:
        for s_name, sm in subsets:
            for j, f in enumerate(feats):
                m = gm & sm & np.isfinite(x_all[:, j]) & np.isfinite(y)
                rows.append({"group": g, "subset": s_name, "feature": f, "n": int(m.sum()),
                             **_corr_row(x_all[m, j], y[m], seed)})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------
# plots


def _figure(nrows: int, ncols: int, size: tuple[float, float]):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)  # the Agg backend, without pyplot's global state
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def _save(fig, path: PathLike) -> str:
    from anatomy.io import atomic_path

    with atomic_path(path) as tmp:  # temporary file beside path, then os.replace
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    return str(path)


_LABELS = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "precision": "Precision",
           "recall": "Recall", "f1": "F1", "ece": "ECE"}


def plot_model_performance(metrics_df: pd.DataFrame, path: PathLike,
                           metrics: Sequence[str] = ("pr_auc", "precision", "recall", "ece",
                                                     "f1")) -> str:
    """Bars of each metric per category and aggregate, one bar per model (taxonomic vs
    baseline, or any ``model`` values present), error bars ±std over folds
    (``model_performance_evals.png`` of ``plotting/model_perf_testing.ipynb``). Takes
    ``TaxonomyResult.metrics``; bars show ``mean`` (``value`` where the mean is NaN)."""
    m = metrics_df
    models = list(pd.unique(m["model"]))
    cats = [c for c in (*CATEGORIES, AGGREGATE) if c in set(m["category"])]
    fig, axes = _figure(1, len(metrics), (3.2 * len(metrics), 3.6))
    width = 0.8 / max(len(models), 1)
    pos = np.arange(len(cats))
    for ax, metric in zip(axes[0], metrics, strict=True):
        for k, model in enumerate(models):
            sub = m[(m.metric == metric) & (m.model == model)].set_index("category")
            sub = sub.reindex(cats)
            h = sub["mean"].where(sub["mean"].notna(), sub["value"]).to_numpy(np.float64)
            err = sub["std"].to_numpy(np.float64)
            ax.bar(pos + (k - (len(models) - 1) / 2) * width, np.nan_to_num(h), width,
                   yerr=np.where(np.isfinite(err), err, 0.0), capsize=2, label=model)
        ax.set_xticks(pos)
        ax.set_xticklabels(cats, rotation=30, ha="right")
        ax.set_title(_LABELS.get(metric, metric))
        if metric != "ece":
            ax.set_ylim(0, 1.05)
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=max(len(models), 1), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    return _save(fig, path)


def plot_weights(result: TaxonomyResult, path: PathLike, intercept: bool = False) -> str:
    """Weights (on standardised features) of the baseline and each category's model, one panel
    per model, horizontal bars on a symlog axis, error bars ±std over folds (the weight charts
    and ``model_weights.png`` of ``plotting/model_perf_testing.ipynb``). Constant models show no
    bars."""
    coef, std = result.coefficients, result.coefficients_std
    if not intercept:
        coef, std = coef.drop(index="intercept"), std.drop(index="intercept")
    models = list(coef.columns)
    fig, axes = _figure(1, len(models), (3.4 * len(models), 0.3 * len(coef) + 1.8))
    pos = np.arange(len(coef))
    for ax, model in zip(axes[0], models, strict=True):
        w = coef[model].to_numpy(np.float64)
        e = std[model].to_numpy(np.float64)
        ax.barh(pos, np.nan_to_num(w), xerr=np.where(np.isfinite(e), e, 0.0), capsize=2,
                color=np.where(w >= 0, "tab:blue", "tab:red"))
        ax.set_xscale("symlog", linthresh=0.1)
        ax.axvline(0, color="black", linewidth=0.5)
        ax.set_yticks(pos)
        ax.set_yticklabels(list(coef.index) if ax is axes[0][0] else [])
        ax.set_title(f"{model} (constant)" if model in result.constant else model)
        ax.invert_yaxis()
    fig.tight_layout()
    return _save(fig, path)


def plot_correlations(corr_df: pd.DataFrame, path: PathLike,
                      methods: Sequence[str] = ("pearson", "spearman", "xi"),
                      subset: str = "all") -> str:
    """Correlation of each feature with the target per group (baseline and each category),
    one row of panels per method (``plotting/Correlation_Coefficients.ipynb``'s
    ``{all,code,natural_language}_{pearson,spearman,xi}.png``, here one file per subset)."""
    c = corr_df[corr_df["subset"] == subset] if "subset" in corr_df.columns else corr_df
    groups = list(pd.unique(c["group"]))
    feats = list(pd.unique(c["feature"]))
    fig, axes = _figure(len(methods), len(groups),
                        (3.0 * len(groups), (0.25 * len(feats) + 1.2) * len(methods)))
    pos = np.arange(len(feats))
    for i, method in enumerate(methods):
        for j, g in enumerate(groups):
            ax = axes[i][j]
            vals = c[c.group == g].set_index("feature").reindex(feats)[method]
            v = vals.to_numpy(np.float64)
            ax.barh(pos, np.nan_to_num(v), color=np.where(v >= 0, "tab:blue", "tab:red"))
            ax.axvline(0, color="black", linewidth=0.5)
            ax.set_xlim(-1, 1)
            ax.set_yticks(pos)
            ax.set_yticklabels(feats if j == 0 else [], fontsize=7)
            ax.invert_yaxis()
            ax.set_title(f"{g}: {method}", fontsize=9)
    fig.tight_layout()
    return _save(fig, path)


def plot_category_shares(shares_df: pd.DataFrame, path: PathLike, by: str = "checkpoint"
                         ) -> str:
    """Share of the memorized samples in each category over checkpoints (one line per
    category; Kyle's category-across-scale/time figures), from :func:`category_shares`; a
    table without ``by`` gives one stacked bar."""
    s = shares_df
    fig, axes = _figure(1, 1, (6, 4))
    ax = axes[0][0]
    if by in s.columns:
        keys = list(pd.unique(s[by]))
        pos = np.arange(len(keys))
        for cat in CATEGORIES:
            sub = s[s.category == cat].set_index(by).reindex(keys)
            ax.plot(pos, sub["share"].to_numpy(np.float64), marker="o", label=cat)
        ax.set_xticks(pos)
        ax.set_xticklabels([str(k) for k in keys], rotation=30, ha="right")
        ax.set_xlabel(by)
    else:
        bottom = 0.0
        for cat in CATEGORIES:
            share = float(s.loc[s.category == cat, "share"].fillna(0).sum())
            ax.bar([0], [share], bottom=bottom, label=cat)
            bottom += share
        ax.set_xticks([])
    ax.set_ylim(0, 1)
    ax.set_ylabel("share of memorized samples")
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)
