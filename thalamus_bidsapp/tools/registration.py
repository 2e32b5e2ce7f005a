"""FLAIR and R1 into T1w space: the registration strategies and the mutual-information QC rule.

Ibrahim et al. (2026), section 2.5.2. Every candidate registration
is resampled onto the exact T1w grid and scored by the mutual information (MI)
between the T1w and the registered image inside the T1w brain mask
(:mod:`thalamus_bidsapp.image.mutual_information`: 32 bins, nats). A candidate
*passes* when ``MI >= cut-off`` (0.25 for FLIRT strategies, 0.30 for ANTs).

Selection rule (:func:`select_registration`)
--------------------------------------------
R1 map, strategies ``flirt_mi_affine`` (a), ``flirt_normcorr_weighted`` (b), ``ants_rigid`` (c):

1. both FLIRT strategies pass -> the one with the higher MI (ANTs is not run);
2. else ANTs rigid, if it passes;
3. else the R1 map is excluded for the session (recorded, not fatal), even when
   one FLIRT strategy passed (stricter than the paper's text, "excluded if
   all three failed").

FLAIR: ``flirt_normcorr`` if it passes, else ``ants_rigid`` if it passes, else excluded.

Without FSL (no ``$FSLDIR/bin/flirt`` and no ``flirt`` on PATH) ANTs rigid
runs alone under the same cut-off and that is written in the ``reason``
column. A strategy that crashes counts as failed, with the error as reason.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from thalamus_bidsapp.config import DEFAULT_ANTS_CUTOFF, DEFAULT_FLIRT_CUTOFF
from thalamus_bidsapp.errors import EXIT_DATAERR, EXIT_NOINPUT, ThalamusError
from thalamus_bidsapp.image.mutual_information import mutual_information_images
from thalamus_bidsapp.image.resample import same_grid
from thalamus_bidsapp.tools import flirt as flirt_iface
from thalamus_bidsapp.tools.ants import AntsRegistrationError, ants_rigid

LOGGER = logging.getLogger(__name__)

FLIRT_MI_AFFINE = "flirt_mi_affine"
FLIRT_NORMCORR_WEIGHTED = "flirt_normcorr_weighted"
FLIRT_NORMCORR = "flirt_normcorr"
ANTS_RIGID = "ants_rigid"

#: FLIRT strategies per modality, in order of preference on an MI tie.
FLIRT_STRATEGIES: dict[str, tuple[str, ...]] = {
    "R1map": (FLIRT_MI_AFFINE, FLIRT_NORMCORR_WEIGHTED),
    "FLAIR": (FLIRT_NORMCORR,),
}
MODALITIES = tuple(FLIRT_STRATEGIES)

#: File extension of each transform format (ITK text for ANTs, FSL matrix for FLIRT).
TRANSFORM_EXTENSIONS = {"fsl": ".mat", "itk": ".txt"}

QC_COLUMNS = ["image", "strategy", "mi", "cutoff", "passed", "selected", "reason"]

#: Sidecar of the per-session QC TSV (pass to ``bidsio.atomic.write_tsv``).
QC_COLUMN_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "image": {"Description": "Registered image: R1map or FLAIR (moving image; the T1w is the reference)."},
    "strategy": {
        "Description": "Registration strategy: flirt_mi_affine (FLIRT 6 DOF mutualinfo, spline, then 12 DOF "
        "from the rigid matrix with -nosearch), flirt_normcorr_weighted (FLIRT 6 DOF normcorr, T1w brain mask "
        "as -refweight, spline), flirt_normcorr (FLAIR: FLIRT 6 DOF normcorr, trilinear), ants_rigid (ANTs "
        "rigid, identity initialisation, Mattes MI with 32 bins sampled at 25 % of the voxels inside the T1w "
        "brain mask, shrink factors 4x2, at most 100x20 iterations, linear)."
    },
    "mi": {
        "Description": "Mutual information between the T1w and the registered image inside the T1w brain mask: "
        "32 equal-width bins per image over its [0.5, 99.5] percentile range in the mask, natural logarithm; "
        "n/a when the strategy did not run or crashed.",
        "Units": "nat",
    },
    "cutoff": {"Description": "MI cut-off of this strategy; the registration fails when mi < cutoff.", "Units": "nat"},
    "passed": {"Description": "Whether mi >= cutoff; n/a when the strategy did not run."},
    "selected": {"Description": "Whether this registration is the one used downstream (at most one per image)."},
    "reason": {"Description": "Why the strategy passed, failed, was selected, not selected or not run."},
}


@dataclass
class RegistrationOutcome:
    """Result of :func:`register_to_t1w` for one moving image.

    Attributes
    ----------
    modality
        ``"R1map"`` or ``"FLAIR"``.
    selected
        The selected strategy, or None when the image is excluded.
    registered_image
        Selected registered image on the exact T1w grid (NIfTI, float32), or None.
    transform
        Selected transform file (BIDS-style name ``from-<modality>_to-T1w_mode-image_xfm``
        + ``.mat`` for FSL, ``.txt`` for ITK), or None.
    transform_format
        ``"fsl"`` (FLIRT matrix) or ``"itk"`` (ITK text), or None.
    t1w_to_moving_ras
        The selected transform as a world map (T1w RAS+ mm -> moving RAS+ mm),
        shape (4, 4), or None.
    mi
        MI of the selected registration (nats), or None.
    qc
        One row per strategy, columns :data:`QC_COLUMNS`.
    candidates
        Registered image of every strategy that produced one.
    summary
        One line explaining the decision.
    fsl_version
        FSL version used, or None.
    """

    modality: str
    selected: str | None
    registered_image: Path | None
    transform: Path | None
    transform_format: str | None
    t1w_to_moving_ras: np.ndarray | None
    mi: float | None
    qc: pd.DataFrame
    candidates: dict[str, Path] = field(default_factory=dict)
    summary: str = ""
    fsl_version: str | None = None

    @property
    def excluded(self) -> bool:
        """True when every strategy failed QC and the image must not be used."""
        return self.selected is None


@dataclass
class _Candidate:
    strategy: str
    cutoff: float
    mi: float | None = None
    image: Path | None = None
    transform: Path | None = None
    transform_format: str | None = None
    matrix_ras: np.ndarray | None = None
    error: str | None = None
    not_run: str | None = None

    @property
    def passed(self) -> bool | None:
        if self.not_run is not None:
            return None
        return self.mi is not None and math.isfinite(self.mi) and self.mi >= self.cutoff


def cutoff_for(strategy: str, *, flirt_cutoff: float = DEFAULT_FLIRT_CUTOFF, ants_cutoff: float = DEFAULT_ANTS_CUTOFF) -> float:
    """MI cut-off (nats) of a strategy: ``ants_cutoff`` for ANTs, ``flirt_cutoff`` otherwise."""
    return ants_cutoff if strategy == ANTS_RIGID else flirt_cutoff


def select_registration(
    modality: str,
    mi: Mapping[str, float | None],
    *,
    flirt_cutoff: float = DEFAULT_FLIRT_CUTOFF,
    ants_cutoff: float = DEFAULT_ANTS_CUTOFF,
) -> tuple[str | None, str]:
    """Apply the QC selection rule (module docstring) to MI values.

    Parameters
    ----------
    modality
        ``"R1map"`` or ``"FLAIR"``.
    mi
        MI (nats) per strategy name; a missing strategy, None or NaN means it
        did not run or crashed (counts as not passed).
    flirt_cutoff, ants_cutoff
        Cut-offs (nats); a strategy passes when ``mi >= cutoff``.

    Returns
    -------
    (str or None, str)
        The selected strategy (None = excluded) and a one-line explanation.
    """
    flirt = _flirt_strategies(modality)

    def ok(strategy: str) -> bool:
        value = mi.get(strategy)
        cutoff = cutoff_for(strategy, flirt_cutoff=flirt_cutoff, ants_cutoff=ants_cutoff)
        return value is not None and math.isfinite(value) and value >= cutoff

    flirt_passed = [s for s in flirt if ok(s)]
    if len(flirt_passed) == len(flirt):
        # max() keeps the first on a tie, i.e. the order of FLIRT_STRATEGIES.
        best = max(flirt_passed, key=lambda s: float(mi[s]))  # type: ignore[arg-type]
        if len(flirt) > 1:
            return best, "both FLIRT strategies passed; kept the higher MI"
        return best, "FLIRT passed"
    if ok(ANTS_RIGID):
        if any(s in mi for s in flirt):
            return ANTS_RIGID, "not every FLIRT strategy passed; ANTs rigid passed"
        return ANTS_RIGID, "ANTs rigid passed"
    if flirt_passed:
        # a lone passing FLIRT strategy is not enough (see the module docstring): ANTs must pass.
        return None, (
            f"only {flirt_passed[0]} passed among the FLIRT strategies and ANTs rigid failed; "
            f"{modality} excluded for this session"
        )
    return None, f"every strategy failed QC; {modality} excluded for this session"


def needs_ants(
    modality: str, mi: Mapping[str, float | None], *, flirt_cutoff: float = DEFAULT_FLIRT_CUTOFF
) -> bool:
    """Whether the ANTs fallback must run: not every FLIRT strategy of ``modality`` passed."""
    return not all(
        (v := mi.get(s)) is not None and math.isfinite(v) and v >= flirt_cutoff for s in _flirt_strategies(modality)
    )


def _flirt_strategies(modality: str) -> tuple[str, ...]:
    try:
        return FLIRT_STRATEGIES[modality]
    except KeyError:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}") from None


def register_to_t1w(
    moving: Path,
    t1w: Path,
    brain_mask: Path,
    modality: str,
    work_dir: Path,
    *,
    flirt_cutoff: float = DEFAULT_FLIRT_CUTOFF,
    ants_cutoff: float = DEFAULT_ANTS_CUTOFF,
    fsl_available: bool | None = None,
    always_run_ants: bool = False,
) -> RegistrationOutcome:
    """Register an R1 map or a FLAIR to the T1w, score every candidate, apply the QC rule.

    Parameters
    ----------
    moving
        The R1 map or FLAIR (NIfTI), already reoriented like the T1w.
    t1w
        The T1w reference (NIfTI); every output is on its grid.
    brain_mask
        T1w brain mask on the T1w grid (nonzero = brain); FLIRT reference
        weight for strategy (b) and the MI region.
    modality
        ``"R1map"`` or ``"FLAIR"``.
    work_dir
        Folder for all candidates: ``<work_dir>/<modality>_<strategy>/``.
    flirt_cutoff, ants_cutoff
        MI cut-offs in nats (defaults 0.25 and 0.30).
    fsl_available
        Whether to run the FLIRT strategies; None finds out
        (:func:`thalamus_bidsapp.tools.flirt.find_fsl`).
    always_run_ants
        Run ANTs rigid even when every FLIRT strategy passed (it is then
        scored and recorded but the rule still prefers FLIRT).

    Returns
    -------
    RegistrationOutcome
        ``outcome.excluded`` is True when every strategy failed; that is not
        an error.

    Raises
    ------
    ThalamusError
        Exit code 66 if an input file is missing; 65 if the brain mask is not
        on the T1w grid or is empty.
    ValueError
        If ``modality`` is unknown.
    """
    flirt_strategies = _flirt_strategies(modality)
    moving, t1w, brain_mask, work_dir = Path(moving), Path(t1w), Path(brain_mask), Path(work_dir)
    _check_inputs(moving, t1w, brain_mask)
    work_dir.mkdir(parents=True, exist_ok=True)

    fsl_install = flirt_iface.find_fsl()
    use_fsl = fsl_install is not None if fsl_available is None else fsl_available
    no_fsl_reason = "FSL not found (set FSLDIR or put flirt on PATH)" if fsl_available is None else "FSL disabled"

    candidates: dict[str, _Candidate] = {}
    for strategy in flirt_strategies:
        cand = _Candidate(strategy, flirt_cutoff)
        if not use_fsl:
            cand.not_run = f"not run: {no_fsl_reason}; ANTs rigid used alone"
        else:
            _run_flirt(cand, moving, t1w, brain_mask, modality, work_dir / f"{modality}_{strategy}", fsl_install)
            if cand.image is not None:
                _score(cand, t1w, brain_mask, modality)
        candidates[strategy] = cand

    mi = {s: c.mi for s, c in candidates.items() if c.not_run is None}
    ants = _Candidate(ANTS_RIGID, ants_cutoff)
    if not use_fsl or always_run_ants or needs_ants(modality, mi, flirt_cutoff=flirt_cutoff):
        _run_ants(ants, moving, t1w, brain_mask, modality, work_dir / f"{modality}_{ANTS_RIGID}")
        if ants.image is not None:
            _score(ants, t1w, brain_mask, modality)
        mi[ANTS_RIGID] = ants.mi
    else:
        ants.not_run = "not run: every FLIRT strategy passed"
    candidates[ANTS_RIGID] = ants

    selected, explanation = select_registration(modality, mi, flirt_cutoff=flirt_cutoff, ants_cutoff=ants_cutoff)
    if not use_fsl:
        explanation = f"{no_fsl_reason}: ANTs rigid used alone; {explanation}"
    qc = _qc_table(modality, candidates, selected, explanation)
    if selected is None:
        LOGGER.warning("%s of %s excluded: %s", modality, moving.name, explanation)
        return RegistrationOutcome(
            modality, None, None, None, None, None, None, qc,
            candidates={s: c.image for s, c in candidates.items() if c.image is not None},
            summary=explanation,
            fsl_version=fsl_install.version if (use_fsl and fsl_install) else None,
        )
    chosen = candidates[selected]
    LOGGER.info("%s of %s: selected %s (MI %.3f): %s", modality, moving.name, selected, chosen.mi, explanation)
    return RegistrationOutcome(
        modality,
        selected,
        chosen.image,
        chosen.transform,
        chosen.transform_format,
        chosen.matrix_ras,
        chosen.mi,
        qc,
        candidates={s: c.image for s, c in candidates.items() if c.image is not None},
        summary=explanation,
        fsl_version=fsl_install.version if (use_fsl and fsl_install) else None,
    )


def _check_inputs(moving: Path, t1w: Path, brain_mask: Path) -> None:
    for label, path in (("moving image", moving), ("T1w", t1w), ("brain mask", brain_mask)):
        if not path.is_file():
            raise ThalamusError(f"registration input missing: {label} {path}", exit_code=EXIT_NOINPUT)
    t1_img = nib.load(str(t1w))
    mask_img = nib.load(str(brain_mask))
    if not same_grid(mask_img, t1_img):
        raise ThalamusError(
            f"brain mask {brain_mask} is not on the grid of the T1w {t1w} "
            f"(shape {mask_img.shape} vs {t1_img.shape})",
            exit_code=EXIT_DATAERR,
        )
    if not np.any(np.asarray(mask_img.dataobj)):
        raise ThalamusError(f"brain mask {brain_mask} is empty", exit_code=EXIT_DATAERR)


def _run_flirt(
    cand: _Candidate,
    moving: Path,
    t1w: Path,
    brain_mask: Path,
    modality: str,
    out_dir: Path,
    fsl_install: flirt_iface.FslInstallation | None,
) -> None:
    try:
        if cand.strategy == FLIRT_MI_AFFINE:
            result = flirt_iface.flirt_mi_affine(moving, t1w, out_dir, modality=modality, fsl_install=fsl_install)
        elif cand.strategy == FLIRT_NORMCORR_WEIGHTED:
            result = flirt_iface.flirt_normcorr_weighted(
                moving, t1w, brain_mask, out_dir, modality=modality, fsl_install=fsl_install
            )
        else:
            result = flirt_iface.flirt_normcorr(moving, t1w, out_dir, modality=modality, fsl_install=fsl_install)
        cand.image, cand.transform, cand.transform_format = result.registered_image, result.matrix, "fsl"
        cand.matrix_ras = flirt_iface.fsl_matrix_to_ras(result.matrix, moving, t1w)
    except (flirt_iface.FlirtError, OSError, ValueError) as exc:
        LOGGER.warning("%s %s failed: %s", modality, cand.strategy, exc)
        cand.error = _first_line(exc)


def _run_ants(cand: _Candidate, moving: Path, t1w: Path, brain_mask: Path, modality: str, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        # The metric is sampled in the brain mask, the region the QC rule scores the result in.
        result = ants_rigid(
            moving,
            t1w,
            out_dir / f"space-T1w_{modality}.nii.gz",
            out_dir / f"from-{modality}_to-T1w_mode-image_xfm{TRANSFORM_EXTENSIONS['itk']}",
            fixed_mask=brain_mask,
        )
        cand.image, cand.transform, cand.transform_format = result.registered_image, result.transform, "itk"
        cand.matrix_ras = result.fixed_to_moving_ras
    except (AntsRegistrationError, OSError, ValueError) as exc:
        LOGGER.warning("%s ants_rigid failed: %s", modality, exc)
        cand.error = _first_line(exc)


def _score(cand: _Candidate, t1w: Path, brain_mask: Path, modality: str) -> None:
    try:
        cand.mi = mutual_information_images(t1w, cand.image, brain_mask)
    except (ValueError, OSError) as exc:
        cand.error = f"MI could not be computed: {_first_line(exc)}"
        return
    LOGGER.info("%s %s: MI %.4f (cut-off %.2f)", modality, cand.strategy, cand.mi, cand.cutoff)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def _qc_table(modality: str, candidates: Mapping[str, _Candidate], selected: str | None, explanation: str) -> pd.DataFrame:
    rows = []
    for strategy, cand in candidates.items():
        passed = cand.passed
        if cand.not_run is not None:
            reason = cand.not_run
        elif strategy == selected:
            reason = f"selected: {explanation}"
        elif cand.error is not None:
            reason = f"failed: {cand.error}"
        elif not passed:
            reason = f"failed: MI {cand.mi:.3f} < cut-off {cand.cutoff:.2f}"
        else:
            reason = f"passed, not selected: {selected} preferred ({explanation})"
        if selected is None and cand.not_run is None:
            reason += f"; {explanation}"
        rows.append(
            {
                "image": modality,
                "strategy": strategy,
                "mi": np.nan if cand.mi is None else float(cand.mi),
                "cutoff": float(cand.cutoff),
                "passed": pd.NA if passed is None else bool(passed),
                "selected": strategy == selected,
                "reason": reason,
            }
        )
    table = pd.DataFrame(rows, columns=QC_COLUMNS)
    table["passed"] = table["passed"].astype("boolean")
    table["selected"] = table["selected"].astype(bool)
    return table
