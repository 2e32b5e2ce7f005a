#!/usr/bin/env python
"""Benchmark of the longitudinal mode against cross-sectional differences, on simulated rescans of real T1w.

For each subject (ds002748 sub-01, FreeSurfer's bert) the real T1w is
'rescanned' (tests/longitudinal/simulate.py: rigid move 2-4 degrees and
1-3 mm, smooth bias field +-8 %, Rician noise 2 %, one cubic resampling):
a baseline and ``--rescans`` rescans without change, and one rescan per
``--atrophy`` level with a known atrophy (a smooth radial contraction about
the thalami, true volume change ``scale**3 - 1`` exactly). Then, in the
same run:

- cross-sectional: MeshNet (with left and right) on every image, change =
  difference of the two masks' volumes;
- longitudinal: one within-subject template of all the subject's images,
  MeshNet on it once, each image's volume by Jacobian integration
  (thalamus_bidsapp.workflows.longitudinal.measure_subject).

Printed: scan-rescan median and maximum |change_pct| over every pair of the
no-change images, bilateral and per side; for each atrophy level the
measured change against the truth (percentage points); the time of the
template, of its segmentation, and per extra session (rigid share of the
template plus its SyN and Jacobian), wall and CPU. Images and cross-sectional
masks are cached in ``--scratch`` (outside the repository).

Usage::

    nice -n 5 python benchmarks/bench_longitudinal.py [--subjects sub01 bert] [--rescans 2]
        [--atrophy -0.5 -1 -2] [--threads 2] [--pairs] [--scratch /tmp/long_bench]

``--pairs`` adds the two-visit study: one two-session template of the
baseline with each other image (the weakest case: with two sessions, each
is half of its template).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("THALAMUS_TEST_DATA", REPO.parent / "shared" / "data"))
MODELS = SHARED / "brainchop" / "models"
SUBJECTS = {
    "sub01": (SHARED / "ds002748_subset" / "sub-01" / "anat" / "sub-01_T1w.nii.gz", None),
    "bert": (SHARED / "freesurfer_bert_7.2" / "mri" / "norm.mgz", SHARED / "freesurfer_bert_7.2" / "mri" / "aseg.mgz"),
}
LOGGER = logging.getLogger("bench_longitudinal")


def _meshnet(image, threads: int):
    from thalamus_bidsapp.tools.meshnet import segment_thalamus_sides

    _, sides, _ = segment_thalamus_sides(image, MODELS / "model30chan18cls", MODELS / "model21_104class",
                                         threads=threads)
    return sides


def _volumes(sides, zooms) -> dict[str, float]:
    import numpy as np

    voxel = float(np.prod(zooms[:3])) / 1000.0
    left, right = float((sides == 1).sum()) * voxel, float((sides == 2).sum()) * voxel
    return {"left": left, "right": right, "bilateral": left + right}


def prepare(name: str, scratch: Path, rescans: int, atrophy: list[float], threads: int):
    """The subject's simulated sessions (cached): list of (label, true change in %, image, cross volumes)."""
    import nibabel as nib
    import numpy as np

    from tests.longitudinal.simulate import Contraction, covering_ball, rescan

    t1w_path, aseg_path = SUBJECTS[name]
    original = nib.load(str(t1w_path))
    original = nib.Nifti1Image(np.asarray(original.dataobj, dtype=np.float32), original.affine)
    folder = scratch / name
    folder.mkdir(parents=True, exist_ok=True)
    reference = folder / "thalamus_reference.nii.gz"
    if not reference.exists():
        if aseg_path is not None:
            aseg = nib.load(str(aseg_path))
            ref = np.isin(np.asarray(aseg.dataobj), (10, 49)).astype(np.uint8)
        else:
            ref = (_meshnet(original, threads) > 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(ref, original.affine), reference)
    center, radius = covering_ball(nib.load(str(reference)))
    plan = [("base", 0.0)] + [(f"rescan{i + 1}", 0.0) for i in range(rescans)]
    plan += [(f"atrophy{abs(a):g}", a) for a in atrophy]
    sessions = []
    for seed, (label, change) in enumerate(plan, start=100):
        path = folder / f"{label}.nii.gz"
        if not path.exists():
            contraction = Contraction(center, radius, change / 100.0) if change else None
            nib.save(rescan(original, seed, contraction=contraction), path)
        image = nib.load(str(path))
        cross_file = folder / f"{label}_meshnet.json"
        if not cross_file.exists():
            started, cpu = time.perf_counter(), time.process_time()
            volumes = _volumes(_meshnet(image, threads), image.header.get_zooms())
            cross_file.write_text(json.dumps({"volumes": volumes, "wall_s": time.perf_counter() - started,
                                              "cpu_s": time.process_time() - cpu}))
        sessions.append((label, change, path, json.loads(cross_file.read_text())))
    LOGGER.info("%s: ball centre %s, radius %.1f mm; %d sessions", name, np.round(center, 1), radius, len(sessions))
    return sessions


