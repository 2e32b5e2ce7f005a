#!/usr/bin/env python
"""An MS session (T1w + FLAIR + lesion mask) against the T1w-only session of the same patient, side by side.

What it runs, for each patient of ``../shared/data/ms_lesjak2017_mni``
(patient07 and patient19 by default) and each repeat, each in a fresh child
process with a fresh output and work folder:

1. **the MS session**: ``thalamus-bidsapp BIDS OUT participant
   --participant-label <label> --derivatives lesions=<lesion dataset>`` with
   default methods and options (on the pip path: deepbet, MeshNet and its
   left/right model, template space, the FLAIR registered to the T1w, the
   lesion mask brought onto the T1w grid and the T1w lesion-filled);
2. **the T1w-only session** of the same patient: the same command on a
   dataset holding only its T1w;
3. **a rerun with nothing to do**: the MS command again on the same output
   and work folders.

What it prints: the minimum over the repeats of each wall time (child
process start to exit), the ratio MS / T1w-only (target <= 1.3), the FLAIR
registration's own time (``register_flair_wf.register`` in the run's
``logs/<run>/timings.tsv``; target <= 20 s), the no-op rerun's wall time
(target <= 5 s per session), the mutual information of the selected FLAIR
registration (from the session's registration QC table), and the machine's
load average before, between the repeats and after, since other processes
on the machine lengthen every figure.

Usage::

    python benchmarks/bench_ms_session.py [--patients patient07 patient19] [--repeat 2] [--keep DIR]

Environment: as ``bench_participant.py`` (MeshNet weights from
``$THALAMUS_MESHNET_MODEL`` / ``$THALAMUS_MESHNET_SIDES_MODEL`` or the shared
data; a TemplateFlow home built from ``../shared/data/templates`` unless
``$TEMPLATEFLOW_HOME`` holds the template); no network is used.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from bench_participant import (  # noqa: E402 - the folder is put on the path just above
    SHARED,
    _load,
    app_environment,
    run_measured,
)

LOGGER = logging.getLogger("bench_ms_session")

PATIENTS = SHARED / "ms_lesjak2017_mni"
T1 = "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
FLAIR = "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
LESIONS = "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz"
FLAIR_STEP = "register_flair_wf.register"

TARGET_RATIO = 1.3
TARGET_REGISTRATION_S = 20.0
TARGET_NOOP_S = 5.0


def _label(patient: str) -> str:
    return patient.removeprefix("patient")


def _description(root: Path, name: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": name, "BIDSVersion": "1.10.0"}))


def build_datasets(patients: list[str], root: Path) -> dict[str, Path]:
    """Three datasets: the MS one (T1w + FLAIR), the T1w-only one, and the lesion masks as a derivatives dataset."""
    import nibabel as nib
    import numpy as np

    datasets = {"ms": root / "bids_ms", "t1w": root / "bids_t1w", "lesions": root / "lesions"}
    for name, path in datasets.items():
        _description(path, f"Lesjak 2017 MS patients ({name})")
    for patient in patients:
        label = _label(patient)
        for name in ("ms", "t1w"):
            anat = datasets[name] / f"sub-{label}" / "anat"
            anat.mkdir(parents=True)
            shutil.copyfile(PATIENTS / patient / T1, anat / f"sub-{label}_T1w.nii.gz")
            if name == "ms":
                shutil.copyfile(PATIENTS / patient / FLAIR, anat / f"sub-{label}_FLAIR.nii.gz")
        lesion_anat = datasets["lesions"] / f"sub-{label}" / "anat"
        lesion_anat.mkdir(parents=True)
        mask = nib.load(str(PATIENTS / patient / LESIONS))
        nib.save(nib.Nifti1Image((np.asanyarray(mask.dataobj) > 0).astype(np.uint8), mask.affine),
                 str(lesion_anat / f"sub-{label}_desc-lesion_mask.nii.gz"))
    return datasets


def run_app(bids: Path, label: str, env: dict[str, str], folder: Path, extra: tuple[str, ...] = ()) -> dict:
    """One participant run into ``folder/out`` (work in ``folder/work``): its wall time and exit code."""
    folder.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "thalamus_bidsapp", str(bids), str(folder / "out"), "participant",
               "--participant-label", label, "-w", str(folder / "work"), *extra]
    logs = sorted(folder.glob("app*.log"))
    result = run_measured(command, env, folder / f"app{len(logs)}.log")
    if result["code"] != 0:
        raise SystemExit(f"the app failed (exit {result['code']}); log: {folder}")
    return result


def flair_figures(out: Path) -> dict[str, float]:
    """The FLAIR registration's own seconds (latest run's timings) and the selected MI (QC table)."""
    import pandas as pd

    from thalamus_bidsapp.participant.timings import read_timings

    timings = read_timings(max((out / "logs").glob("*/timings.tsv"), key=lambda p: p.stat().st_mtime))
    rows = timings[timings["step"] == FLAIR_STEP]
    mi = float("nan")
    for path in out.rglob("*_desc-registration_qc.tsv"):
        qc = pd.read_csv(path, sep="\t", na_values=["n/a"], keep_default_na=False)
        selected = qc[(qc["image"] == "FLAIR") & (qc["selected"].astype(str).str.lower() == "true")]
        if len(selected):
            mi = float(selected["mi"].iloc[0])
    return {"registration_s": float(rows["seconds"].iloc[0]) if len(rows) else float("nan"), "mi": mi}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--patients", nargs="+", default=["patient07", "patient19"])
    parser.add_argument("--repeat", type=int, default=2, help="runs of each; the minimum is reported")
    parser.add_argument("--keep", type=Path, help="keep the outputs and logs in this folder")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    missing = [p for p in args.patients if not (PATIENTS / p / T1).is_file()]
    if missing:
        raise SystemExit(f"test data not found: {', '.join(missing)} in {PATIENTS} (set THALAMUS_TEST_DATA)")
    from thalamus_bidsapp.participant.resources import available_cpus

    cpus = available_cpus()
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="bench_ms_session_"))
    env = app_environment(root)
    LOGGER.info("MS session benchmark: %s of %s, %d CPUs, %d repeats; load average before: %s",
                ", ".join(args.patients), PATIENTS, cpus, args.repeat, _load())
    datasets = build_datasets(args.patients, root)
    lesions = ("--derivatives", f"lesions={datasets['lesions']}")
    runs: dict[str, dict[str, list[dict]]] = {p: {"ms": [], "t1w": [], "noop": []} for p in args.patients}
    try:
        for index in range(args.repeat):
            for patient in args.patients:
                label, folder = _label(patient), root / f"run{index}" / patient
                ms = run_app(datasets["ms"], label, env, folder / "ms", lesions)
                ms.update(flair_figures(folder / "ms" / "out"))
                t1w = run_app(datasets["t1w"], label, env, folder / "t1w")
                noop = run_app(datasets["ms"], label, env, folder / "ms", lesions)
                for name, result in (("ms", ms), ("t1w", t1w), ("noop", noop)):
                    runs[patient][name].append(result)
                LOGGER.info("  run %d, %s: MS %.1f s (FLAIR registration %.1f s, MI %.4f), T1w only %.1f s, "
                            "no-op rerun %.1f s; load average %s", index + 1, patient, ms["wall_s"],
                            ms["registration_s"], ms["mi"], t1w["wall_s"], noop["wall_s"], _load())
    finally:
        if args.keep:
            shutil.copytree(root, args.keep, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)

    def verdict(value: float, target: float, unit: str = "") -> str:
        return f"{value:.2f}{unit} (target <= {target}{unit}: {'met' if value <= target else 'NOT met'})"

    for patient, results in runs.items():
        best = {name: min(r["wall_s"] for r in rs) for name, rs in results.items()}
        registration = min(r["registration_s"] for r in results["ms"])
        mi = sorted({round(r["mi"], 6) for r in results["ms"]})
        LOGGER.info("%s (minimum of %d): MS session %.1f s, T1w-only session %.1f s, ratio MS / T1w-only %s; "
                    "FLAIR registration %s; no-op rerun %s; selected FLAIR MI %s", patient, args.repeat,
                    best["ms"], best["t1w"], verdict(best["ms"] / best["t1w"], TARGET_RATIO),
                    verdict(registration, TARGET_REGISTRATION_S, " s"), verdict(best["noop"], TARGET_NOOP_S, " s"),
                    ", ".join(f"{v:.4f}" for v in mi))
    LOGGER.info("load average after: %s on %d CPUs%s", _load(), cpus,
                " -- the machine was busy before the runs: figures are disturbed" if load_before > 0.5 * cpus else "")


if __name__ == "__main__":
    main()
