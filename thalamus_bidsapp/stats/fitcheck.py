"""Why a maximum-likelihood fit cannot be reported: no convergence, no covariance, separation.

A logistic or ordinal model fitted on few subjects often has no finite
maximum-likelihood estimate (an outcome level predicted perfectly) or a
singular information matrix (too few rows per outcome level). statsmodels
then returns huge estimates, NaN standard errors, or raises when the
covariance is asked for. :func:`mle_problem` says which of these happened,
so that the caller reports the model with empty estimates and the reason.
"""

from __future__ import annotations

import numpy as np

__all__ = ["PERFECT", "mle_problem", "observed_probabilities"]

#: A fitted probability this close to 1 for a row's observed outcome means the row is predicted perfectly.
PERFECT = 1e-6


def observed_probabilities(fitted: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Each row's fitted probability of the outcome it has.

    ``fitted`` is either a vector of P(y = 1) (binary outcome, ``observed``
    0/1) or an (n, K) matrix of category probabilities (``observed`` the
    category index 0..K-1).

    >>> observed_probabilities(np.array([0.9, 0.2]), np.array([1, 0])).round(2).tolist()
    [0.9, 0.8]
    """
    fitted = np.asarray(fitted, dtype=float)
    observed = np.asarray(observed)
    if fitted.ndim == 1:
        return np.where(observed.astype(float) > 0.5, fitted, 1.0 - fitted)
    return fitted[np.arange(fitted.shape[0]), observed.astype(int)]


def mle_problem(fit: object, observed_prob: np.ndarray | None = None) -> str | None:
    """The reason a fitted maximum-likelihood model has no reportable estimates, or None when it has.

    Parameters
    ----------
    fit
        A statsmodels likelihood results object (``mle_retvals``, ``bse``,
        ``cov_params``).
    observed_prob
        Each row's fitted probability of its observed outcome
        (:func:`observed_probabilities`); when every row is predicted with
        certainty the outcome is perfectly separated and no finite estimate exists.

    Returns
    -------
    str or None
        ``"perfect separation: ..."``, ``"did not converge ..."`` or
        ``"singular Hessian: ..."``, or None.

    Examples
    --------
    >>> import pandas as pd
    >>> import statsmodels.api as sm
    >>> x = np.arange(10.0)
    >>> y = (x > 4.5).astype(float)
    >>> fit = sm.Logit(y, sm.add_constant(x)).fit(disp=0, maxiter=50, warn_convergence=False)
    >>> mle_problem(fit, observed_probabilities(fit.predict(), y)).split(":")[0]
    'perfect separation'
    """
    if observed_prob is not None:
        prob = np.asarray(observed_prob, dtype=float)
        if prob.size and np.all(prob >= 1.0 - PERFECT):
            return ("perfect separation: the predictors classify every row's outcome exactly, "
                    "so no finite estimate exists")
    retvals = getattr(fit, "mle_retvals", None) or {}
    if not bool(retvals.get("converged", False)):
        return "did not converge (maximum-likelihood optimiser stopped before the optimum)"
    try:
        cov = np.asarray(fit.cov_params(), dtype=float)
        bse = np.asarray(fit.bse, dtype=float)
    except (ValueError, np.linalg.LinAlgError):
        cov, bse = None, None
    if cov is None or bse is None or not (np.isfinite(cov).all() and np.isfinite(bse).all()) or (bse <= 0).any():
        return ("singular Hessian: standard errors cannot be computed "
                "(too few rows per outcome level, or an outcome level predicted perfectly)")
    return None
