"""Mixture evaluation (specs, summary formats, metrics, baselines, report, script) and the
Min-K%++ membership-rate estimators (GMM vs calibrated) on synthetic scores."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anatomy.io import InputError, write_json
from anatomy.mixture import evaluate as ev
from anatomy.mixture import gmm

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "bench" / "specs").glob("*.yaml"))


# ---------------------------------------------------------------------------------------
# specs


def test_specs_exist():
    names = {p.stem for p in SPECS}
    assert {"pythia", "olmo1b", "llama1", "starcoder", "slimpajama"} <= names


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_every_spec_is_a_valid_mixture(path):
    truth = ev.load_spec(path)
    assert all(v >= 0 for v in truth.values())
    assert math.isclose(sum(truth.values()), 1.0, abs_tol=1e-12)
    keys = {ev.category_key(c) for c in truth}
    assert keys in (set(ev.CATEGORIES_7), set(ev.CATEGORIES_6))


def test_spec_values_match_reference_note():
    """Shares transcribed in shared/reference/mixture.md section 4 (percent, 2 decimals)."""
    pct = {s: {c: round(100 * v, 2) for c, v in ev.load_spec(ROOT / f"bench/specs/{s}.yaml")
               .items()} for s in ("pythia", "llama1", "slimpajama")}
    assert pct["pythia"] == {"commoncrawl": 42.41, "c4": 0.0, "github": 7.59,
                             "wikipedia": 1.53, "books": 15.0, "arxiv": 27.11,
                             "stackexchange": 6.37}
    assert pct["llama1"]["stackexchange"] == 2.0 and pct["llama1"]["commoncrawl"] == 67.0
    assert pct["slimpajama"] == {"commoncrawl": 52.2, "c4": 26.7, "github": 5.2,
                                 "wikipedia": 3.8, "books": 4.2, "arxiv": 4.6,
                                 "stackexchange": 3.3}
    olmo = ev.load_spec(ROOT / "bench/specs/olmo1b.yaml")
    for c, v in {"commoncrawl": 74.6, "c4": 6.5, "github": 13.4, "wikipedia": 0.1,
                 "books": 0.2, "arxiv": 2.3, "stackexchange": 2.9}.items():
        assert abs(100 * olmo[c] - v) < 0.06, c


def test_trivial_baselines_reproduce_reference_table():
    """mixture.md section 4.6 (accuracy = 1 - L1/2, SlimPajama as the pool)."""
    pool = ev.load_spec(ROOT / "bench/specs/slimpajama.yaml")
    expect = {  # spec: (uniform 7, uniform 6, pool 7, pool 6, all-web 6)
        "olmo1b": (0.397, 0.356, 0.694, 0.896, 0.811),
        "pythia": (0.583, 0.638, 0.612, 0.612, 0.424),
    }
    for spec, (u7, u6, p7, p6, web) in expect.items():
        truth = ev.load_spec(ROOT / f"bench/specs/{spec}.yaml")
        r7 = {r["name"]: r["accuracy"] for r in ev.compare({}, truth, pool=pool, merge=False)}
        r6 = {r["name"]: r["accuracy"] for r in ev.compare({}, truth, pool=pool, merge=True)}
        assert r7["uniform"] == pytest.approx(u7, abs=0.0015)
        assert r6["uniform"] == pytest.approx(u6, abs=0.0015)
        assert r7["pool_priors"] == pytest.approx(p7, abs=0.0015)
        assert r6["pool_priors"] == pytest.approx(p6, abs=0.0015)
        assert r6["pool_largest"] == pytest.approx(web, abs=0.0015)  # largest = web
    # the note's LLaMA figures (0.846 / 0.964) were computed with the published spec's
    # StackExchange = 2.5 (sum 101); reproduce them with that spec
    llama_published = {"commoncrawl": 67, "c4": 15, "github": 4.5, "wikipedia": 4.5,
                       "books": 4.5, "arxiv": 2.5, "stackexchange": 2.5}
    t = {c: v / 101 for c, v in llama_published.items()}
    acc = lambda m: next(r["accuracy"] for r in ev.compare({}, t, pool=pool, merge=m)
                         if r["name"] == "pool_priors")
    assert acc(False) == pytest.approx(0.846, abs=0.0015)
    assert acc(True) == pytest.approx(0.964, abs=0.0015)


@pytest.mark.parametrize("body, problem", [
    ("name: x\n", "category_weights"),
    ("category_weights: [1, 2]\n", "mapping"),
    ("category_weights: {a: 1, b: -2}\n", "negative"),
    ("category_weights: {a: 1, b: two}\n", "not a finite number"),
    ("category_weights: {a: 0, b: 0}\n", "sum to zero"),
    ("category_weights: {GitHub: 1, github: 2}\n", "clash"),
    ("categories: [a, c]\ncategory_weights: {a: 1, b: 2}\n", "exactly"),
    ("category_weights: {a: 1\n", "invalid YAML"),
])
def test_bad_specs_raise_input_error(tmp_path, body, problem):
    p = tmp_path / "spec.yaml"
    p.write_text(body)
    with pytest.raises(InputError, match=problem) as e:
        ev.load_spec(p)
    assert e.value.path == str(p)


def test_miniworld_truth_json_is_a_spec(tmp_path):
    p = tmp_path / "truth.json"
    write_json(p, {"mixture": {"code": 0.6, "docs": 0.4}, "model": {"n_params": 1}})
    assert ev.load_spec(p) == pytest.approx({"code": 0.6, "docs": 0.4})


# ---------------------------------------------------------------------------------------
# metrics


def test_metrics_by_hand():
    t = np.array([0.5, 0.3, 0.2, 0.0])
    e = np.array([0.4, 0.4, 0.15, 0.05])
    m = ev.metrics(t, e, ci_lo=np.array([0.45, 0.2, 0.1, 0.0]),
                   ci_hi=np.array([0.6, 0.35, 0.15, 0.1]), tol=0.05)
    assert m["l1"] == pytest.approx(0.3)
    assert m["accuracy"] == pytest.approx(0.85)
    assert m["l2"] == pytest.approx(math.sqrt(0.01 + 0.01 + 0.0025 + 0.0025))
    eps = 1e-10
    kl = sum(a * math.log((a + eps) / (b + eps)) for a, b in zip(t, e, strict=True))
    assert m["kl"] == pytest.approx(kl)
    assert m["max_abs"] == pytest.approx(0.1) and m["mean_abs"] == pytest.approx(0.075)
    assert m["acc_tol"] == pytest.approx(0.5)  # |err| = .1 .1 .05 .05 -> two within 0.05
    assert m["coverage"] == pytest.approx(0.75)  # 0.2 is outside [0.1, 0.15]
    assert m["ci_width"] == pytest.approx((0.15 + 0.15 + 0.05 + 0.1) / 4)
    assert ev.metrics(t, e)["coverage"] is None
    perfect = ev.metrics(t, t)
    assert perfect["accuracy"] == 1.0 and perfect["kl"] == 0.0 and perfect["acc_tol"] == 1.0


# ---------------------------------------------------------------------------------------
# summary formats and alignment

CATS7 = ["CommonCrawl", "C4", "GitHub", "Wikipedia", "Books", "Arxiv", "StackExchange"]
TRUTH = {"commoncrawl": 0.5, "c4": 0.2, "github": 0.1, "wikipedia": 0.05, "books": 0.05,
         "arxiv": 0.05, "stackexchange": 0.05}
EST = [0.45, 0.25, 0.1, 0.05, 0.05, 0.06, 0.04]


def _write(tmp_path, name, obj) -> Path:
    d = tmp_path / name
    write_json(d / "summary.json", obj)
    return d


def test_load_all_three_formats(tmp_path):
    ours = _write(tmp_path, "ours", {"priors": {
        c.lower(): {"point": v, "mean": v + 0.001, "ci_lo": v - 0.01, "ci_hi": v + 0.01}
        for c, v in zip(CATS7, EST, strict=True)}})
    published = _write(tmp_path, "published", {"categories": CATS7, "priors": {
        "point": EST, "mean": [v + 0.001 for v in EST], "ci_lo": [v - 0.01 for v in EST],
        "ci_hi": [v + 0.01 for v in EST]}, "pbar": EST})
    minkpp = _write(tmp_path, "minkpp", {"categories": CATS7,
                                         "global_mixture_over_sampled_pool": EST})
    a, b, c = (ev.load_priors(p) for p in (ours, published, minkpp))
    assert (a.fmt, b.fmt, c.fmt) == ("ours", "labelshift", "minkpp")
    assert a.name == "ours" and list(a.values.values()) == EST
    assert list(b.values.values()) == EST and b.ci_lo["Books"] == pytest.approx(0.04)
    assert c.ci_lo is None and c.values["StackExchange"] == 0.04
    assert ev.load_priors(published, field="mean").values["C4"] == pytest.approx(0.251)
    assert ev.load_priors(ours / "summary.json").name == "ours"
    rows = ev.compare({e.name: e for e in (a, b, c)}, TRUTH, baselines=False)
    # all three are the same estimate: identical metrics, 7 classes
    assert len({round(r["l1"], 12) for r in rows}) == 1 and len(rows[0]["categories"]) == 7
    assert rows[0]["l1"] == pytest.approx(0.05 + 0.05 + 0.01 + 0.01)
    assert rows[0]["coverage"] == pytest.approx(5 / 7) and rows[2]["coverage"] is None


@pytest.mark.parametrize("obj, problem", [
    ({"x": 1}, "no mixture estimate"),
    ({"priors": {"point": [0.5, 0.5]}}, "categories"),
    ({"categories": ["a", "b"], "priors": {"point": [0.5]}}, "one per category"),
    ({"categories": ["a", "b"], "priors": {"point": [0.5, "x"]}}, "non-number"),
    ({"priors": {"a": {"ci_lo": 0.1}}}, "neither"),
    ({"global_mixture_over_sampled_pool": [0.2, 0.8]}, "categories"),
])
def test_bad_summaries_raise_input_error(tmp_path, obj, problem):
    d = _write(tmp_path, "run", obj)
    with pytest.raises(InputError, match=problem) as e:
        ev.load_priors(d)
    assert e.value.path.endswith("summary.json")


def test_missing_summary_is_input_error(tmp_path):
    with pytest.raises(InputError, match="not found"):
        ev.load_priors(tmp_path)


def test_six_class_estimate_merges_truth_and_sums_intervals():
    est = ev.Estimate("six", {"Web": 0.68, "Code": 0.12, "wikipedia": 0.05, "Books": 0.05,
                              "Papers": 0.06, "stack_exchange": 0.04},
                      ci_lo={"Web": 0.6, "Code": 0.1, "wikipedia": 0.0, "Books": 0.0,
                             "Papers": 0.0, "stack_exchange": 0.0},
                      ci_hi={"Web": 0.75, "Code": 0.15, "wikipedia": 0.1, "Books": 0.1,
                             "Papers": 0.1, "stack_exchange": 0.1})
    seven = ev.Estimate("seven", dict(zip(CATS7, EST, strict=True)),
                        ci_lo={"CommonCrawl": 0.4, "C4": 0.1}, ci_hi={"CommonCrawl": 0.5,
                                                                       "C4": 0.2})
    assert ev.needs_web_merge(list(TRUTH), [est]) and not ev.needs_web_merge(list(TRUTH), [])
    rows = ev.compare({"six": est, "seven": seven}, TRUTH, baselines=False)
    assert rows[0]["categories"] == ["web", "github", "wikipedia", "books", "arxiv",
                                     "stackexchange"]
    assert rows[0]["truth"][0] == pytest.approx(0.7)
    assert rows[0]["estimate"][:2] == pytest.approx([0.68, 0.12])
    assert rows[1]["estimate"][0] == pytest.approx(0.70)  # 0.45 + 0.25
    assert rows[1]["ci_lo"][0] == pytest.approx(0.5) and rows[1]["ci_hi"][0] == pytest.approx(0.7)
    assert ev.merge_web({"CommonCrawl": 0.3, "x": 0.1, "C4": 0.2}) == {"web": 0.5, "x": 0.1}


def test_extra_category_is_an_error_missing_one_scores_zero(caplog):
    extra = ev.Estimate("e", {**TRUTH, "unknown": 0.1}, source="run/summary.json")
    with pytest.raises(InputError, match="unknown"):
        ev.compare({"e": extra}, TRUTH, baselines=False)
    partial = ev.Estimate("p", {"commoncrawl": 0.7, "github": 0.3})
    row = ev.compare({"p": partial}, TRUTH, baselines=False, merge=False)[0]
    assert "c4" in row["missing"] and row["estimate"][1] == 0.0
    assert "no estimate" in caplog.text


def test_pool_baselines_do_not_use_the_truth():
    pool = {"commoncrawl": 0.1, "c4": 0.2, "github": 0.7}
    b = ev.trivial_baselines(["commoncrawl", "c4", "github", "books"], pool)
    assert b["uniform"]["books"] == 0.25
    assert b["pool_priors"] == pytest.approx({"commoncrawl": 0.1, "c4": 0.2, "github": 0.7,
                                              "books": 0.0})
    assert b["pool_largest"] == {"commoncrawl": 0.0, "c4": 0.0, "github": 1.0, "books": 0.0}
    assert set(ev.trivial_baselines(["a", "b"])) == {"uniform"}


# ---------------------------------------------------------------------------------------
# report and script


@pytest.fixture()
def runs(tmp_path):
    good = _write(tmp_path, "labelshift", {"priors": {
        c: {"point": v, "mean": v, "ci_lo": v - 0.03, "ci_hi": v + 0.03}
        for c, v in TRUTH.items()}})
    mk = _write(tmp_path, "minkpp", {"categories": CATS7,
                                     "global_mixture_over_sampled_pool": EST})
    return good, mk


def test_run_benchmark_writes_report_and_plots(tmp_path, runs):
    spec = tmp_path / "spec.yaml"
    spec.write_text("category_weights:\n" + "".join(f"  {c}: {100 * v}\n"
                                                    for c, v in TRUTH.items()))
    out = tmp_path / "bench"
    rows = ev.run_benchmark(runs, spec, tol=0.02, out_dir=out,
                            pool_priors=ROOT / "bench/specs/slimpajama.yaml")
    names = [r["name"] for r in rows]
    assert names == ["labelshift", "minkpp", "uniform", "pool_priors", "pool_largest"]
    assert rows[0]["accuracy"] == pytest.approx(1.0) and rows[0]["coverage"] == 1.0
    report = (out / "report.md").read_text()
    assert "| labelshift | method | 1.0000 |" in report and "acc_tol(0.02)" in report
    for png in ("comparison.png", "errors.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    before = (out / "report.md").read_bytes()
    mtime = (out / "report.md").stat().st_mtime_ns
    ev.run_benchmark(runs, spec, tol=0.02, out_dir=out,
                     pool_priors=ROOT / "bench/specs/slimpajama.yaml")
    assert (out / "report.md").stat().st_mtime_ns == mtime  # same inputs: left alone
    with pytest.raises(InputError, match="plots true -> false"):
        ev.run_benchmark(runs, spec, out_dir=out, plots=False,
                         pool_priors=ROOT / "bench/specs/slimpajama.yaml")
    ev.run_benchmark(runs, spec, out_dir=out, plots=False, overwrite=True,
                     pool_priors=ROOT / "bench/specs/slimpajama.yaml")
    assert (out / "report.md").read_bytes() == before  # deterministic


def test_script_main_and_help(tmp_path, runs, capsys):
    import benchmark_evaluation as script

    out = tmp_path / "o"
    rc = script.main(["--compare", *map(str, runs), "--ground_truth",
                      str(ROOT / "bench/specs/llama1.yaml"), "--output_dir", str(out),
                      "--no_plots", "--merge_web", "--quiet"])
    text = capsys.readouterr().out
    assert rc == 0 and "6 categories: web, github" in text
    assert "| minkpp | method |" in text and "| uniform | baseline |" in text
    assert (out / "report.md").exists() and not (out / "comparison.png").exists()
    with pytest.raises(SystemExit) as e:
        script.main(["--help"])
    assert e.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_script_subprocess_bad_input_is_one_line(tmp_path, runs):
    bad = tmp_path / "bad.yaml"
    bad.write_text("category_weights: {a: -1}\n")
    p = subprocess.run([sys.executable, str(ROOT / "benchmark_evaluation.py"), "--results_dir",
                        str(runs[0]), "--ground_truth", str(bad), "--no_plots", "--no_report"],
                       capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"error: {bad}: category_weights: weight of 'a' "
                                             "is negative (-1)"]


# ---------------------------------------------------------------------------------------
# membership rates (Min-K%++ arm)


def test_gmm_recovers_rate_on_separated_gaussians():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(4, 1, 1200), rng.normal(0, 1, 2800)])  # rate 0.3
    r = gmm.membership_rate_gmm(x, seed=0, n_boot=20)
    assert r["point"] == pytest.approx(0.3, abs=0.02)
    assert r["gmm_means"][0] == pytest.approx(4, abs=0.1)
    assert r["ci_lo"] <= r["point"] <= r["ci_hi"]
    assert gmm.membership_rate_gmm(x, seed=0, n_boot=20) == r  # deterministic
    ref = rng.normal(0, 1, 3000)
    c = gmm.membership_rate_calibrated(x, ref, seed=0, n_boot=100)
    # Storey's bias here: members below the reference median, P(N(4,1) < 0) ~ 3e-5
    assert c["point"] == pytest.approx(0.3, abs=0.03)
    assert c["ci_lo"] <= 0.3 <= c["ci_hi"]


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.3])
def test_gmm_is_biased_on_skewed_overlapping_scores_calibrated_is_not(rate):
    """Non-member scores with a long lower tail (-Gamma(2, 1)), members shifted up by 2.5
    (heavy overlap, not Gaussian). The GMM splits the skewed non-member distribution itself
    and reports a large 'member' weight even at rate 0; the calibrated estimate uses known
    non-members and stays within 0.06 (its only bias: members scoring below the reference
    median, P = P(Gamma(2,1) > 2.5 + 1.68) ~ 0.08, times the rate, over (1 - lambda))."""
    rng = np.random.default_rng(1)
    n = 4000
    k = int(rate * n)
    x = np.concatenate([2.5 - rng.gamma(2.0, 1.0, k), -rng.gamma(2.0, 1.0, n - k)])
    ref = -rng.gamma(2.0, 1.0, 3000)
    g = gmm.membership_rate_gmm(x, seed=0, n_boot=0)["point"]
    c = gmm.membership_rate_calibrated(x, ref, seed=0, n_boot=0)["point"]
    assert abs(g - rate) > 0.25
    assert abs(c - rate) < 0.06
    assert abs(c - rate) < abs(g - rate) / 4


def test_conformal_pvalues_and_storey_by_brute_force():
    rng = np.random.default_rng(2)
    ref = rng.normal(size=200).round(1)  # ties on purpose
    s = rng.normal(0.5, 1, 300).round(1)
    p = gmm.conformal_pvalues(s, ref)
    brute = np.array([(1 + np.sum(ref >= v)) / (len(ref) + 1) for v in s])
    np.testing.assert_allclose(p, brute)
    pi0 = np.sum(brute > 0.5) / (len(s) * 0.5)
    assert gmm.storey_member_rate(s, ref, 0.5) == pytest.approx(max(0.0, 1 - pi0))
    # non-members only: p-values are (super-)uniform, the rate is near 0
    null = gmm.membership_rate_calibrated(rng.normal(size=3000), rng.normal(size=3000),
                                          n_boot=0)
    assert null["point"] < 0.05


def test_normalise_mixture():
    assert gmm.normalise_mixture({"a": 0.2, "b": 0.6}) == pytest.approx({"a": 0.25, "b": 0.75})
    got = gmm.normalise_mixture({"a": 0.2, "b": 0.6}, {"a": 300, "b": 100})
    assert got == pytest.approx({"a": 0.5, "b": 0.5})
    with pytest.raises(ValueError, match="zero"):
        gmm.normalise_mixture({"a": 0.0, "b": 0.0})
    with pytest.raises(ValueError, match="no pool weight"):
        gmm.normalise_mixture({"a": 0.1}, {"b": 1})


def test_minkpp_summary_roundtrip_through_evaluator(tmp_path):
    """normalise_mixture's output, written in the published Min-K%++ format, scores as is."""
    mix = gmm.normalise_mixture({"github": 0.5, "books": 0.5})
    d = _write(tmp_path, "mk", {"categories": list(mix),
                                "global_mixture_over_sampled_pool": list(mix.values())})
    row = ev.compare({"mk": ev.load_priors(d)}, {"github": 0.5, "books": 0.5},
                     baselines=False)[0]
    assert row["accuracy"] == pytest.approx(1.0)
    assert json.loads((d / "summary.json").read_text())["categories"] == ["github", "books"]
