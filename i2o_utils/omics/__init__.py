"""Omics preprocessing (notebook 10): expression filter, size factors, vsn, batch correction, labels.

Arrays are samples (wells) x genes, as in AnnData. R's ``justvsn`` is :func:`i2o_utils.omics.vsn.vsn`
(the package exports :func:`vsn_fit`, so that ``i2o_utils.omics.vsn`` stays the module).
"""

from i2o_utils.omics._checks import OmicsInputError
from i2o_utils.omics.batch import remove_batch_effect, sum_to_zero_contrasts
from i2o_utils.omics.filter import filter_low_expression
from i2o_utils.omics.labels import (Labels, apply_zscore, compute_labels, fit_zscore, invert_zscore,
                                    label_wells)
from i2o_utils.omics.normalise import log_normalised, size_factors
from i2o_utils.omics.pipeline import (GroundTruth, OmicsSets, build_ground_truth, compare_filter_rules,
                                      gene_filter_summary, may_write_gt, preprocess_omics, preprocess_set,
                                      raw_summary, read_all_omics_raw, read_omics_raw, write_gt_tables,
                                      write_outputs)
from i2o_utils.omics.vsn import VsnFit, mean_sd_trend, vsn_fit

__all__ = [
    "OmicsInputError", "remove_batch_effect", "sum_to_zero_contrasts", "filter_low_expression", "Labels",
    "apply_zscore", "label_wells", "compute_labels", "fit_zscore", "invert_zscore", "log_normalised",
    "size_factors", "GroundTruth", "OmicsSets",
    "build_ground_truth", "compare_filter_rules", "gene_filter_summary", "may_write_gt", "preprocess_omics",
    "preprocess_set", "raw_summary", "read_all_omics_raw", "read_omics_raw", "write_gt_tables", "write_outputs",
    "VsnFit", "mean_sd_trend", "vsn_fit",
]