def longitudinal(name: str, sessions, scratch: Path, threads: int, tag: str = "") -> dict:
    """measure_subject on the subject's images (cached): volumes per session and the timings."""
    from thalamus_bidsapp.methods.registry import get_method
    from thalamus_bidsapp.workflows.longitudinal import (
        CACHE_VERSION,
        LongSession,
        TemplateSegmentation,
        measure_subject,
    )

    cache = scratch / name / f"longitudinal{tag}_v{CACHE_VERSION}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    import nibabel as nib
    import numpy as np

    from thalamus_bidsapp.tools.deepbet import brain_mask

    long_sessions = []
    for label, _, path, _ in sessions:
        # Each image's own deepbet brain mask, as the participant level publishes it for the template.
        mask = scratch / name / f"{label}_brain_mask.nii.gz"
        if not mask.exists():
            image = nib.load(str(path))
            nib.save(nib.Nifti1Image(np.asarray(brain_mask(image, threads)[0].dataobj, np.uint8), image.affine),
                     mask)
        long_sessions.append(LongSession(label, path, mask, False))
    started, cpu = time.perf_counter(), time.process_time()
    segmentation = TemplateSegmentation("meshnet", get_method("meshnet").template_segmenter({
        "model_dir": MODELS / "model30chan18cls", "sides_model_dir": MODELS / "model21_104class"}))
    result = measure_subject(name, long_sessions, segmentations=[segmentation], threads=threads)
    record = {"volumes": result.methods["meshnet"].volumes, "seconds": result.seconds, "failed": result.failed,
              "wall_s": time.perf_counter() - started, "cpu_s": time.process_time() - cpu}
    cache.write_text(json.dumps(record))
    return record


def _pct(before: float, after: float) -> float:
    return 100.0 * (after - before) / before


def summarise(results: dict) -> None:
    """Print the figures of every subject together."""
    import numpy as np

    hemis = ("bilateral", "left", "right")
    rescan_err = {(mode, h): [] for mode in ("longitudinal", "cross-sectional") for h in hemis}
    atrophy_err = {(mode, h): [] for mode in ("longitudinal", "cross-sectional") for h in hemis}
    print("\n== per atrophy level: measured change_pct vs truth (subject, level, mode, hemisphere) ==")
    for name, (sessions, long) in results.items():
        cross = {label: c["volumes"] for label, _, _, c in sessions}
        modes = {"longitudinal": long["volumes"], "cross-sectional": cross}
        still = [label for label, change, _, _ in sessions if change == 0]
        for (mode, vols), h in itertools.product(modes.items(), hemis):
            for a, b in itertools.combinations(still, 2):
                rescan_err[mode, h].append(abs(_pct(vols[a][h], vols[b][h])))
            for label, change, _, _ in sessions:
                if change:
                    measured = _pct(vols["base"][h], vols[label][h])
                    truth = change
                    atrophy_err[mode, h].append(measured - truth)
                    print(f"{name:6s} {change:+5.2f}% {mode:15s} {h:9s} measured {measured:+6.2f}% "
                          f"error {measured - truth:+5.2f} pp")
    print("\n== scan-rescan |change_pct| over every pair of no-change images ==")
    for (mode, h), values in rescan_err.items():
        print(f"{mode:15s} {h:9s} median {np.median(values):5.2f}%  max {np.max(values):5.2f}%  (n={len(values)})")
    print("\n== known atrophy: |error| in percentage points ==")
    for (mode, h), values in atrophy_err.items():
        values = np.abs(values)
        print(f"{mode:15s} {h:9s} median {np.median(values):5.2f} pp  max {np.max(values):5.2f} pp  (n={len(values)})")
    print("\n== time ==")
    for name, (sessions, long) in results.items():
        seconds = long["seconds"]
        per_session = [v for k, v in seconds.items() if k.startswith("ses-")]
        segmentation = sum(v for k, v in seconds.items() if k.startswith("segmentation"))
        n = len(sessions)
        cross = [c["wall_s"] for _, _, _, c in sessions]
        print(f"{name}: {n} sessions; template {seconds['template']:.1f} s ({seconds['template'] / n:.1f} s per "
              f"session), template MeshNet {segmentation:.1f} s, SyN + Jacobian per session "
              f"median {np.median(per_session):.1f} s; total longitudinal {long['wall_s']:.1f} s wall, "
              f"{long['cpu_s']:.1f} s CPU; per extra session {seconds['template'] / n + np.median(per_session):.1f} s "
              f"wall; cross-sectional MeshNet per image median {np.median(cross):.1f} s wall")


