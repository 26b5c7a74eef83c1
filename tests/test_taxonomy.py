"""Pipeline C's memorization taxonomy (``anatomy.memorization.taxonomy``) on synthetic tables.

The main table has a known generating process (:func:`make_table`): recitation rows are
memorized according to their duplicate count, reconstruction rows more often at *high*
continuation perplexity and recollection rows at *low* perplexity, so per-category weights
matter and one additive model cannot fit both signs. Each test's docstring names the
independent computation it is checked against.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from anatomy.memorization import taxonomy as tx

CONT = list(tx.CONTINUOUS_FEATURES)


def make_table(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """A feature table with the published column names and a planted process (see module
    docstring). Categories are drawn first: 30% recitation (6..299 duplicates), of the rest
    about 25% templated (incrementing or repeating)."""
    rng = np.random.default_rng(seed)
    recite = rng.random(n) < 0.3
    dup = np.where(recite, rng.integers(6, 300, n), rng.integers(1, 6, n))
    templated = ~recite & (rng.random(n) < 0.25)
    inc = templated & (rng.random(n) < 0.5)
    rep = templated & ~inc
    gen = np.exp(rng.normal(1.5, 0.4, n))
    prompt = np.exp(rng.normal(2.0, 0.4, n))
    freqs = np.sort(rng.lognormal(15, 1.0, (n, 5)), axis=1)
    g = (gen - gen.mean()) / gen.std()
    logit = np.where(recite, 2.0 * (np.log(dup) - np.log(40)),
                     np.where(templated, 3.0 * g, -3.0 * g - 0.5))
    mem = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({
        "sequence_id": np.arange(n) * 7 + 3,
        "memorization_score": np.where(mem, 1.0, rng.integers(0, 32, n) / 32),
        "sequence_duplicates": dup,
        "is_incrementing": inc,
        "is_repeating": rep,
        "max_frequency": freqs[:, 4], "avg_frequency": freqs.mean(axis=1),
        "min_frequency": freqs[:, 0], "median_frequency": freqs[:, 2],
        "p25_frequency": freqs[:, 1], "p75_frequency": freqs[:, 3],
        "prompt_perplexity": prompt, "generation_perplexity": gen,
        "sequence_perplexity": prompt * gen,
        "0_8_templates": rng.poisson(2, n), "0_8_snowclones": rng.poisson(3, n),
        "huffman_coding_length": rng.uniform(3, 5, n),
        "nl_scores": rng.uniform(0.3, 0.7, n),
    })


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    return make_table()


@pytest.fixture(scope="module")
def result(table) -> tx.TaxonomyResult:
    return tx.fit_taxonomy(table, folds=4)


def _independent_probs(df: pd.DataFrame, res: tx.TaxonomyResult, seed: int = 1024):
    """Scaler on the training rows' continuous features, is_templating appended unscaled, one
    LR (published settings) on all training rows and one per category; test probabilities."""
    train, test = df.loc[res.train_index], df.loc[res.test_index]
    scaler = StandardScaler().fit(train[CONT])

    def design(part):
        templ = (part.is_incrementing | part.is_repeating).astype(int).to_numpy()[:, None]
        return np.hstack([scaler.transform(part[CONT]), templ])

    def lr():
        return LogisticRegression(C=1.0, class_weight="balanced", max_iter=10_000,
                                  random_state=seed)

    x_tr, x_te = design(train), design(test)
    y_tr = (train.memorization_score == 1.0).to_numpy()
    y_te = (test.memorization_score == 1.0).to_numpy()
    base = lr().fit(x_tr, y_tr).predict_proba(x_te)[:, 1]
    c_tr = tx.categorize(train).to_numpy()
    c_te = tx.categorize(test).to_numpy()
    tax = np.empty(len(test))
    for c in tx.CATEGORIES:
        m = c_tr == c
        tax[c_te == c] = lr().fit(x_tr[m], y_tr[m]).predict_proba(x_te[c_te == c])[:, 1]
    return y_te, c_te, base, tax


# ---------------------------------------------------------------------------------------
# taxonomy


def test_feature_lists_as_published():
    """Against model_parameters.py: 13 continuous features plus the derived is_templating."""
    assert len(tx.CONTINUOUS_FEATURES) == 13
    assert tx.BINARY_FEATURES == ("is_templating",)
    assert tx.CONTINUOUS_FEATURES[0] == "sequence_duplicates"
    assert {"0_8_templates", "0_8_snowclones", "huffman_coding_length"} <= set(CONT)
    assert len(tx.SEARCH_FEATURES) == 10
    assert len(tx._search_rules(tx.SEARCH_FEATURES, tx.SEARCH_QUANTILES)) == 30 * 27


def test_categorize_rules_and_threshold_edge():
    """Against the rules written out by hand: > 5 duplicates is recitation (5 is not, 6 is),
    then incrementing or repeating is reconstruction, else recollection."""
    df = pd.DataFrame({
        "sequence_duplicates": [5, 6, 5, 1, 100, np.nan, 9, 10],
        "is_incrementing": [False, False, True, False, True, False, False, False],
        "is_repeating": [False, False, False, True, True, None, False, False],
    })
    got = tx.categorize(df).tolist()
    assert got == ["recollection", "recitation", "reconstruction", "reconstruction",
                   "recitation", "recollection", "recitation", "recitation"]
    assert tx.categorize(df, duplicates_threshold=9).tolist()[-2:] == ["recollection",
                                                                        "recitation"]
    only_flag = pd.DataFrame({"sequence_duplicates": [1, 7], "is_templating": [1, 1]})
    assert tx.categorize(only_flag).tolist() == ["reconstruction", "recitation"]
    assert tx.memorized(pd.DataFrame({"memorization_score": [1.0, 31 / 32, 0.0]})).tolist() \
        == [True, False, False]


def test_category_shares_counted_by_hand():
    """Against counts made by hand on 2 checkpoints x 6 rows."""
    df = pd.DataFrame({
        "checkpoint": [2000] * 6 + [1000] * 6,
        "sequence_duplicates": [10, 10, 1, 1, 1, 1] * 2,
        "is_incrementing": [False, False, True, False, False, False] * 2,
        "is_repeating": [False] * 12,
        "memorization_score": [1, 1, 1, 1, 0.5, 0.0, 1, 0.5, 0.5, 1, 1, 1],
    })
    s = tx.category_shares(df)
    assert list(s.checkpoint.unique()) == [1000, 2000]  # numeric checkpoints sorted
    late = s[s.checkpoint == 2000].set_index("category")
    assert late["count"].tolist() == [2, 1, 1]
    assert late["share"].tolist() == pytest.approx([0.5, 0.25, 0.25])
    assert late["memorized_fraction"].iloc[0] == pytest.approx(4 / 6)
    early = s[s.checkpoint == 1000].set_index("category")
    assert early["count"].tolist() == [1, 0, 3]
    assert early["n_memorized"].iloc[0] == 4 and early["n_samples"].iloc[0] == 6
    single = tx.category_shares(df.drop(columns="checkpoint"))
    assert "checkpoint" not in single and single["count"].tolist() == [3, 1, 4]
    assert single["share"].sum() == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------
# metrics


def test_ece_against_hand_computation():
    """Hand computation, 10 bins (lower, upper]. probs .92 .75 .35 .58 .52, labels 1 0 0 1 0:
    top-label confidences .92 .75 .65 .58 .52, correct 1 0 1 1 0; bins (.9,1]: |1-.92|,
    (.7,.8]: |0-.75|, (.6,.7]: |1-.65|, (.5,.6]: |.5-.55| x 2 rows; ECE = (.08 + .75 + .35 +
    .1) / 5 = .256. probs .3 .7, labels 1 1: top-label one bin, |.5 - .7| = .2; positive-class
    bins (.2,.3] and (.6,.7]: (|1-.3| + |1-.7|) / 2 = .5."""
    p = [0.92, 0.75, 0.35, 0.58, 0.52]
    y = [1, 0, 0, 1, 0]
    assert tx.expected_calibration_error(y, p) == pytest.approx(0.256)
    assert tx.expected_calibration_error([1, 1], [0.3, 0.7]) == pytest.approx(0.2)
    assert tx.expected_calibration_error([1, 1], [0.3, 0.7], top_label=False) \
        == pytest.approx(0.5)
    # 5 bins (published aggregate default): (.5,.6] and (.6,.7] merge into (.4,.6] / (.6,.8]
    # -> (.6,.8]: .75 and .65, acc .5, conf .7; (.8,1]: .92; (.4,.6]: .58 .52
    want5 = (abs(1 - 0.92) + 2 * abs(0.5 - 0.7) + 2 * abs(0.5 - 0.55)) / 5
    assert tx.expected_calibration_error(y, p, n_bins=5) == pytest.approx(want5)
    assert math.isnan(tx.expected_calibration_error([], []))


def test_undefined_metrics_are_nan():
    """Against the definitions: no second class, no positive, no predicted positive give NaN
    (never an exception), and defined ones match sklearn."""
    one = tx.binary_metrics([0, 0, 0], [0.2, 0.7, 0.1])
    assert math.isnan(one["roc_auc"]) and math.isnan(one["pr_auc"])
    assert math.isnan(one["recall"]) and one["precision"] == 0.0 and one["f1"] == 0.0
    none_pred = tx.binary_metrics([1, 0], [0.2, 0.1])
    assert math.isnan(none_pred["precision"]) and none_pred["recall"] == 0.0
    assert all(math.isnan(v) for v in tx.binary_metrics([], []).values())
    y, p = [0, 1, 1, 0, 1], [0.1, 0.8, 0.4, 0.6, 0.9]
    m = tx.binary_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert (m["precision"], m["recall"], m["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))


# ---------------------------------------------------------------------------------------
# baseline vs taxonomic model


def test_metrics_come_from_probabilities(table, result):
    """Against an independent refit in this test (scaler on the training rows, sklearn LRs,
    roc_auc_score / average_precision_score of predict_proba on the test split); the hard 0/1
    label AUC differs, and ``hard_label_auc=True`` reproduces it."""
    y, cats, base, tax = _independent_probs(table, result)
    np.testing.assert_allclose(result.test.baseline_prob, base, atol=1e-6)
    np.testing.assert_allclose(result.test.taxonomic_prob, tax, atol=1e-6)
    for model, p in (("baseline", base), ("taxonomic", tax)):
        got = result.metric(model, "aggregate", "roc_auc")
        assert got == pytest.approx(roc_auc_score(y, p), abs=1e-9)
        assert result.metric(model, "aggregate", "pr_auc") == pytest.approx(
            average_precision_score(y, p), abs=1e-9)
        assert abs(got - roc_auc_score(y, p > 0.5)) > 0.01
    m = cats == "recollection"
    assert result.metric("taxonomic", "recollection", "roc_auc") == pytest.approx(
        roc_auc_score(y[m], tax[m]), abs=1e-9)
    hard = tx.fit_taxonomy(table, folds=0, hard_label_auc=True)
    assert hard.metric("baseline", "aggregate", "roc_auc") == pytest.approx(
        roc_auc_score(y, base > 0.5), abs=1e-9)


def test_scaler_fitted_on_training_rows_only(table, result):
    """Against the column means of the training rows (and not of all rows); the published
    scaling (``published_scaling=True``) matches the all-row means."""
    train_means = table.loc[result.train_index, CONT].mean().to_numpy()
    np.testing.assert_allclose(result.scaler.mean_, train_means, rtol=1e-10)
    assert not np.allclose(result.scaler.mean_, table[CONT].mean().to_numpy(), rtol=1e-6)
    assert len(result.train_index) + len(result.test_index) == len(table)
    assert len(result.test_index) == 600 and result.stratify == "label+category"
    pub = tx.fit_taxonomy(table, folds=0, published_scaling=True)
    np.testing.assert_allclose(pub.scaler.mean_, table[CONT].mean().to_numpy(), rtol=1e-10)
    assert pub.metrics["mean"].isna().all() and (pub.metrics.n_folds == 0).all()


def test_taxonomic_beats_baseline_when_weights_differ(result):
    """The planted process gives reconstruction and recollection opposite perplexity signs,
    which one additive LR cannot fit: the taxonomic model's aggregate ROC AUC and F1 (fold
    means) beat the baseline's, and its fitted weights recover the planted signs."""
    for metric in ("roc_auc", "f1", "pr_auc"):
        assert result.metric("taxonomic", "aggregate", metric, "mean") > \
            result.metric("baseline", "aggregate", metric, "mean") + 0.02
    assert result.metric("taxonomic", "reconstruction", "roc_auc") > \
        result.metric("baseline", "reconstruction", "roc_auc") + 0.2
    w = result.coefficients.loc["generation_perplexity"]
    assert w["reconstruction"] > 0 > w["recollection"]
    assert result.coefficients.loc["sequence_duplicates", "recitation"] > 0
    m = result.metrics
    assert set(m.metric) == set(tx.METRICS) and len(m) == 2 * 4 * 6
    assert (m.n_folds == 4).all() and (m["std"] > 0).any()
    # is_templating is constant within recitation and recollection: weight 0 in every fold
    assert (result.coefficients_std.drop(index="is_templating").to_numpy() > 0).all()


