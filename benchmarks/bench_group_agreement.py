#!/usr/bin/env python
"""Benchmark of the group agreement step against just reading the same masks.

Builds N sessions x 10 thalamus masks (256^3, 1 mm, uint8 NIfTI-gz: nine
methods and one manual mask per session, thalamus-like pairs of ellipsoids
with method-specific bias, jitter and rough borders), then times, each in a
fresh child process:

1. ``read``: load every mask's voxels (``np.asanyarray(nib.load(p).dataobj)``);
2. ``agreement``: :func:`thalamus_bidsapp.group.agreement.run_agreement`
   (tables; the figures are timed separately because their cost does not
   grow with the number of voxels read).

It prints both times, their ratio and each child's peak resident memory
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``). Targets: ratio at
most 2 and peak memory under 2 GB for N = 1000.

Usage::

    python benchmarks/bench_group_agreement.py [N] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHAPE = (256, 256, 256)
METHODS = (
    "freesurfer", "first", "dbsegment", "mindglideT1w", "mindglideFLAIR",
    "mindglideR1", "mindglideT1wFLAIR", "mindglideT1wR1", "meshnet",
)
# Systematic volume bias per method (radius scale), loosely after the paper's
# Bland-Altman biases (FreeSurfer and FIRST larger than manual).
BIAS = dict(zip(METHODS, (1.12, 1.10, 1.03, 1.02, 0.98, 1.0, 1.01, 1.02, 1.04)))
HALF = 40  # half-size of the local box in which the blobs are drawn


def _blob_pair(rng: np.random.Generator, centre: np.ndarray, radii: np.ndarray, scale: float) -> np.ndarray:
    """Two thalamus-like ellipsoids (left/right) with a rough border, in a (2*HALF)^3 box."""
    g = np.arange(-HALF, HALF, dtype=np.float32)
    z, y, x = np.meshgrid(g, g, g, indexing="ij")
    # Low-frequency noise on the border: upsampled coarse random field.
    coarse = rng.normal(0, 0.08, size=(10, 10, 10)).astype(np.float32)
    rough = np.kron(coarse, np.ones((8, 8, 8), dtype=np.float32))
    box = np.zeros((2 * HALF,) * 3, dtype=bool)
    for side in (-1, 1):
        c = centre + rng.normal(0, 0.8, 3) + np.array([side * 13.0, 0, 0])
        r = radii * scale * rng.normal(1, 0.03, 3)
        d = ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2
        box |= d < 1 + rough
    return box


def make_dataset(
    root: Path, n_sessions: int, seed: int = 0, distinct: int | None = None
) -> tuple[list[tuple], list[tuple]]:
    """Write ``n_sessions`` x (9 methods + manual) masks under ``root``; return the two row lists.

    With ``distinct`` < ``n_sessions``, only that many sessions are drawn and
    the others are hard links to them (cycling): every session still has its
    own ten files, each opened and decompressed when read, but generating
    10,000 masks does not take an hour.
    """
    import nibabel as nib

    rng = np.random.default_rng(seed)
    affine = np.array([[-1.0, 0, 0, 128], [0, 0, 1, -128], [0, -1, 0, 128], [0, 0, 0, 1]])
    method_rows, manual_rows = [], []
    full = np.zeros(SHAPE, dtype=np.uint8)
    lo = np.array(SHAPE) // 2 - HALF
    sl = tuple(slice(int(a), int(a) + 2 * HALF) for a in lo)
    distinct = n_sessions if distinct is None else max(1, min(distinct, n_sessions))
    for s in range(n_sessions):
        pid = f"{s:04d}"
        anat = root / f"sub-{pid}" / "ses-01" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        if s >= distinct:
            source = f"{s % distinct:04d}"
            for method in ("manual", *METHODS):
                name = f"sub-{{}}_ses-01_space-T1w_label-thalamus_desc-{method}_mask.nii.gz"
                path = anat / name.format(pid)
                os.link(root / f"sub-{source}" / "ses-01" / "anat" / name.format(source), path)
                if method == "manual":
                    manual_rows.append((pid, "01", str(path)))
                else:
                    method_rows.append((pid, "01", method, str(path)))
            continue
        centre = rng.normal(0, 3, 3)
        radii = np.array([8.5, 14.0, 8.0]) * rng.normal(1, 0.08)
        for method in ("manual", *METHODS):
            scale = 1.0 if method == "manual" else BIAS[method] * rng.normal(1, 0.03)
            full[sl] = _blob_pair(rng, centre, radii, scale)
            path = anat / f"sub-{pid}_ses-01_space-T1w_label-thalamus_desc-{method}_mask.nii.gz"
            nib.save(nib.Nifti1Image(full, affine), str(path))
            if method == "manual":
                manual_rows.append((pid, "01", str(path)))
            else:
                method_rows.append((pid, "01", method, str(path)))
    return method_rows, manual_rows


def _maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _phase_read(listing: Path) -> dict:
    import nibabel as nib

    rows = json.loads(listing.read_text())
    paths = [r[-1] for r in rows["methods"]] + [r[-1] for r in rows["manual"]]
    t0 = time.perf_counter()
    total = 0
    for p in paths:
        data = np.asanyarray(nib.load(p).dataobj)
        total += data.shape[0]
        del data
    return {"seconds": time.perf_counter() - t0, "masks": len(paths), "maxrss_mb": _maxrss_mb()}


def _phase_agreement(listing: Path, out_dir: Path) -> dict:
    import pandas as pd

    t_imp = time.perf_counter()
    # One-off imports (a few seconds, independent of N) are kept out of the timing.
    import matplotlib  # noqa: F401
    import pingouin  # noqa: F401
    import seaborn  # noqa: F401
    import statsmodels.api  # noqa: F401

    from thalamus_bidsapp.group.agreement import run_agreement
    from thalamus_bidsapp.reports.figures_agreement import write_agreement_figures

    t_imp = time.perf_counter() - t_imp
    rows = json.loads(listing.read_text())
    methods = pd.DataFrame(rows["methods"], columns=["participant_id", "session_id", "method", "path"])
    manual = pd.DataFrame(rows["manual"], columns=["participant_id", "session_id", "path"])
    t0 = time.perf_counter()
    tables = run_agreement(methods, manual, out_dir, figures=False)
    t_tables = time.perf_counter() - t0
    t0 = time.perf_counter()
    write_agreement_figures(tables["voxelwise"], tables["containment"], tables["volumetric"], out_dir / "figures")
    t_fig = time.perf_counter() - t0
    med = tables["summary"].query("metric == 'dice'")["median"]
    return {
        "seconds": t_tables,
        "figures_seconds": t_fig,
        "imports_seconds": t_imp,
        "median_dice_range": [float(med.min()), float(med.max())],
        "maxrss_mb": _maxrss_mb(),
    }


def _child(phase: str, listing: Path, out_dir: Path) -> dict:
    cmd = [sys.executable, __file__, "--phase", phase, "--listing", str(listing), "--out", str(out_dir)]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True, env={**os.environ, "MPLBACKEND": "Agg"})
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("n", nargs="?", type=int, default=200, help="number of sessions (default 200)")
    ap.add_argument("--workdir", type=Path, default=None, help="where to write the masks (default: a temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the generated masks")
    ap.add_argument("--distinct", type=int, default=None, metavar="K",
                    help="draw only K distinct sessions and hard-link them up to N (default: all distinct)")
    ap.add_argument("--phase", choices=["read", "agreement"], help=argparse.SUPPRESS)
    ap.add_argument("--listing", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.phase == "read":
        print(json.dumps(_phase_read(args.listing)))
        return 0
    if args.phase == "agreement":
        print(json.dumps(_phase_agreement(args.listing, args.out)))
        return 0

    work = Path(tempfile.mkdtemp(prefix="bench_agreement_", dir=args.workdir))
    try:
        t0 = time.perf_counter()
        methods, manual = make_dataset(work / "derivatives", args.n, distinct=args.distinct)
        t_make = time.perf_counter() - t0
        listing = work / "listing.json"
        listing.write_text(json.dumps({"methods": methods, "manual": manual}))
        n_masks = len(methods) + len(manual)
        print(f"sessions: {args.n} ({args.distinct or args.n} distinct), masks: {n_masks} "
              f"({SHAPE[0]}^3 uint8 .nii.gz), generated in {t_make:.1f} s")
        if args.distinct is None or args.distinct >= args.n:
            # Warm the page cache for both timed runs (hard-linked sessions share their few files,
            # which the first pages read warms anyway).
            _child("read", listing, work / "group_warm")
        read = _child("read", listing, work / "group")
        agr = _child("agreement", listing, work / "group")
        ratio = agr["seconds"] / read["seconds"]
        ratio_fig = (agr["seconds"] + agr["figures_seconds"]) / read["seconds"]
        print(f"read only:        {read['seconds']:8.2f} s  ({1000 * read['seconds'] / n_masks:.1f} ms/mask), "
              f"peak RSS {read['maxrss_mb']:.0f} MB")
        print(f"agreement tables: {agr['seconds']:8.2f} s  ({1000 * agr['seconds'] / n_masks:.1f} ms/mask), "
              f"peak RSS {agr['maxrss_mb']:.0f} MB")
        print(f"figures:          {agr['figures_seconds']:8.2f} s  (one-off imports {agr['imports_seconds']:.2f} s, "
              "not counted)")
        print(f"ratio agreement/read: {ratio:.2f} (tables), {ratio_fig:.2f} (tables + figures); target <= 2")
        print(f"peak memory: {max(read['maxrss_mb'], agr['maxrss_mb']):.0f} MB; target < 2048 MB")
        print(f"median Dice across methods: {agr['median_dice_range'][0]:.3f} .. {agr['median_dice_range'][1]:.3f}")
    finally:
        if args.keep:
            print(f"masks kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
