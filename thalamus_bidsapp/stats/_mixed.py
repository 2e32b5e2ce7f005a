"""Linear mixed model with a random subject intercept, the pooled fit of longitudinal ComBat.

Kept apart from :mod:`thalamus_bidsapp.stats.harmonization` so that module
stays the ComBat algorithm itself.
"""

from __future__ import annotations

import warnings

import numpy as np


def random_intercept_fit(y: np.ndarray, onehot: np.ndarray, covars: np.ndarray,
                         groups: np.ndarray) -> tuple[np.ndarray, float, dict[str, float]]:
    """REML fit of ``y ~ batch + covariates + (1 | subject)``: fixed effects, residual variance, subject intercepts.

    The covariates are centred and scaled for the optimiser (an ICV in mL
    beside 0/1 indicators makes its Hessian near-singular); the returned
    coefficients are on the original scale.
    """
    from statsmodels.regression.mixed_linear_model import MixedLM

    centre = covars.mean(axis=0)
    scale = covars.std(axis=0)
    scale[scale == 0] = 1.0
    design = np.column_stack([onehot, (covars - centre) / scale])
    fit, problem = None, ""
    # L-BFGS first; a subject variance at the boundary (near 0) can make its gradient singular: then Powell
    for method in ("lbfgs", "powell", "nm"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # boundary and convergence chatter; the estimates are checked below
            try:
                fit = MixedLM(y, design, groups=groups).fit(reml=True, method=method)
                break
            except (np.linalg.LinAlgError, ValueError) as err:
                problem = str(err)
    if fit is None:
        raise ValueError(f"combat: the mixed model of a feature cannot be fitted ({problem})")
    coef = np.asarray(fit.fe_params, float)
    if not np.all(np.isfinite(coef)):
        raise ValueError("combat: the mixed model of a feature did not converge")
    n_batch = onehot.shape[1]
    slopes = coef[n_batch:] / scale
    beta = np.concatenate([coef[:n_batch] - float(slopes @ centre), slopes])
    try:
        intercepts = {str(g): float(np.asarray(v)[0]) for g, v in fit.random_effects.items()}
    except ValueError:  # the subject variance is estimated at 0: every intercept is 0
        intercepts = {str(g): 0.0 for g in np.unique(groups)}
    return beta, float(fit.scale), intercepts