def test_single_class_category_falls_back_to_constant_prior(table):
    """Against the rule: reconstruction rows are all made non-memorized, so that category's
    model is a constant 0 (reported), its ROC AUC is NaN, and nothing raises."""
    df = table.copy()
    df.loc[tx.categorize(df) == "reconstruction", "memorization_score"] = 0.5
    res = tx.fit_taxonomy(df, folds=2)
    assert res.constant == {"reconstruction": 0.0}
    assert res.constant_folds["reconstruction"] == 2
    assert res.models["reconstruction"] is None
    rec = res.test[res.test.category == "reconstruction"]
    assert len(rec) > 0 and (rec.taxonomic_prob == 0.0).all()
    assert math.isnan(res.metric("taxonomic", "reconstruction", "roc_auc"))
    assert res.coefficients["reconstruction"].isna().all()
    assert np.isfinite(res.metric("taxonomic", "aggregate", "roc_auc"))


def test_determinism_and_options(table, result):
    """Two runs with the same seed give identical metrics and weights; the published
    test-subsample resampling leaves the full-fit values unchanged; ``predict`` reproduces
    the test probabilities."""
    again = tx.fit_taxonomy(table, folds=4)
    pd.testing.assert_frame_equal(result.metrics, again.metrics)
    pd.testing.assert_frame_equal(result.coefficients, again.coefficients)
    sub = tx.fit_taxonomy(table, folds=5, resample="test")
    np.testing.assert_allclose(sub.metrics.value, result.metrics.value, equal_nan=True)
    assert (sub.metrics.n_folds > 0).all()
    pred = result.predict(table.loc[result.test_index].drop(columns="memorization_score"))
    np.testing.assert_allclose(pred.taxonomic_prob, result.test.taxonomic_prob)
    only = np.arange(len(table)) < 300  # e.g. the published memories set: training only
    split = tx.fit_taxonomy(table, folds=0, train_only=only)
    assert set(table.index[only]) <= set(split.train_index)
    assert len(split.test_index) == 540
    several = table.assign(checkpoint=np.arange(len(table)) % 2)
    with pytest.raises(ValueError, match="several checkpoints"):
        tx.fit_taxonomy(several, folds=0)


