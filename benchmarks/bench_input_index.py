#!/usr/bin/env python
"""What keeping the caches honest costs on a large dataset.

Builds a BIDS dataset of N subjects (two sessions each, T1w + FLAIR + JSON
sidecars; the images are small files, since only names, sizes and times
matter to the index) and times:

1. ``fingerprint``: :func:`thalamus_bidsapp.bidsio.inputs.dataset_fingerprint`,
   the key of the cached pybids index (one stat per file);
2. ``index``: building the pybids index with the app's entity rules, and
   loading it again from the work folder (the cached case);
3. ``digest``: sha256 of image contents, the node-level key of an input
   image, measured on a real-sized file (MB/s), first read and remembered
   (a memo keyed by device, inode, size, mtime and ctime).

It prints each figure; the cost of hashing every input of an N-subject run
is extrapolated from the measured rate and ``--image-mb``.

Usage::

    python benchmarks/bench_input_index.py [N] [--image-mb 15] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path


def build_dataset(root: Path, n_subjects: int) -> int:
    root.mkdir(parents=True)
    (root / "dataset_description.json").write_text(json.dumps({"Name": "bench", "BIDSVersion": "1.10.0"}))
    files = 1
    for index in range(1, n_subjects + 1):
        for session in ("1", "2"):
            anat = root / f"sub-{index:04d}" / f"ses-{session}" / "anat"
            anat.mkdir(parents=True)
            for suffix in ("T1w", "FLAIR"):
                stem = anat / f"sub-{index:04d}_ses-{session}_{suffix}"
                stem.with_name(stem.name + ".nii.gz").write_bytes(b"\0" * 352)
                stem.with_name(stem.name + ".json").write_text('{"RepetitionTime": 2.3}')
                files += 2
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("n", nargs="?", type=int, default=1000, help="subjects (default 1000)")
    parser.add_argument("--image-mb", type=float, default=15.0, help="size of one input image in MB (default 15)")
    parser.add_argument("--workdir", type=Path, help="where to build (default: a temporary folder)")
    args = parser.parse_args()

    from thalamus_bidsapp.bidsio import inputs
    from thalamus_bidsapp.bidsio.checksums import remembered_digest

    base = Path(tempfile.mkdtemp(dir=args.workdir))
    try:
        bids = base / "perf" / "bids"  # a datatype-named parent folder, as in pybids issue 1270
        n_files = build_dataset(bids, args.n)
        start = time.perf_counter()
        inputs.dataset_fingerprint(bids)
        fingerprint_s = time.perf_counter() - start
        start = time.perf_counter()
        layout = inputs.open_layout(bids, validate=False, database_dir=base / "work")
        index_s = time.perf_counter() - start
        start = time.perf_counter()
        layout = inputs.open_layout(bids, validate=False, database_dir=base / "work")
        cached_s = time.perf_counter() - start
        n_t1w = len(layout.get(return_type="file", suffix="T1w", extension=".nii.gz"))
        assert n_t1w == 2 * args.n, n_t1w

        image = base / "image.nii.gz"
        image.write_bytes(os.urandom(int(args.image_mb * 1e6)))
        start = time.perf_counter()
        remembered_digest(image, base / "digests")
        first_s = time.perf_counter() - start
        start = time.perf_counter()
        remembered_digest(image, base / "digests")
        memo_s = time.perf_counter() - start
        rate = args.image_mb / first_s
        inputs_per_run = 4 * args.n  # T1w and FLAIR of two sessions
        print(f"dataset: {args.n} subjects, {n_files} files")
        print(f"fingerprint (index key): {fingerprint_s:.2f} s")
        print(f"pybids index: built {index_s:.1f} s, loaded from the work folder {cached_s:.2f} s")
        print(f"content digest: {rate:.0f} MB/s first read ({first_s * 1000:.0f} ms per {args.image_mb:g} MB image), "
              f"remembered {memo_s * 1000:.2f} ms")
        print(f"all {inputs_per_run} input images of the run: {inputs_per_run * first_s:.0f} s hashed once, "
              f"{inputs_per_run * memo_s:.1f} s on a re-run")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
