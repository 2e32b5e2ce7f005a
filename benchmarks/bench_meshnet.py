#!/usr/bin/env python
"""Benchmark of MeshNet thalamus segmentation on a real T1w: cropped vs uncropped.

Each variant runs :func:`thalamus_bidsapp.tools.meshnet.segment_thalamus`
once in a fresh child process (so peak memory is that variant's alone) with
torch limited to ``--threads`` (default 2) and reports:

- wall time of the call (conform, network, post-processing, back to native);
- CPU time (user + system) of the call, which is less sensitive than wall
  time to other processes on a shared machine;
- the child's peak resident memory (``resource.getrusage(RUSAGE_SELF).ru_maxrss``,
  the whole process: Python, torch, images and network);
- thalamus voxels and, where a reference label image is given, Dice;
- whether the cropped and uncropped masks are identical.

Targets: cropped under 30 s and under 2 GB on 2 cores.

Usage::

    python benchmarks/bench_meshnet.py [--t1w T1.nii.gz --reference LABELS --labels 10 49]
                                       [--model DIR] [--threads 2] [--variants cropped uncropped]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("THALAMUS_TEST_DATA", REPO.parent / "shared" / "data"))
DEFAULT_T1W = SHARED / "freesurfer_bert_7.2" / "mri" / "norm.mgz"
DEFAULT_REFERENCE = SHARED / "freesurfer_bert_7.2" / "mri" / "aseg.mgz"
DEFAULT_MODEL = SHARED / "brainchop" / "models" / "model30chan18cls"


def child(args: argparse.Namespace) -> None:
    """Run one variant and print a JSON line with its figures."""
    import nibabel as nib
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from thalamus_bidsapp.tools.meshnet import load_meshnet, segment_thalamus

    t1w = nib.load(args.t1w)
    # Loading the 0.8 MB model is not what is being measured, but it stays in the peak memory.
    load_meshnet(args.model)
    before = resource.getrusage(resource.RUSAGE_SELF)
    start = time.perf_counter()
    mask, provenance = segment_thalamus(t1w, args.model, crop=args.variant == "cropped", threads=args.threads)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_SELF)
    data = np.asarray(mask.dataobj)
    result = {
        "variant": args.variant,
        "wall_s": wall,
        "cpu_s": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        "peak_rss_mb": after.ru_maxrss / 1024.0,  # Linux reports KiB
        "voxels": int(data.sum()),
        "crop_box": provenance["Preprocessing"]["CropBox"],
        "threads": provenance["TorchThreads"],
    }
    if args.reference:
        reference = np.isin(np.asarray(nib.load(args.reference).dataobj), args.labels)
        result["dice"] = float(2 * (reference & (data > 0)).sum() / (reference.sum() + (data > 0).sum()))
    np.save(args.save_mask, data)
    print(json.dumps(result), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--t1w", type=Path, default=DEFAULT_T1W)
    parser.add_argument("--reference", type=Path, default=None, help="label image on the T1w grid")
    parser.add_argument("--labels", type=int, nargs="+", default=[10, 49])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL if DEFAULT_MODEL.is_dir() else None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", default=["cropped", "uncropped"], choices=["cropped", "uncropped"])
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--save-mask", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reference is None and args.t1w == DEFAULT_T1W:
        args.reference = DEFAULT_REFERENCE
    if args.variant:
        child(args)
        return

    print(f"MeshNet benchmark: {args.t1w}, torch threads {args.threads}, model {args.model or '(default resolution)'}")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants:
            command = [sys.executable, __file__, "--variant", variant, "--save-mask", f"{tmp}/{variant}.npy",
                       "--t1w", str(args.t1w), "--threads", str(args.threads), "--labels", *map(str, args.labels)]
            if args.model:
                command += ["--model", str(args.model)]
            if args.reference:
                command += ["--reference", str(args.reference)]
            env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
            done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
            if done.returncode != 0:
                print(f"{variant}: failed (exit {done.returncode})\n{done.stderr[-3000:]}")
                continue
            results[variant] = json.loads(done.stdout.strip().splitlines()[-1])
        print(f"{'variant':<10} {'wall s':>7} {'cpu s':>7} {'peak MB':>8} {'voxels':>7} {'dice':>6}  crop box")
        for variant, r in results.items():
            dice = f"{r['dice']:.4f}" if "dice" in r else "n/a"
            print(f"{variant:<10} {r['wall_s']:7.1f} {r['cpu_s']:7.1f} {r['peak_rss_mb']:8.0f} {r['voxels']:7d} {dice:>6}  {r['crop_box']}")
        if {"cropped", "uncropped"} <= results.keys():
            import numpy as np

            a, b = np.load(f"{tmp}/cropped.npy"), np.load(f"{tmp}/uncropped.npy")
            differing = int((a != b).sum())
            print(f"cropped vs uncropped masks: {'identical' if differing == 0 else f'{differing} voxels differ'}; "
                  f"speed-up {results['uncropped']['wall_s'] / results['cropped']['wall_s']:.1f}x wall, "
                  f"{results['uncropped']['cpu_s'] / results['cropped']['cpu_s']:.1f}x cpu; memory "
                  f"{results['uncropped']['peak_rss_mb'] / results['cropped']['peak_rss_mb']:.1f}x")
        if "cropped" in results:
            r = results["cropped"]
            verdict = "met" if r["wall_s"] < 30 and r["peak_rss_mb"] < 2048 else "NOT met"
            print(f"target cropped < 30 s and < 2 GB on {args.threads} threads: {verdict}")


if __name__ == "__main__":
    main()