# ---------------------------------------------------------------------------------------
# correlations


def test_chatterjee_xi_hand_examples():
    """Hand computation. x = 1..5, y = 2 1 4 3 5: r = 2 1 4 3 5, Σ|Δr| = 7, ξ = 1 − 21/24.
    Ties in y: x = 1..4, y = 0 1 0 1: r = 2 4 2 4, l = 4 2 4 2, ξ = 1 − 4·6 / (2·8) = −0.5."""
    assert tx.chatterjee_xi([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.125)
    assert tx.chatterjee_xi([4, 2, 1, 3, 5], [3, 1, 2, 4, 5]) == pytest.approx(0.125)
    assert tx.chatterjee_xi([1, 2, 3, 4], [0, 1, 0, 1]) == pytest.approx(-0.5)
    assert math.isnan(tx.chatterjee_xi([1, 2, 3], [1, 1, 1]))
    tied = ([0, 0, 0, 1, 1, 1], [3, 1, 2, 6, 4, 5])
    assert tx.chatterjee_xi(*tied, seed=3) == tx.chatterjee_xi(*tied, seed=3)


def test_chatterjee_xi_limits():
    """ξ is near 1 for y a function of x, monotone or not (Spearman near 0 for the
    non-monotone one), near 0 for independent y, and its p-value is small only then."""
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 1, 2000)
    assert tx.chatterjee_xi(x, x ** 3) > 0.99
    wave = np.cos(2 * np.pi * x)  # symmetric about 0.5
    assert tx.chatterjee_xi(x, wave) > 0.97
    assert abs(stats.spearmanr(x, wave).statistic) < 0.1
    noise = rng.normal(size=2000)
    assert abs(tx.chatterjee_xi(x, noise)) < 0.05
    assert tx.chatterjee_xi_test(x, noise)[1] > 0.01
    assert tx.chatterjee_xi_test(x, wave)[1] < 1e-10


