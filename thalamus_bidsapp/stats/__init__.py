"""The statistics of the group level, as a library: pure functions on pandas DataFrames.

Conventions, shared by every public function (each module lists its functions
and constants in ``__all__``, and README.md "Statistics library" lists them all):

- Input: a :class:`pandas.DataFrame` and column names (pingouin's style).
  Where two columns play roles that a swap would silently exchange, the
  arguments are keyword-only and named by their role:

  - regressions (``ols``, ``logistic``, ``ordinal_logistic``): ``x=`` the
    predictor, ``y=`` the outcome;
  - agreement (``concordance_ccc``, ``ols_agreement``, ``bland_altman``,
    ``volumetric_agreement``): ``reference=`` then ``method=``; every
    difference is ``method - reference`` and every regression is the method
    on the reference.

  Paired tests take ``a, b`` and form ``a - b``, first minus second
  (``paired_wilcoxon``); between more than two methods the caller's
  ``order`` decides which is first (``pairwise_wilcoxon``), never the
  alphabet. ANOVA-like functions take ``dv``, ``between``, ``within``,
  ``subject`` as pingouin does. The exceptions work on other objects than
  tables: the overlap metrics take masks (arrays) and
  :func:`~thalamus_bidsapp.stats.multiplicity.p_adjust` a vector of p-values
  (:func:`~thalamus_bidsapp.stats.regression.adjust_family` is its table form).
- Options are keyword-only; intervals are (1 - ``alpha``) with ``alpha=0.05``.
- Output: a DataFrame with named columns (each module exports their order as
  ``*_COLUMNS``), so families of models concatenate. Unadjusted p-values are
  ``p``; adjusted ones ``p_fdr`` (Benjamini-Hochberg), ``p_bonferroni``,
  ``p_tukey``, or ``p_adjusted`` where an argument chose the adjustment;
  confidence limits ``ci_low`` / ``ci_high``. Where one row carries several
  statistics the statistic's name is the prefix (``ccc_ci_low``,
  ``bias_ci_high``, ``prop_slope_p``). Estimates of different kinds get
  different columns (an ordinal model's thresholds are ``threshold``, its
  coefficients ``beta``).
- Inference is what the arguments say, never switched by the data: ``ols``
  reports classical standard errors unless ``se="hc0"`` or ``"hc3"`` is asked
  for, and always gives all three side by side.
- Missing values are dropped and counted (``n``, ``n_excluded``); fewer than
  :data:`MIN_N` complete observations, or too little data for a model, gives
  NaN and a note or a warning, never an exception; inconsistent input (a
  missing column, two values for one subject and method) raises with the
  offending names.
- This package imports nothing from the rest of thalamus_bidsapp.
"""

from thalamus_bidsapp.stats._frame import MIN_N

__all__ = ["agreement", "batch_effects", "change", "fitcheck", "harmonization", "icc", "longitudinal", "multiplicity", "ordinal", "overlap",
           "pairwise", "power", "progression", "qc", "regression"]
