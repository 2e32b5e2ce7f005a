"""The statistics of the group level, as a library: pure functions on pandas DataFrames.

Conventions, shared by every public function (each module lists its own in
``__all__``, and README.md "Statistics library" lists them all):

- Input: a :class:`pandas.DataFrame` and column names (pingouin's style). Two
  paired columns are ``x, y`` (predictor then outcome, reference then method)
  or ``a, b`` where a difference ``a - b`` is formed; ANOVA-like functions
  take ``dv``, ``between``, ``within``, ``subject`` as pingouin does. The
  exceptions work on other objects than tables: the overlap metrics take
  masks (arrays) and :func:`~thalamus_bidsapp.stats.multiplicity.p_adjust`
  a vector of p-values (:func:`~thalamus_bidsapp.stats.regression.adjust_family`
  is its table form).
- Output: a DataFrame with named columns, so families of models concatenate.
  Unadjusted p-values are ``p``; adjusted ones ``p_fdr`` (Benjamini-Hochberg),
  ``p_bonferroni``, ``p_tukey``; confidence limits ``ci_low`` / ``ci_high``.
  Where one row carries several statistics the statistic's name is the
  prefix (``ccc_ci_low``, ``bias_ci_high``, ``prop_slope_p``).
- Missing values are dropped and counted (``n``, ``n_excluded``); too little
  data gives NaN and a note or a warning, never an exception; inconsistent
  input (a missing column, two values for one subject and method) raises
  with the offending names.
- This package imports nothing from the rest of thalamus_bidsapp.
"""

__all__ = ["agreement", "batch_effects", "harmonization", "icc", "longitudinal", "multiplicity", "ordinal", "overlap",
           "pairwise", "power", "progression", "qc", "regression"]