def test_correlations_frame(table):
    """Against scipy's pearsonr and a direct chatterjee_xi call on the same rows; a feature
    constant within a category is NaN; the code/NL split uses 0.525 / 0.4."""
    c = tx.correlations(table, by_category=True, target="memorization_score", split_nl=False)
    assert len(c) == 4 * len(tx.FEATURES)
    row = c[(c.group == "recollection") & (c.feature == "generation_perplexity")].iloc[0]
    m = tx.categorize(table) == "recollection"
    sub = table[m]
    assert row.pearson == pytest.approx(
        stats.pearsonr(sub.generation_perplexity, sub.memorization_score).statistic)
    assert row.xi == pytest.approx(
        tx.chatterjee_xi(sub.generation_perplexity, sub.memorization_score))
    assert row.spearman < -0.3 and row.n == m.sum()
    templ = c[(c.group == "reconstruction") & (c.feature == "is_templating")].iloc[0]
    assert math.isnan(templ.pearson) and math.isnan(templ.xi)
    split = tx.correlations(table, ["generation_perplexity"], target="memorized",
                            split_nl=True)
    nl = split[(split.group == "baseline") & (split.subset == "nl")].iloc[0]
    assert nl.n == (table.nl_scores >= 0.525).sum()


def test_correlations_default_to_the_published_label_and_subsets(table):
    """Published default (model_training.py calculate_all_correlation_coefficients): the 0/1
    memorized label, every group split into all / nl (>= 0.525) / code (<= 0.4) when the
    table has nl_scores. Checked with scipy on rows selected by hand."""
    c = tx.correlations(table)
    assert set(c.subset) == {"all", "nl", "code"}
    assert len(c) == 4 * 3 * len(tx.FEATURES)
    label = (table.memorization_score == 1.0).astype(float)
    cats = tx.categorize(table)
    for group, subset in (("baseline", "all"), ("recollection", "code"),
                          ("recitation", "nl")):
        m = np.ones(len(table), bool) if group == "baseline" else (cats == group).to_numpy().copy()
        if subset == "nl":
            m &= (table.nl_scores >= 0.525).to_numpy()
        elif subset == "code":
            m &= (table.nl_scores <= 0.4).to_numpy()
        row = c[(c.group == group) & (c.subset == subset)
                & (c.feature == "sequence_duplicates")].iloc[0]
        assert row.n == m.sum()
        x, y = table.sequence_duplicates[m], label[m]
        if x.nunique() > 1 and y.nunique() > 1:
            assert row.pearson == pytest.approx(stats.pearsonr(x, y).statistic)
            assert row.spearman == pytest.approx(stats.spearmanr(x, y).statistic)
    assert "nl" not in set(tx.correlations(table.drop(columns="nl_scores")).subset)


