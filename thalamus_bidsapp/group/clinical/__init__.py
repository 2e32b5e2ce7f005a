"""Group level, clinical part: cross-sectional, longitudinal, disability progression, power.

Entry point :func:`run_clinical` (``runner.py``); one module per analysis
(``crosssectional``, ``longitudinal``, ``progression``, ``power``) over the
shared :func:`~thalamus_bidsapp.group.clinical.common.fit_per_method`. It reads the long volumes table (one row per
subject, session, method and contrast, with the clinical columns of
participants.tsv and the sessions tables joined), runs

- cross-sectional OLS ``outcome ~ thalamus_ml + age + sex + z(ICV)`` on each
  subject's baseline session (Ibrahim et al. 2026, section 2.7.4);
- longitudinal OLS ``delta_outcome ~ delta_thalamus_ml + age + sex + z(ICV)
  + steroid + interval_years`` between baseline and follow-up, with pairwise
  Wilcoxon tests of % change between methods, descriptives by diagnosis,
  winsorised and ordinal-logistic sensitivity analyses and the Pearson
  correlation with PBVC (section 2.7.5);
- the DeepGRAI disability analysis: EDSS course groups compared by ANCOVA
  of % thalamic change adjusted for age and follow-up time, Bonferroni
  pairwise comparisons, and a logistic model of progression (Zivadinov et
  al., DeepGRAI Registry, J Neurol Neurosurg Psychiatry);
- the sample size per arm per method for a trial on annual thalamic atrophy;

and writes one TSV (with JSON sidecar) per analysis and the figures. The
thalamic change of the longitudinal and progression models comes from the
participant level's longitudinal mode where it exists (``change_source``).

Missing data: every model uses the complete cases of its columns. What was
left out, and why, is counted in ``clinical_exclusions.tsv`` (and logged);
``clinical_analyses.tsv`` says which analyses ran and why others were skipped.
"""

from thalamus_bidsapp.group.clinical.common import prepare_volumes
from thalamus_bidsapp.group.clinical.runner import run_clinical

__all__ = ["prepare_volumes", "run_clinical"]
