"""Thalamus QC: checks per session and method (:mod:`.session`), at group level (:mod:`.group`), thresholds (:mod:`.thresholds`).

The measurements themselves are pure functions in ``image/qc_checks.py`` and
``stats/qc.py``; these modules read files, run the checks and write the
reason sentences.
"""