# ---------------------------------------------------------------------------------------
# partition search


def planted_rule_table(n: int = 1600, seed: int = 5) -> pd.DataFrame:
    """Memorization generated by the rule "class 1 if A >= 2, else class 2 if B >= 1, else
    class 3" with logits 4X, −4X and 4Z. A and B take 0, 1, 2 with probabilities .35, .3, .35
    independently of the label, so among the memorized rows the 0.75 quantile of A falls on 2
    and the median of B on 1 (CDF .35, .65: margins of 10 points or more)."""
    rng = np.random.default_rng(seed)
    a = rng.choice(3, n, p=[0.35, 0.3, 0.35])
    b = rng.choice(3, n, p=[0.35, 0.3, 0.35])
    x, z = rng.normal(size=n), rng.normal(size=n)
    logit = np.where(a >= 2, 4 * x, np.where(b >= 1, -4 * x, 4 * z))
    mem = rng.random(n) < 1 / (1 + np.exp(-logit))
    return pd.DataFrame({"A": a, "B": b, "X": x, "Z": z,
                         "memorization_score": np.where(mem, 1.0, 0.5),
                         "sequence_duplicates": 1, "is_incrementing": False,
                         "is_repeating": False})


def test_partition_search_finds_planted_rule():
    """On data generated by a known rule, the top rule is that rule: A then B, with
    thresholds on the planted cuts (A and B are integers, so any threshold in (1, 2] resp.
    (0, 1] gives the same partition), ahead of every other partition by a clear F1 margin and
    well ahead of the baseline."""
    df = planted_rule_table()
    out = tx.partition_search(df, ["A", "B", "X"], model_features=["A", "B", "X", "Z"])
    assert len(out) == 9 * 6
    planted = ((out.feature_1 == "A") & (out.feature_2 == "B")
               & out.threshold_1.between(1, 2, inclusive="right")
               & out.threshold_2.between(0, 1, inclusive="right"))
    best = out.iloc[0]
    assert planted.iloc[0] and (best.quantile_1, best.quantile_2) == (0.75, 0.5)
    assert best.eligible and best.constant_classes == ""
    assert best.f1 > out[~planted].f1.max() + 0.02
    assert best.f1 > out.attrs["baseline"]["f1"] + 0.1
    assert out["rank"].tolist() == list(range(1, len(out) + 1))
    f1 = out.f1.to_numpy()
    assert (np.diff(f1[np.isfinite(f1)]) <= 0).all()
    again = tx.partition_search(df, ["A", "B", "X"], model_features=["A", "B", "X", "Z"])
    pd.testing.assert_frame_equal(out, again)


