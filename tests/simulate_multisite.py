"""Simulated multi-site MS cohort on real thalamus anatomy, with planted site, age and EDSS effects.

Each simulated subject starts from the left and right thalamus volumes of
one real brain of the shared test data (FreeSurfer's bert and subject2, the
five SynthSeg training label maps: labels 10 and 49); the ICV is drawn
(1450 mL, 60 mL more for men). On top (per hemisphere, :data:`TRUTH`): the age
effect, the EDSS effect, an ICV effect and individual variation. Sites
(:data:`SITES`) differ in their patients (older and more disabled at C) and
in their measurement: an additive offset per method and side and a
multiplicative factor on the measurement error. So a model fitted on the
raw volumes confounds the site offsets with age and EDSS; after ComBat with
age, EDSS and sex protected the planted coefficients come back.

:func:`write_multisite_dataset` writes the cohort as a BIDS dataset (T1w
sidecars with the scanner fields, partly inherited from a dataset-level
``T1w.json``) and as the participant outputs the group level reads back.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from thalamus_bidsapp.bidsio.atomic import write_json, write_tsv

#: Real label maps: (file under the shared data, left label, right label).
REAL_BRAINS = (
    ("freesurfer_bert_7.2/mri/aseg.mgz", 10, 49),
    ("freesurfer_subject2/aparc.a2009s+aseg.mgz", 10, 49),
    *((f"synthseg_label_maps/training_seg_0{i}.nii.gz", 10, 49) for i in range(1, 6)),
)
#: Planted effects on each hemisphere's true volume (mL per year of age, per EDSS point, per mL of ICV).
TRUTH = {"age": -0.03, "edss": -0.15, "icv": 0.002}
#: Per site: scanners (before, after an upgrade: Manufacturer, model, field, serial), institution, age range,
#: EDSS shift, additive offset (mL, scaled per method and side) and measurement-error factor.
SITES = {
    "A": {"scanners": (("Siemens", "Prisma", 3, "1001"),), "institution": "Hospital A", "ages": (20, 50),
          "edss_shift": 0.0, "offset": 0.40, "scale": 2.0},
    "B": {"scanners": (("GE", "Discovery MR750", 3, "2002"),), "institution": "Clinic B", "ages": (28, 60),
          "edss_shift": 0.5, "offset": 0.0, "scale": 1.0},
    "C": {"scanners": (("Philips", "Achieva", 1.5, "3003"), ("Philips", "Ingenia", 3, "3004")),
          "institution": "University C", "ages": (35, 70), "edss_shift": 1.0, "offset": -0.35, "scale": 0.6},
}
#: (method, contrast, bias mL, measurement error SD mL)
METHODS = (("first", "T1w", 0.30, 0.06), ("dbsegment", "T1w", -0.10, 0.08))


def real_anatomy(shared_data: Path) -> pd.DataFrame:
    """Left and right thalamus volume (mL) of each real label map."""
    import nibabel as nib

    rows = []
    for name, left, right in REAL_BRAINS:
        img = nib.load(str(Path(shared_data) / name))
        labels = np.asanyarray(img.dataobj)
        voxel_ml = abs(float(np.linalg.det(img.affine[:3, :3]))) / 1000
        rows.append({"anatomy": name.split("/")[0] + ":" + Path(name).name.split(".")[0],
                     "left_ml": float((labels == left).sum() * voxel_ml),
                     "right_ml": float((labels == right).sum() * voxel_ml)})
    return pd.DataFrame(rows)


@dataclass
class MultisiteCohort:
    """participants.tsv, sessions (one table, all subjects), the long volumes table and the scanner of each session."""

    participants: pd.DataFrame
    sessions: pd.DataFrame
    volumes: pd.DataFrame
    scanners: pd.DataFrame

    def joined(self) -> pd.DataFrame:
        """Volumes with the clinical columns and the true site and scanner (what the group level builds)."""
        out = self.volumes.merge(self.participants, on="participant_id", how="left")
        out = out.merge(self.sessions, on=["participant_id", "session_id"], how="left")
        return out.merge(self.scanners, on=["participant_id", "session_id"], how="left")


def simulate_multisite(anatomy: pd.DataFrame, n_subjects: int = 300, n_sessions: int = 1, *, seed: int = 0,
                       sites: dict | None = None) -> MultisiteCohort:
    """Draw the cohort (see the module docstring); sessions are a year or two apart."""
    sites = sites or SITES
    rng = np.random.default_rng(seed)
    names = list(sites)
    subjects, sessions, volumes, scanners = [], [], [], []
    for i in range(n_subjects):
        pid, site = f"sub-{i + 1:03d}", names[i % len(names)]
        spec = sites[site]
        brain = anatomy.iloc[int(rng.integers(len(anatomy)))]
        sex = str(rng.choice(["F", "M"]))
        age0 = float(np.round(rng.uniform(*spec["ages"]), 1))
        icv = 1450.0 + (60.0 if sex == "M" else -60.0) + rng.normal(0, 80)
        edss0 = 1.0 + 0.05 * (age0 - 20) + spec["edss_shift"] + rng.normal(0, 1.0)
        own = rng.normal(0, 0.05, 2)  # the subject's own left and right deviation
        subjects.append({"participant_id": pid, "sex": sex, "anatomy": brain["anatomy"]})
        time = 0.0
        for k in range(n_sessions):
            time += 0.0 if k == 0 else float(rng.uniform(1.0, 2.0))
            sid = f"ses-{k + 1:02d}"
            age, edss = age0 + time, float(np.clip(edss0 + 0.3 * time + rng.normal(0, 0.3) * (k > 0), 0, 9.5))
            scanner = spec["scanners"][min(k, len(spec["scanners"]) - 1)] if n_sessions > 1 else spec["scanners"][0]
            sessions.append({"participant_id": pid, "session_id": sid, "age": round(age, 2), "edss": round(edss, 2),
                             "acq_time": (pd.Timestamp("2018-01-01") + pd.Timedelta(days=round(time * 365.25)))
                             .strftime("%Y-%m-%dT%H:%M:%S"), "site_true": site})
            scanners.append({"participant_id": pid, "session_id": sid, "manufacturer": scanner[0],
                             "model": scanner[1], "field": scanner[2], "serial": scanner[3],
                             "institution": spec["institution"]})
            for side, base, dev in (("left", brain["left_ml"], own[0]), ("right", brain["right_ml"], own[1])):
                true = (base + TRUTH["icv"] * (icv - 1450.0) + TRUTH["age"] * (age - 45)
                        + TRUTH["edss"] * (edss - 3) + dev)
                for m, (method, contrast, bias, error) in enumerate(METHODS):
                    offset = spec["offset"] * (1 + 0.3 * m) * (1.1 if side == "left" else 0.9)
                    measured = true + bias + offset + spec["scale"] * rng.normal(0, error)
                    volumes.append({"participant_id": pid, "session_id": sid, "method": method, "contrast": contrast,
                                    "hemisphere": side, "n_voxels": int(round(measured * 1000)),
                                    "volume_ml": round(measured, 5), "icv_ml": round(icv, 2),
                                    "icv_source": "simulated"})
    long = pd.DataFrame(volumes)
    bilateral = (long.groupby(["participant_id", "session_id", "method", "contrast"], sort=False)
                 .agg(n_voxels=("n_voxels", "sum"), volume_ml=("volume_ml", "sum"), icv_ml=("icv_ml", "first"),
                      icv_source=("icv_source", "first"))
                 .reset_index().assign(hemisphere="bilateral"))
    long = pd.concat([bilateral, long], ignore_index=True).sort_values(
        ["participant_id", "session_id", "method", "hemisphere"], ignore_index=True)
    return MultisiteCohort(pd.DataFrame(subjects), pd.DataFrame(sessions), long, pd.DataFrame(scanners))


def write_multisite_dataset(cohort: MultisiteCohort, root: Path, *, age_in: str = "sessions") -> tuple[Path, Path]:
    """The cohort as a BIDS dataset with T1w sidecars and as participant outputs; returns (bids, out).

    Every T1w sidecar has Manufacturer, ManufacturersModelName,
    DeviceSerialNumber and InstitutionName; MagneticFieldStrength is
    inherited from a dataset-level ``T1w.json`` (3 T) unless the session's
    own sidecar says otherwise. The participant outputs name the T1w in the
    ``Sources`` of their ``desc-preproc_T1w.json``, except for the first
    subject, whose scanner is found through the T1w file of the input folder.
    ``age_in`` puts the age in the sessions tables (the age at the scan) or
    in participants.tsv (the first session's).
    """
    bids, out = Path(root) / "bids", Path(root) / "out"
    write_json({"Name": "simulated multi-site cohort", "BIDSVersion": "1.10.0"}, bids / "dataset_description.json")
    write_json({"MagneticFieldStrength": 3}, bids / "T1w.json")
    # centre: the site as a participants.tsv code (not named "site", so the sidecars' InstitutionName is the site)
    participants = cohort.participants.assign(
        centre=cohort.sessions.groupby("participant_id")["site_true"].first().loc[cohort.participants["participant_id"]]
        .to_numpy())
    sessions = cohort.sessions.drop(columns="site_true")
    if age_in == "participants":
        first = sessions.groupby("participant_id")["age"].first()
        participants = participants.assign(age=participants["participant_id"].map(first).to_numpy())
        sessions = sessions.drop(columns="age")
    write_tsv(participants, bids / "participants.tsv")
    write_json({"Name": "thalamus_bidsapp", "BIDSVersion": "1.10.0", "DatasetType": "derivative",
                "DatasetLinks": {"raw": str(bids)}}, out / "dataset_description.json")
    scanners = cohort.scanners.set_index(["participant_id", "session_id"])
    for pid, table in sessions.groupby("participant_id", sort=True):
        write_tsv(table.drop(columns="participant_id"), bids / pid / f"{pid}_sessions.tsv")
        for sid in table["session_id"]:
            s = scanners.loc[(pid, sid)]
            stem = f"{pid}_{sid}"
            anat = bids / pid / sid / "anat"
            sidecar = {"Manufacturer": s["manufacturer"], "ManufacturersModelName": s["model"],
                       "DeviceSerialNumber": s["serial"], "InstitutionName": s["institution"]}
            if s["field"] != 3:
                sidecar["MagneticFieldStrength"] = s["field"]
            write_json(sidecar, anat / f"{stem}_T1w.json")
            out_anat = out / pid / sid / "anat"
            rows = cohort.volumes[(cohort.volumes["participant_id"] == pid) & (cohort.volumes["session_id"] == sid)]
            write_tsv(rows.drop(columns=["participant_id", "session_id"]),
                      out_anat / f"{stem}_label-thalamus_volumes.tsv")
            if pid == "sub-001":
                (anat / f"{stem}_T1w.nii.gz").write_bytes(b"")  # found by name in the input folder
            else:
                write_json({"Sources": [f"bids:raw:{pid}/{sid}/anat/{stem}_T1w.nii.gz"]},
                           out_anat / f"{stem}_desc-preproc_T1w.json")
    return bids, out
