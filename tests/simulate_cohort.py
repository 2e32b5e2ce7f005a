"""Simulated MS cohort with planted effects, for the clinical group-level tests and demos.

:func:`simulate_cohort` draws subjects, sessions, clinical tables and
thalamus volumes per method; :func:`write_bids_tree` writes them as a small
BIDS-like dataset (participants.tsv, sub-*/sub-*_sessions.tsv) plus the group
volumes table a derivatives dataset would hold; :func:`joined_volumes` reads
the tree back and joins the clinical columns onto the volumes, as the group
level does before :func:`thalamus_bidsapp.group.clinical.run_clinical`;
:func:`write_group_outputs` writes the group folder of such a cohort (with
synthetic method and manual masks) for the group report and its figures.

Planted effects (:data:`TRUTH`):

- baseline EDSS falls ``edss_per_ml`` (-0.25) points per mL of true thalamus
  volume, adjusted for age, sex and ICV (SDMT rises 2.5 per mL; log T25FW
  falls 0.05 per mL);
- subjects follow an EDSS course (progression, improvement, stable; the
  usual baseline-dependent thresholds) and lose thalamus at a course-specific
  annual rate (DeepGRAI: -1.35, -0.87 and -0.57 %/year);
- the change in SDMT between visits rises ``sdmt_delta_per_ml`` (3.0) per mL
  of thalamic volume change;
- PBVC is 0.35 x the true % thalamic change plus noise;
- methods differ in bias and measurement noise (first has almost none, so
  its estimates are the least attenuated).

Run as a script to write a demo tree: ``python tests/simulate_cohort.py OUT_DIR``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # pragma: no cover - only when run as a script
    sys.path.insert(0, str(REPO))

from thalamus_bidsapp.bidsio.atomic import read_tsv, write_json, write_tsv  # noqa: E402

#: (method, contrast, bias in mL, measurement noise SD in mL)
DEFAULT_METHODS: tuple[tuple[str, str, float, float], ...] = (
    ("first", "T1w", 0.40, 0.01),
    ("dbsegment", "T1w", 0.10, 0.06),
    ("mindglide", "FLAIR", -0.20, 0.10),
)
ANNUAL_RATE = {"progression": -1.35, "improvement": -0.87, "stable": -0.57}
VOXEL_MM3 = 0.512  # 0.8 mm isotropic

TRUTH = {
    "edss_per_ml": -0.25,
    "sdmt_per_ml": 2.5,
    "log_t25fw_per_ml": -0.05,
    "sdmt_delta_per_ml": 3.0,
    "pbvc_per_pct": 0.35,
    "annual_rate": ANNUAL_RATE,
}


@dataclass
class SimulatedCohort:
    """Tables of a simulated cohort.

    Attributes
    ----------
    participants
        participants.tsv content (participant_id, age, sex, diagnosis).
    sessions
        sessions.tsv content per subject (session_id, acq_time, edss, ...).
    volumes
        Long volumes table without the clinical columns (participant_id,
        session_id, method, contrast, n_voxels, volume_ml, icv_ml).
    subjects
        The truth per subject: course, annual rate, true volumes.
    """

    participants: pd.DataFrame
    sessions: dict[str, pd.DataFrame]
    volumes: pd.DataFrame
    subjects: pd.DataFrame
    truth: dict = field(default_factory=lambda: dict(TRUTH))

    def joined(self) -> pd.DataFrame:
        """The volumes with the clinical columns joined (what run_clinical reads)."""
        sessions = pd.concat(
            [table.assign(participant_id=sub) for sub, table in self.sessions.items()], ignore_index=True
        )
        return join_clinical(self.volumes, self.participants, sessions)


def join_clinical(volumes: pd.DataFrame, participants: pd.DataFrame, sessions: pd.DataFrame | None) -> pd.DataFrame:
    """Left-join participants.tsv and the sessions tables onto the volumes."""
    out = volumes.merge(participants, on="participant_id", how="left")
    if sessions is not None and not sessions.empty:
        out = out.merge(sessions, on=["participant_id", "session_id"], how="left")
    return out


def _edss_round(values: np.ndarray) -> np.ndarray:
    # EDSS takes 0, then 1.0 to 9.5 in half steps
    v = np.clip(np.round(values * 2) / 2, 0.0, 9.5)
    return np.where((v > 0) & (v < 1.0), 1.0, v)


def _threshold(edss: float) -> float:
    return 1.5 if edss <= 0 else 1.0 if edss <= 5.5 else 0.5


def simulate_cohort(
    n_subjects: int = 160,
    n_sessions: int = 2,
    *,
    seed: int = 1,
    methods: Sequence[tuple[str, str, float, float]] = DEFAULT_METHODS,
    edss_per_ml: float = TRUTH["edss_per_ml"],
    sdmt_delta_per_ml: float = TRUTH["sdmt_delta_per_ml"],
    missing_fraction: float = 0.03,
    course_probs: tuple[float, float, float] = (0.25, 0.2, 0.55),
) -> SimulatedCohort:
    """Draw a cohort with planted effects (see the module docstring).

    Parameters
    ----------
    n_subjects, n_sessions
        Cohort size; ``n_sessions=1`` gives a cross-sectional dataset.
    seed
        Random seed (the cohort is a pure function of the arguments).
    methods
        (method, contrast, bias mL, noise SD mL) per segmentation method.
    missing_fraction
        Fraction of clinical values per column set to n/a.
    course_probs
        Probabilities of progression, improvement, stable.
    """
    rng = np.random.default_rng(seed)
    ids = [f"sub-{i + 1:03d}" for i in range(n_subjects)]
    sex = rng.choice(["F", "M"], size=n_subjects, p=[0.65, 0.35])
    age = rng.uniform(20, 65, n_subjects).round(1)
    dx = rng.choice(["RRMS", "PMS", "CIS", "NMOSD"], size=n_subjects, p=[0.65, 0.15, 0.1, 0.1])
    icv = np.where(sex == "M", 1600.0, 1420.0) + rng.normal(0, 90, n_subjects)
    thal0 = 9.0 + 0.004 * (icv - 1500) - 0.03 * (age - 45) + rng.normal(0, 1.0, n_subjects)

    edss_latent = 3.5 + edss_per_ml * (thal0 - 9.0) + 0.02 * (age - 45) + rng.normal(0, 0.9, n_subjects)
    edss0 = _edss_round(edss_latent)
    # rounding to half steps adds error independent of the volume, so the slope stays -0.25 on average;
    # keep the latent value away from the clip at 0 by the intercept choice above
    t25fw0 = np.exp(np.log(5.0) + TRUTH["log_t25fw_per_ml"] * (thal0 - 9.0) + rng.normal(0, 0.12, n_subjects))
    nhpt0 = np.exp(np.log(20.0) - 0.03 * (thal0 - 9.0) + rng.normal(0, 0.1, n_subjects))
    sdmt0 = 50 + TRUTH["sdmt_per_ml"] * (thal0 - 9.0) - 0.2 * (age - 45) + rng.normal(0, 5, n_subjects)
    duration0 = np.maximum(0.1, (age - 20) * rng.uniform(0.1, 0.8, n_subjects)).round(1)

    course = rng.choice(list(ANNUAL_RATE), size=n_subjects, p=list(course_probs))
    course = np.where((course == "improvement") & (edss0 < 1.0), "stable", course)
    rate = np.array([ANNUAL_RATE[c] for c in course]) + rng.normal(0, 0.35, n_subjects)

    participants = pd.DataFrame({"participant_id": ids, "age": age, "sex": sex, "diagnosis": dx})
    sessions: dict[str, pd.DataFrame] = {}
    volume_rows = []
    start = pd.Timestamp("2016-01-01")
    for i, sub in enumerate(ids):
        times = [0.0]
        for _ in range(n_sessions - 1):
            times.append(times[-1] + rng.uniform(0.8, 3.0))
        rows = []
        thal = thal0[i]
        edss, sdmt = edss0[i], sdmt0[i]
        scanner = "prisma"
        first_visit = start + pd.Timedelta(days=int(rng.integers(0, 365)))
        for k, t in enumerate(times):
            true_vol = thal0[i] * (1 + rate[i] * t / 100)
            if k > 0:
                edss = _next_edss(edss, course[i], rng)
                sdmt = sdmt + sdmt_delta_per_ml * (true_vol - thal) + rng.normal(0, 0.5)
                if rng.random() < 0.2:
                    scanner = "skyra" if scanner == "prisma" else "prisma"
            pct_true = 100 * (true_vol - thal0[i]) / thal0[i]
            rows.append({
                "session_id": f"ses-{k + 1:02d}",
                "acq_time": (first_visit + pd.Timedelta(days=round(t * 365.25))).strftime("%Y-%m-%dT%H:%M:%S"),
                "edss": float(edss),
                "t25fw": round(float(t25fw0[i] * (1 + 0.02 * t)), 2),
                "9hpt": round(float(nhpt0[i] * (1 + 0.01 * t)), 2),
                "sdmt": round(float(sdmt), 1),
                "disease_duration": round(float(duration0[i] + t), 2),
                "steroid": "n/a" if k == 0 else ("yes" if rng.random() < 0.12 else "no"),
                "scanner": scanner,
                "pbvc": np.nan if k == 0 else round(TRUTH["pbvc_per_pct"] * pct_true + rng.normal(0, 0.15), 3),
            })
            thal = true_vol
            icv_session = icv[i] + rng.normal(0, 3)
            for method, contrast, bias, noise in methods:
                vol = true_vol + bias + rng.normal(0, noise)
                n_vox = int(round(vol * 1000 / VOXEL_MM3))
                volume_rows.append({
                    "participant_id": sub, "session_id": f"ses-{k + 1:02d}", "method": method, "contrast": contrast,
                    "n_voxels": n_vox, "volume_ml": n_vox * VOXEL_MM3 / 1000, "icv_ml": round(icv_session, 2),
                })
        sessions[sub] = pd.DataFrame(rows)
    # the realised course (EDSS capped at 9.5 can turn a planned progression into stable)
    course_real = []
    for sub in ids:
        e = sessions[sub]["edss"].to_numpy()
        d = e[-1] - e[0] if len(e) > 1 else np.nan
        thr = _threshold(e[0])
        course_real.append("n/a" if np.isnan(d) else "progression" if d >= thr else "improvement" if d <= -thr else "stable")
    subjects = pd.DataFrame({"participant_id": ids, "course": course_real, "annual_rate": rate, "thal0": thal0,
                             "icv": icv})
    _add_missing(participants, sessions, rng, missing_fraction)
    return SimulatedCohort(participants, sessions, pd.DataFrame(volume_rows), subjects)


def _next_edss(edss: float, course: str, rng: np.random.Generator) -> float:
    thr = _threshold(edss)
    if course == "progression":
        new = edss + thr + (0.5 if rng.random() < 0.3 else 0.0)
    elif course == "improvement":
        new = edss - thr
    else:
        step = 0.0 if thr <= 0.5 or rng.random() < 0.6 else float(rng.choice([-0.5, 0.5]))
        new = edss + step
    return float(_edss_round(np.array([new]))[0])


def _add_missing(participants: pd.DataFrame, sessions: dict[str, pd.DataFrame], rng: np.random.Generator,
                 fraction: float) -> None:
    """Blank some clinical values, plus one age and one non-numeric T25FW, to exercise the n/a handling."""
    if fraction <= 0:
        return
    participants.loc[participants.index[3], "age"] = np.nan
    subs = list(sessions)
    for column in ("edss", "t25fw", "9hpt", "sdmt"):
        for sub in rng.choice(subs, size=max(1, int(fraction * len(subs))), replace=False):
            table = sessions[sub]
            table.loc[int(rng.integers(0, len(table))), column] = np.nan
    first = sessions[subs[5]]
    first["t25fw"] = first["t25fw"].astype(object)
    first.loc[0, "t25fw"] = "unable"


def write_bids_tree(cohort: SimulatedCohort, root: Path, *, derivatives: str = "derivatives/thalamus_bidsapp") -> Path:
    """Write participants.tsv, sessions tables and the group volumes table under ``root``.

    Returns the path of the volumes table (``<derivatives>/group/volumes.tsv``).
    """
    root = Path(root)
    write_json({"Name": "simulated MS cohort", "BIDSVersion": "1.10.0", "DatasetType": "raw"},
               root / "dataset_description.json")
    write_tsv(cohort.participants, root / "participants.tsv",
              {"age": {"Description": "age", "Units": "year"}, "sex": "sex", "diagnosis": "diagnosis"})
    for sub, table in cohort.sessions.items():
        write_tsv(table, root / sub / f"{sub}_sessions.tsv")
    volumes_path = root / derivatives / "group" / "volumes.tsv"
    write_tsv(cohort.volumes, volumes_path)
    return volumes_path


def joined_volumes(root: Path, *, derivatives: str = "derivatives/thalamus_bidsapp") -> pd.DataFrame:
    """Read a tree written by :func:`write_bids_tree` and join the clinical columns onto the volumes."""
    root = Path(root)
    volumes = read_tsv(root / derivatives / "group" / "volumes.tsv")
    participants = read_tsv(root / "participants.tsv")
    tables = []
    for path in sorted(root.glob("sub-*/sub-*_sessions.tsv")):
        table = read_tsv(path)
        table.insert(0, "participant_id", path.parent.name)
        tables.append(table)
    sessions = pd.concat(tables, ignore_index=True) if tables else None
    return join_clinical(volumes, participants, sessions)


#: Methods of :func:`write_group_outputs`' demo cohort: (method, contrast, bias mL, noise SD mL), as named
#: in real outputs (the mask's desc), with FreeSurfer and FIRST over-segmenting as in the paper.
REPORT_METHODS: tuple[tuple[str, str, float, float], ...] = (
    ("freesurfer", "T1w", 1.2, 0.2),
    ("first", "T1w", 0.9, 0.15),
    ("dbsegment", "T1w", 0.15, 0.08),
    ("mindglideT1w", "T1w", 0.3, 0.12),
    ("mindglideFLAIR", "FLAIR", -0.2, 0.18),
)
#: Per method: mean displacement of its synthetic mask from the manual one (voxels along x, y, z).
MASK_SHIFTS = {"freesurfer": (1.5, 1.0, 0.5), "first": (1.5, 0.5, 1.0), "dbsegment": (0.5, 0.5, 0.0),
               "mindglideT1w": (1.0, 1.0, 0.5), "mindglideFLAIR": (1.5, 1.0, 1.0)}


def _ellipsoid(volume_ml: float, shift: np.ndarray, stretch: np.ndarray, shape: int = 40) -> np.ndarray:
    """A binary ellipsoid (1 mm voxels) of about ``volume_ml``: semi-axes 1.6 : 1 : 0.8 times ``stretch``, moved."""
    stretch = np.asarray(stretch, float) / np.prod(stretch) ** (1 / 3)
    scale = (volume_ml * 1000 / (4 / 3 * np.pi * 1.6 * 1.0 * 0.8)) ** (1 / 3)
    radii = np.array([1.6, 1.0, 0.8]) * scale * stretch
    grid = np.indices((shape,) * 3).astype(float) - (shape - 1) / 2 - np.asarray(shift, float)[:, None, None, None]
    return (((grid / radii[:, None, None, None]) ** 2).sum(axis=0) <= 1).astype(np.uint8)


def write_group_outputs(cohort: SimulatedCohort, out: Path, *, n_manual: int = 20, seed: int = 0) -> Path:
    """The group folder the group level would write for ``cohort``: volumes, agreement and clinical tables.

    Method masks are ellipsoids of each method's simulated volume, randomly
    stretched and moved about :data:`MASK_SHIFTS`; the first ``n_manual`` subjects' baseline sessions get
    a manual mask (an ellipsoid of the true volume). The agreement and
    clinical steps run on them without drawing figures. Returns ``out/group``.
    """
    import nibabel as nib

    from thalamus_bidsapp.group.agreement import run_agreement
    from thalamus_bidsapp.group.clinical import run_clinical

    out = Path(out)
    group_dir = out / "group"
    masks_dir = out / "masks"
    masks_dir.mkdir(parents=True, exist_ok=True)
    truth = cohort.subjects.set_index("participant_id")
    method_rows, manual_rows = [], []
    rng = np.random.default_rng(seed)
    for (sub, ses), rows in cohort.volumes.groupby(["participant_id", "session_id"], sort=True):
        for row in rows.itertuples():
            path = masks_dir / f"{sub}_{ses}_{row.method}.nii.gz"
            shift = np.asarray(MASK_SHIFTS.get(row.method, (1.0, 1.0, 1.0))) * rng.uniform(0.3, 1.7, 3)
            mask = _ellipsoid(row.volume_ml, shift * rng.choice([-1, 1], 3), 1 + rng.normal(0, 0.08, 3))
            nib.save(nib.Nifti1Image(mask, np.eye(4)), str(path))
            method_rows.append({"participant_id": sub, "session_id": ses, "method": row.method, "path": path})
        if ses == "ses-01" and int(sub.removeprefix("sub-")) <= n_manual:
            path = masks_dir / f"{sub}_{ses}_manual.nii.gz"
            manual = _ellipsoid(float(truth.loc[sub, "thal0"]), np.zeros(3), np.ones(3))
            nib.save(nib.Nifti1Image(manual, np.eye(4)), str(path))
            manual_rows.append({"participant_id": sub, "session_id": ses, "path": path})
    volumes = cohort.joined()
    write_tsv(volumes, group_dir / "volumes.tsv")
    manual = pd.DataFrame(manual_rows, columns=["participant_id", "session_id", "path"])
    run_agreement(pd.DataFrame(method_rows), manual, group_dir, figures=False)
    run_clinical(volumes, None, group_dir, figures=False)
    write_template_maps(pd.DataFrame(method_rows), out, group_dir)
    return group_dir


def write_template_maps(method_rows: pd.DataFrame, out: Path, group_dir: Path, *, n_sessions: int = 6,
                        template: str = "MNI152NLin2009cAsym") -> None:
    """Template-space masks for the first ``n_sessions`` sessions and the group maps made from them.

    Each method's mask is the TemplateFlow home's HOSPA thalamus at a
    method-specific probability, moved by about :data:`MASK_SHIFTS` (rounded)
    per session. Skipped (logged) when the TemplateFlow home lacks the template.
    """
    import logging

    import nibabel as nib

    from thalamus_bidsapp.config import RunConfig
    from thalamus_bidsapp.errors import ThalamusError
    from thalamus_bidsapp.group.template_maps import run_template_maps
    from thalamus_bidsapp.image.prior import prior_sides
    from thalamus_bidsapp.tools.templateflow import find_template_files

    try:
        files = find_template_files(template)
    except ThalamusError as err:
        logging.getLogger(__name__).warning("no template maps in the simulated cohort: %s", err)
        return
    sides = prior_sides(nib.load(str(files.prior)), files.prior_volumes)
    prior = np.maximum(sides["L"].get_fdata(), sides["R"].get_fdata())
    affine = nib.load(str(files.target)).affine
    sessions = method_rows[["participant_id", "session_id"]].drop_duplicates().head(n_sessions)
    rows = []
    for index, (sub, ses) in enumerate(sessions.itertuples(index=False)):
        anat = out / sub / ses / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        for order, method in enumerate(method_rows["method"].drop_duplicates()):
            shift = np.round(np.asarray(MASK_SHIFTS.get(method, (1.0, 1.0, 1.0))) * (index % 3) / 2).astype(int)
            mask = np.roll(prior >= 0.3 + 0.08 * order, tuple(shift), axis=(0, 1, 2)).astype(np.uint8)
            stem = f"{sub}_{ses}_space-{{}}_label-thalamus_desc-{method}_mask.nii.gz"
            nib.save(nib.Nifti1Image(mask, affine), str(anat / stem.format(template)))
            (anat / stem.format("T1w")).write_bytes(b"")
            rows.append({"participant_id": sub, "session_id": ses, "method": method, "path": anat / stem.format("T1w")})
    config = RunConfig(bids_dir=out, output_dir=out, analysis_level="group", work_dir=out, template=template)
    run_template_maps(config, group_dir, pd.DataFrame(rows))


if __name__ == "__main__":  # pragma: no cover
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "simulated_cohort")
    path = write_bids_tree(simulate_cohort(), out)
    sys.stdout.write(f"wrote {out} (volumes: {path})\n")