def test_partition_search_degenerate_rules(table):
    """By the rule definitions: is_templating's 0.25 quantile over memorized rows is 0, so
    "is_templating >= 0" puts every row in class 1 and leaves classes 2 and 3 without
    training rows: constant classes, not eligible (the published check), and with
    ``skip_ineligible`` NaN metrics ranked last."""
    args = (table, ["is_templating", "sequence_duplicates"], (0.25, 0.75))
    out = tx.partition_search(*args, model_features=["sequence_duplicates",
                                                     "generation_perplexity"])
    assert len(out) == 2 * 2 * 2
    deg = out[(out.feature_1 == "is_templating") & (out.quantile_1 == 0.25)]
    assert (deg.threshold_1 == 0).all() and (deg.n_train_1 == len(table) * 4 // 5).all()
    assert (deg.constant_classes == "2,3").all() and not deg.eligible.any()
    skipped = tx.partition_search(*args, model_features=["sequence_duplicates",
                                                         "generation_perplexity"],
                                  skip_ineligible=True)
    n_bad = int((~skipped.eligible).sum())
    assert n_bad >= 2 and skipped.f1.iloc[-n_bad:].isna().all()
    assert skipped.f1.iloc[:-n_bad].notna().all()


# ---------------------------------------------------------------------------------------
# plots


def test_plots_write_png_atomically(tmp_path, table):
    """Each plot writes a PNG (checked by its signature), returns its path and leaves no
    temporary file behind (the write goes through a temporary file and os.replace). Small
    inputs keep the rendering fast."""
    feats = ["sequence_duplicates", "generation_perplexity", "is_templating"]
    small = tx.fit_taxonomy(table, feats, folds=2)
    corr = tx.correlations(table, feats[:2])
    shares = tx.category_shares(table.assign(checkpoint=np.arange(len(table)) % 3 * 1000))
    paths = [
        tx.plot_model_performance(small.metrics, tmp_path / "perf.png", ("f1", "ece")),
        tx.plot_weights(small, tmp_path / "weights.png"),
        tx.plot_correlations(corr, tmp_path / "corr.png", methods=("xi",)),
        tx.plot_category_shares(shares, tmp_path / "shares.png"),
    ]
    for p in paths:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(x.name for x in tmp_path.iterdir()) == sorted(
        ["perf.png", "weights.png", "corr.png", "shares.png"])


# ---------------------------------------------------------------------------------------
# published metric conventions, the two sample sets, constant models


def _published_ece(probs: np.ndarray, labels: np.ndarray, M: int = 5) -> float:
    """model_utils.py expected_calibration_error, transcribed: two-column probabilities,
    top-label confidence, bins (lower, upper]."""
    samples = np.stack([1 - probs, probs], axis=1)
    conf = samples.max(1)
    acc = samples.argmax(1) == labels
    ece = 0.0
    edges = np.linspace(0, 1, M + 1)
    for lo, hi in zip(edges[:-1], edges[1:], strict=True):
        b = (conf > lo) & (conf <= hi)
        if b.mean() > 0:
            ece += abs(conf[b].mean() - acc[b].mean()) * b.mean()
    return ece


def published_aggregation(t: pd.DataFrame, folds: int, seed: int = tx.SEED) -> dict:
    """model_training.py's aggregation loop (84ab8c0, lines 770-800) written out with
    sklearn's scorers on test predictions ``t`` (label, category, taxonomic_prob,
    baseline_prob), and the notebook's F1 of mean precision and recall with its propagated
    error (set_f1): {(model, category, metric): (mean, std)}."""
    from sklearn.metrics import precision_score, recall_score
    from sklearn.model_selection import KFold

    y = t.label.to_numpy().astype(int)
    out = {}
    for model, col in (("taxonomic", "taxonomic_prob"), ("baseline", "baseline_prob")):
        for cat in (*tx.CATEGORIES, tx.AGGREGATE):
            rows = np.arange(len(t)) if cat == tx.AGGREGATE else np.flatnonzero(
                t.category.to_numpy() == cat)
            if len(rows) < folds:
                continue
            got: dict[str, list] = {k: [] for k in ("roc_auc", "pr_auc", "precision",
                                                      "recall", "ece")}
            for sub, _ in KFold(folds, shuffle=True, random_state=seed).split(rows):
                r = rows[sub]
                if len(np.unique(y[r])) == 1:
                    continue
                p = t[col].to_numpy()[r]
                pred = (p > 0.5).astype(int)
                got["roc_auc"].append(roc_auc_score(y[r], pred))
                got["pr_auc"].append(average_precision_score(y[r], pred))
                got["precision"].append(precision_score(y[r], pred, zero_division=0))
                got["recall"].append(recall_score(y[r], pred, zero_division=0))
                got["ece"].append(_published_ece(p, y[r]))
            if not got["ece"]:
                continue
            for k, v in got.items():
                out[(model, cat, k)] = (np.mean(v), np.std(v))
            P, R = np.mean(got["precision"]), np.mean(got["recall"])
            sp, sr = np.std(got["precision"]), np.std(got["recall"])
            if P + R == 0:  # pandas' 0/0 in the notebook: NaN
                out[(model, cat, "f1")] = (math.nan, math.nan)
            else:
                out[(model, cat, "f1")] = (2 * P * R / (P + R), 2 / (P + R) ** 2 * math.sqrt(
                    R ** 4 * sp ** 2 + P ** 4 * sr ** 2))
    return out


def assert_published_metrics(metrics: pd.DataFrame, t: pd.DataFrame, folds: int) -> int:
    """Every (model, category, metric) the transcription defines equals ``metrics``' mean and
    std; returns how many were compared."""
    want = published_aggregation(t, folds)
    for (model, cat, k), (mean, std) in want.items():
        row = metrics[(metrics.model == model) & (metrics.category == cat)
                      & (metrics.metric == k)].iloc[0]
        assert row["mean"] == pytest.approx(mean, abs=1e-12, nan_ok=True), (model, cat, k)
        assert row["std"] == pytest.approx(std, abs=1e-12, nan_ok=True), (model, cat, k)
    return len(want)


def test_published_metric_conventions_match_a_transcription(table):
    """Independent computation: :func:`published_aggregation` on the full fit's test
    predictions."""
    folds = 7
    res = tx.fit_taxonomy(table, folds=folds, conventions=tx.PUBLISHED)
    assert assert_published_metrics(res.metrics, res.test, folds) == 2 * 4 * 6
    assert res.settings["conventions"] == "published"
    assert "0/1 predictions" in tx.PUBLISHED.describe(folds)
    assert "probabilities" in tx.OURS.describe(folds)


def test_memories_rows_train_only_and_unmemorized_ones_left_out(table):
    """The published use of ds_type (model_training.py lines 1068-1090): "memories" rows join
    training only, never test; here the unmemorized ones are left out. Counted by hand."""
    df = table.copy()
    df["ds_type"] = np.where(np.arange(len(df)) < 2400, "representative", "memories")
    rows = tx.model_rows(df)
    extra = np.arange(len(df)) >= 2400
    mem = (df.memorization_score == 1.0).to_numpy()
    assert rows.used.tolist() == (~extra | mem).tolist()
    assert rows.n_memories == 600 and rows.n_memories_memorized == int((extra & mem).sum())
    used = df[rows.used]
    res = tx.fit_taxonomy(used, folds=0, train_only=rows.train_only)
    test_ids = set(used.loc[res.test_index, "ds_type"])
    assert test_ids == {"representative"}
    assert set(used.index[rows.train_only]) <= set(res.train_index)
    assert len(res.test_index) == round(0.2 * 2400)
    assert "to training only" in rows.describe()
    plain = tx.model_rows(table)
    assert plain.used.all() and not plain.train_only.any() and not plain.has_ds_type
    with pytest.raises(ValueError, match="ds_type"):
        tx.model_rows(df.assign(ds_type="other"))


def test_constant_baseline_is_reported(table):
    """With no memorized row in training every model, the baseline included, is a constant
    (the training prior 0)."""
    df = table.assign(memorization_score=0.5)
    df.loc[df.index[:3], "memorization_score"] = 1.0  # too few to reach every split
    res = tx.fit_taxonomy(df.iloc[3:], folds=0)
    assert res.constant == {"baseline": 0.0, "recitation": 0.0, "reconstruction": 0.0,
                            "recollection": 0.0}


def test_report_without_memorized_samples_warns_and_prints_no_metric_tables(tmp_path):
    """A table with no memorization_score of 1.0: the report's first line warns, every model is
    listed as constant (the baseline too), and no table of nan metrics is printed."""
    from anatomy.memorization.pipeline import run_taxonomy
    from anatomy.memorization.table import write_table

    df = make_table(400, seed=3).assign(memorization_score=0.5)
    path = tmp_path / "combined.parquet"
    write_table(path, {c: df[c].to_numpy() for c in df.columns})
    report = run_taxonomy(path, tmp_path / "tax", folds=3)
    assert report.startswith("**WARNING: no memorized sample")
    assert "nan" not in report and "+- 0.000" not in report
    assert "baseline (0.000)" in report and "recollection (0.000)" in report
    assert "Metric conventions: ours" in report