def two_session_templates(name: str, sessions, scratch: Path, threads: int) -> list[tuple[str, float, dict]]:
    """The usual two-visit study: one template of the baseline and each other image: (label, truth, result)."""
    base = sessions[0]
    return [(other[0], other[1], longitudinal(name, [base, other], scratch, threads, tag=f"_pair_{other[0]}"))
            for other in sessions[1:]]


def summarise_pairs(pairs: dict) -> None:
    """Print the two-session templates' figures: |change| without change, error against the truth with one."""
    import numpy as np

    hemis = ("bilateral", "left", "right")
    print("\n== two-session templates (baseline and one image): measured change_pct vs truth ==")
    still = {h: [] for h in hemis}
    atrophy = {h: [] for h in hemis}
    for name, rows in pairs.items():
        for label, truth, result in rows:
            volumes = result["volumes"]
            for h in hemis:
                measured = _pct(volumes["base"][h], volumes[label][h])
                (atrophy if truth else still)[h].append(measured - truth)
            errors = " ".join(f"{h} {_pct(volumes['base'][h], volumes[label][h]) - truth:+5.2f}" for h in hemis)
            print(f"{name:6s} base -> {label:10s} truth {truth:+5.2f}%  error (pp) {errors}")
    for title, values in (("scan-rescan |change_pct|", still), ("known atrophy |error| (pp)", atrophy)):
        for h in hemis:
            if values[h]:
                v = np.abs(values[h])
                print(f"two-session {title:27s} {h:9s} median {np.median(v):5.2f}  max {np.max(v):5.2f}  (n={len(v)})")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", nargs="+", default=list(SUBJECTS), choices=list(SUBJECTS))
    parser.add_argument("--rescans", type=int, default=2)
    parser.add_argument("--atrophy", type=float, nargs="+", default=[-0.5, -1.0, -2.0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--pairs", action="store_true",
                        help="also one two-session template per image with the baseline (the two-visit study)")
    parser.add_argument("--prepare-only", action="store_true",
                        help="only make (and cache) the images and their cross-sectional masks")
    parser.add_argument("--scratch", type=Path, default=Path(os.environ.get("TMPDIR", "/tmp")) / "long_bench")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("nipype").setLevel(logging.WARNING)
    os.environ.setdefault("ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS", str(args.threads))
    results, pairs = {}, {}
    for name in args.subjects:
        sessions = prepare(name, args.scratch, args.rescans, args.atrophy, args.threads)
        if args.prepare_only:
            continue
        results[name] = (sessions, longitudinal(name, sessions, args.scratch, args.threads))
        summarise({name: results[name]})
        if args.pairs:
            pairs[name] = two_session_templates(name, sessions, args.scratch, args.threads)
            summarise_pairs({name: pairs[name]})
    if len(results) > 1:
        print("\n######## all subjects ########")
        summarise(results)
        if pairs:
            summarise_pairs(pairs)


if __name__ == "__main__":
    main()
