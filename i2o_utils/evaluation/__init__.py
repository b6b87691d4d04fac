"""Evaluation of the predictions (paper: "Metrics", Tables 1-4; the splits are :mod:`i2o_utils.data.splits`).

* :mod:`~i2o_utils.evaluation.metrics`: SMAPE and r², vectorised over genes.
* :mod:`~i2o_utils.evaluation.significance`: the paper's one-sided tests against the mean predictor
  (Mann–Whitney U, paired Wilcoxon), equal to scipy's per-gene results; Benjamini–Hochberg.
* :mod:`~i2o_utils.evaluation.perturbation`: the calibrated test at the perturbation level (exact
  permutation of predictions between test perturbations), the valid combination over splits and
  the out-of-sample R² against the mean predictor (beyond the paper; the default).
* :mod:`~i2o_utils.evaluation.baselines`: cell count, morphology features and a random backbone
  on the same splits under the same test (beyond the paper).
* :mod:`~i2o_utils.evaluation.predictions`: readers of the prediction files and gene tables.
* :mod:`~i2o_utils.evaluation.summaries`: per split, over splits, the fractions, the headline.
* :mod:`~i2o_utils.evaluation.tables`: the paper's Tables 1-4.
* :mod:`~i2o_utils.evaluation.truth`: recovery of the simulated screen's truth.
* :mod:`~i2o_utils.evaluation.pipeline`: notebook 50 in a few calls, the three tests side by side
  and the calibration read from a null screen.
"""
