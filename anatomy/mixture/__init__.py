"""Pipeline B: estimating a language model's training-data mixture.

* :mod:`anatomy.mixture.slimpajama` -- uniform per-category samples from SlimPajama shards;
* :mod:`anatomy.mixture.labelshift` -- label-shift prior estimators (EM + BCTS, BBSE, ...);
* :mod:`anatomy.mixture.gmm` -- membership rates from Min-K%++ score distributions;
* :mod:`anatomy.mixture.evaluate` -- scoring estimates against ``bench/specs`` ground truth.

Submodules are imported on use (``from anatomy.mixture import labelshift``), so importing
the package stays cheap.
"""
