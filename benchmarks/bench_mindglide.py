#!/usr/bin/env python3
"""Time MindGlide on three contrasts of one session: one process vs three CLI runs.

In-process: one fresh Python process imports thalamus_bidsapp's MindGlide
adapter and segments T1w, FLAIR and an R1-like image with one loaded network
(``segment_contrasts``). Separate: three fresh ``mindglide -i ... -o ...``
command-line runs, each importing the package and loading the network again.
Both sides are timed as whole processes (start-up and imports included).

Images: patient07 of the Lesjak 2017 MS data (T1w and FLAIR, 1 mm MNI),
cropped around the thalamus so that CPU inference stays short; the R1-like
image is made from the T1w (monotonic contrast change plus noise), as no real
R1 map is available. The checkpoint is a randomly initialised network of
MindGlide's architecture (no weights are needed for timing).

Usage: python benchmarks/bench_mindglide.py [--crop 96 112 64] [--device cpu]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("THALAMUS_TEST_DATA", ROOT.parent / "shared" / "data"))
PATIENT = DATA / "ms_lesjak2017_mni" / "patient07"
T1 = PATIENT / "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
FLAIR = PATIENT / "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"

IN_PROCESS = """
import sys, logging
from thalamus_bidsapp.tools import mindglide as mg
ckpt, device, *imgs = sys.argv[1:]
segs = mg.segment_contrasts(dict(zip(["T1w", "FLAIR", "R1"], imgs)), model_path=ckpt, device=device)
assert len(segs) == 3 and mg.load_count() == 1, (len(segs), mg.load_count())
"""


def crop(src: Path, dst: Path, size: tuple[int, int, int]) -> Path:
    img = nib.load(src)
    centre = np.rint(np.linalg.inv(img.affine) @ [0.0, -18.0, 8.0, 1.0]).astype(int)[:3]
    sl = tuple(slice(max(c - s // 2, 0), max(c - s // 2, 0) + s) for c, s in zip(centre, size))
    nib.save(img.slicer[sl], dst)
    return dst


def r1_like(t1_path: Path, dst: Path) -> Path:
    img = nib.load(t1_path)
    t1 = img.get_fdata()
    rng = np.random.default_rng(0)
    brain = t1 > 0
    r1 = np.zeros_like(t1)
    scaled = t1[brain] / np.percentile(t1[brain], 99)
    r1[brain] = 1000 * np.clip(scaled, 0, None) ** 0.7 + rng.normal(0, 15, brain.sum())
    nib.save(nib.Nifti1Image(np.clip(r1, 0, None).astype(np.float32), img.affine), dst)
    return dst


def timed(cmd: list[str], env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crop", type=int, nargs=3, default=[96, 112, 64], metavar=("X", "Y", "Z"))
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    import torch
    from mindglide import network

    mindglide_cli = shutil.which("mindglide", path=str(Path(sys.executable).parent)) or shutil.which("mindglide")
    if mindglide_cli is None:
        sys.exit("the mindglide command is not installed")
    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        size = tuple(args.crop)
        t1 = crop(T1, tmp / "T1w.nii.gz", size)
        flair = crop(FLAIR, tmp / "FLAIR.nii.gz", size)
        r1 = r1_like(t1, tmp / "R1.nii.gz")
        torch.manual_seed(0)
        ckpt = tmp / "mindglide_random.pt"
        torch.save(network.get_network(torch.device("cpu")).state_dict(), ckpt)
        env = dict(os.environ, HF_HUB_OFFLINE="1",
                   PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
        env.pop("MODEL_PATH", None)

        images = [t1, flair, r1]
        print(f"images: 3 contrasts, crop {size} of {T1.name} (real MS T1w/FLAIR + R1-like), device {args.device}, "
              f"torch threads {torch.get_num_threads()}")
        t_one = timed([sys.executable, "-c", IN_PROCESS, str(ckpt), args.device, *map(str, images)], env)
        t_sep = [timed([mindglide_cli, "-i", str(p), "-o", str(tmp / f"{p.name[:-7]}_seg.nii.gz"),
                        "--model-path", str(ckpt), "--device", args.device], env) for p in images]
        total = sum(t_sep)
        print(f"one process, network loaded once : {t_one:7.1f} s")
        print(f"three mindglide CLI runs          : {total:7.1f} s  ({', '.join(f'{t:.1f}' for t in t_sep)})")
        print(f"ratio (one process / three runs)  : {t_one / total:7.2f}  (target <= 0.6)")


if __name__ == "__main__":
    main()
