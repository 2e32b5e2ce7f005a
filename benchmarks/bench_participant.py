#!/usr/bin/env python
"""One real participant session against its tools' own time and against the same work done by hand.

What it runs (each in a fresh child process, in a fresh temporary output and
work folder, so nothing is reused from an earlier run), in two pairs:

1. **the app with default settings**: ``thalamus-bidsapp BIDS OUT participant
   --participant-label 01`` on the pip path (deepbet brain mask, MeshNet and
   its left/right model, template space: antspyx affine + SyN, the thalamus
   prior warped back, the mask warped to the template, QC; FSL, FreeSurfer,
   DBSegment and the MindGlide weights are not looked for unless installed),
   on ``../shared/data/ds002748_subset``; against **a minimal script doing
   the same work** as a user would write it by hand: load the same T1w, run
   deepbet, MeshNet and its left/right model
   (``interfaces.meshnet.segment_thalamus_sides``), register the brain to the
   template (``interfaces.ants.ants_to_template``), warp the prior back
   (``interfaces.template.warp_prior``) and the mask to the template, save
   everything, torch and ITK using every CPU;
2. **the app with ``--template none``** (only the networks: deepbet and
   MeshNet with its left/right model) against **a minimal script running
   only those networks**.

What it prints:

- each app run's wall time (child process start to exit), and from its
  ``logs/<run>/timings.tsv``: the start-up before the first tool, the
  **critical path of the tools' own compute** (the time during which at
  least one tool node ran; with one session each tool uses every core), and
  the finish (end of the last tool to the end of the run: QC, publishing,
  volumes, report);
- each minimal script's wall time;
- the ratios app / tools' critical path (target <= 1.2) and app / minimal
  script (target <= 1.3), for both pairs, and the peak memory (target
  <= 3 GB): the largest sum of the proportional set size (PSS, shared pages
  counted once) over the process and its children, sampled every 0.1 s,
  and the largest single process's peak RSS;
- the machine's CPU count and load average before and after, since other
  processes on the machine lengthen every figure. On a shared machine, run
  it when the load average is well below the CPU count, with ``--repeat 3``
  (the minimum of the repeats is reported).

Usage::

    python benchmarks/bench_participant.py [--participant 01] [--repeat 1] [--keep DIR]

Environment: the MeshNet weights come from ``$THALAMUS_MESHNET_MODEL`` and
``$THALAMUS_MESHNET_SIDES_MODEL``, else ``../shared/data/brainchop/models/``
(``model30chan18cls``, ``model21_104class``); the templates from
``$TEMPLATEFLOW_HOME`` when it holds them, else a TemplateFlow home built
from ``../shared/data/templates`` as the tests build it; no network is used.
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
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

SHARED = Path(os.environ.get("THALAMUS_TEST_DATA", REPO.parent / "shared" / "data"))
DATASET = SHARED / "ds002748_subset"
DEFAULT_MODEL = SHARED / "brainchop" / "models" / "model30chan18cls"
DEFAULT_SIDES_MODEL = SHARED / "brainchop" / "models" / "model21_104class"

DEFAULT_TEMPLATE = "MNI152NLin2009cAsym"

TARGET_TOOLS = 1.2
TARGET_MINIMAL = 1.3
TARGET_PEAK_GB = 3.0

MINIMAL_SCRIPT = """
import json, os, sys
from pathlib import Path
t1w_path, model_dir, sides_model_dir, out_dir, threads, template_json = sys.argv[1:7]
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = threads
import torch
import nibabel as nib
import numpy as np
from deepbet import BrainExtraction
from thalamus_bidsapp.tools.meshnet import segment_thalamus_sides

out = Path(out_dir)
torch.set_num_threads(int(threads))
t1w = nib.load(t1w_path)
_, brain, _ = BrainExtraction(no_gpu=True).run(t1w, threshold=0.5)
nib.save(brain, out / "brain_mask.nii.gz")
thalamus, sides, _ = segment_thalamus_sides(t1w, Path(model_dir), Path(sides_model_dir), threads=int(threads))
nib.save(thalamus, out / "thalamus_meshnet.nii.gz")
nib.save(nib.Nifti1Image(sides, t1w.affine), out / "thalamus_sides.nii.gz")
template = json.loads(template_json)
if template:
    from thalamus_bidsapp.image.prior import binarise
    from thalamus_bidsapp.tools.ants import ants_resample, ants_to_template
    from thalamus_bidsapp.interfaces.template import warp_prior

    masked = np.asarray(t1w.dataobj, np.float32) * (np.asarray(brain.dataobj) > 0)
    nib.save(nib.Nifti1Image(masked, t1w.affine), out / "t1w_brain.nii.gz")
    result = ants_to_template(out / "t1w_brain.nii.gz", Path(template["target"]), out / "forward.h5",
                              out / "inverse.h5")
    warp_prior(Path(template["prior"]), template["volumes"], Path(t1w_path), result.inverse, result.forward, out)
    in_template = ants_resample(out / "thalamus_meshnet.nii.gz", Path(template["target"]), result.forward,
                                opposite_transform=result.inverse)
    nib.save(binarise(in_template, 0.5), out / "thalamus_meshnet_template.nii.gz")
"""


# --------------------------------------------------------------------------- measuring a child


def _children(pid: int) -> list[int]:
    """The process and all its descendants (read from /proc)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        current = todo.pop()
        tree.append(current)
        todo.extend(parents.get(current, []))
    return tree


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def run_measured(command: list[str], env: dict[str, str], log_file: Path) -> dict[str, float]:
    """Run ``command``; its wall time, peak PSS of its process tree and exit code."""
    peak = {"pss_kb": 0}
    done = threading.Event()
    with open(log_file, "w") as log:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)

        def sample() -> None:
            while not done.is_set():
                total = sum(_pss_kb(pid) for pid in _children(proc.pid))
                peak["pss_kb"] = max(peak["pss_kb"], total)
                done.wait(0.1)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        code = proc.wait()
        wall = time.perf_counter() - start
        done.set()
        sampler.join()
    return {"wall_s": wall, "peak_pss_gb": peak["pss_kb"] / 1024**2, "code": code}


# --------------------------------------------------------------------------- the two runs


def run_app(participant: str, env: dict[str, str], folder: Path, extra_args: tuple[str, ...] = ()) -> dict:
    from thalamus_bidsapp.participant.timings import critical_path, read_timings

    folder.mkdir(parents=True)
    out, work = folder / "out", folder / "work"
    command = [sys.executable, "-m", "thalamus_bidsapp", str(DATASET), str(out), "participant",
               "--participant-label", participant, "-w", str(work), *extra_args]
    result = run_measured(command, env, folder / "app.log")
    if result["code"] != 0:
        raise SystemExit(f"the app failed (exit {result['code']}); log: {folder / 'app.log'}")
    if not any(out.rglob("*_seg-thalamus_desc-meshnet_dseg.nii.gz")):
        raise SystemExit(f"the app ran MeshNet without its left/right model (see {folder / 'app.log'}): set "
                         "THALAMUS_MESHNET_SIDES_MODEL to the model21_104class folder")
    table = read_timings(next((out / "logs").glob("*/timings.tsv")))
    tools = table[table["kind"] == "tool"]
    session = table[table["session"] != "n/a"]
    total = table[table["step"] == "total"].iloc[0]
    last_tool_end = float((tools["start"] + tools["seconds"]).max())
    result.update({
        "critical_path_s": critical_path(table),
        "startup_s": float(tools["start"].min()),
        "finish_s": float(total["start"] + total["seconds"]) - last_tool_end,
        "session_finish_s": float((session["start"] + session["seconds"]).max()) - last_tool_end,
        "tools": ", ".join(f"{row.step.split('.')[-1]} {row.seconds:.1f} s x{row.threads}"
                           for row in tools.itertuples()),
        "phases": ", ".join(f"{row.step} {row.seconds:.1f} s" for row in table[table["kind"] == "phase"].itertuples()
                            if row.step != "total"),
    })
    return result


def run_minimal(participant: str, env: dict[str, str], folder: Path, threads: int, *, with_template: bool) -> dict:
    """The minimal script on the participant's T1w: the networks, and with ``with_template`` the template steps."""
    from thalamus_bidsapp.tools.templateflow import find_template_files

    t1w = next((DATASET / f"sub-{participant}").rglob("*_T1w.nii*"))
    template = {}
    if with_template:
        files = find_template_files(DEFAULT_TEMPLATE, Path(env["TEMPLATEFLOW_HOME"]))
        template = {"target": str(files.target), "prior": str(files.prior), "volumes": files.prior_volumes}
    out = folder / ("minimal" if with_template else "minimal_networks")
    out.mkdir(parents=True)
    command = [sys.executable, "-c", MINIMAL_SCRIPT, str(t1w), env["THALAMUS_MESHNET_MODEL"],
               env["THALAMUS_MESHNET_SIDES_MODEL"], str(out), str(threads), json.dumps(template)]
    result = run_measured(command, env, out / "minimal.log")
    if result["code"] != 0:
        raise SystemExit(f"the minimal script failed (exit {result['code']}); log: {out / 'minimal.log'}")
    return result


def templateflow_home(scratch: Path) -> Path:
    """``$TEMPLATEFLOW_HOME`` when it holds the default template's files, else one built from the test data."""
    from thalamus_bidsapp.errors import ThalamusError
    from thalamus_bidsapp.tools.templateflow import find_template_files

    given = os.environ.get("TEMPLATEFLOW_HOME")
    if given:
        try:
            find_template_files(DEFAULT_TEMPLATE, Path(given))
            return Path(given)
        except ThalamusError:
            pass
    from tests.templateflow_home import build_templateflow_home

    return build_templateflow_home(SHARED / "templates", scratch / "templateflow", (DEFAULT_TEMPLATE,))


def _load() -> str:
    return " ".join(f"{value:.2f}" for value in os.getloadavg())


def _app_line(label: str, app: dict) -> str:
    return (f"{label}: wall {app['wall_s']:.1f} s; start-up to the first tool {app['startup_s']:.1f} s; "
            f"tools' critical path {app['critical_path_s']:.1f} s ({app['tools']}); finish after the last tool "
            f"{app['finish_s']:.1f} s (session's own steps {app['session_finish_s']:.1f} s); "
            f"peak memory {app['peak_pss_gb']:.2f} GB\n  phases: {app['phases']}")


def app_environment(root: Path) -> dict[str, str]:
    """The environment of a benchmarked app run: offline, the shared MeshNet models, a TemplateFlow home in ``root``."""
    return dict(os.environ, HF_HUB_OFFLINE="1", NIPYPE_NO_ET="1", MPLBACKEND="Agg",
                THALAMUS_MESHNET_MODEL=os.environ.get("THALAMUS_MESHNET_MODEL", str(DEFAULT_MODEL)),
                THALAMUS_MESHNET_SIDES_MODEL=os.environ.get("THALAMUS_MESHNET_SIDES_MODEL", str(DEFAULT_SIDES_MODEL)),
                PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
                TEMPLATEFLOW_HOME=str(templateflow_home(root)), TEMPLATEFLOW_AUTOUPDATE="0")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participant", default="01", help="label in ds002748_subset (default 01)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the minimum is reported")
    parser.add_argument("--keep", type=Path, help="keep the outputs and logs in this folder")
    args = parser.parse_args()
    if not DATASET.is_dir():
        raise SystemExit(f"test data not found: {DATASET} (set THALAMUS_TEST_DATA)")
    from thalamus_bidsapp.participant.resources import available_cpus

    cpus = available_cpus()
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="bench_participant_"))
    env = app_environment(root)
    print(f"participant benchmark: sub-{args.participant} of {DATASET}, {cpus} CPUs; "
          f"load average before: {_load()}", flush=True)
    runs: dict[str, list[dict]] = {"app": [], "minimal": [], "app_networks": [], "minimal_networks": []}
    try:
        for index in range(args.repeat):
            folder = root / f"run{index}"
            runs["app"].append(run_app(args.participant, env, folder / "defaults"))
            runs["minimal"].append(run_minimal(args.participant, env, folder, cpus, with_template=True))
            runs["app_networks"].append(run_app(args.participant, env, folder / "networks", ("--template", "none")))
            runs["minimal_networks"].append(run_minimal(args.participant, env, folder, cpus, with_template=False))
            print(f"  run {index + 1}: " + ", ".join(f"{name} {results[-1]['wall_s']:.1f} s"
                                                      for name, results in runs.items())
                  + f"; load average {_load()}", flush=True)
    finally:
        if args.keep:
            shutil.copytree(root, args.keep, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
    best = {name: min(results, key=lambda r: r["wall_s"]) for name, results in runs.items()}
    largest_rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2

    def verdict(ratio: float, target: float) -> str:
        return f"{ratio:.2f} (target <= {target}: {'met' if ratio <= target else 'NOT met'})"

    app, networks = best["app"], best["app_networks"]
    print(_app_line("app, default settings", app))
    print(f"minimal script, the same work ({cpus} threads: deepbet, MeshNet and its left/right model, ANTs affine + "
          f"SyN to {DEFAULT_TEMPLATE}, prior warped back, mask to the template): wall {best['minimal']['wall_s']:.1f} s; "
          f"peak memory {best['minimal']['peak_pss_gb']:.2f} GB")
    print(_app_line("app, --template none (the networks only)", networks))
    print(f"minimal script, the networks only ({cpus} threads: deepbet, MeshNet and its left/right model): "
          f"wall {best['minimal_networks']['wall_s']:.1f} s; peak memory {best['minimal_networks']['peak_pss_gb']:.2f} GB")
    print("ratio app / tools' critical path: default settings "
          f"{verdict(app['wall_s'] / app['critical_path_s'], TARGET_TOOLS)}; networks only "
          f"{verdict(networks['wall_s'] / networks['critical_path_s'], TARGET_TOOLS)}")
    print("ratio app / minimal script: default settings "
          f"{verdict(app['wall_s'] / best['minimal']['wall_s'], TARGET_MINIMAL)}; networks only "
          f"{verdict(networks['wall_s'] / best['minimal_networks']['wall_s'], TARGET_MINIMAL)}")
    peak = max(app["peak_pss_gb"], networks["peak_pss_gb"])
    print(f"peak memory of the app {peak:.2f} GB (PSS of the process tree; largest single process "
          f"{largest_rss_gb:.2f} GB RSS) (target <= {TARGET_PEAK_GB} GB: {'met' if peak <= TARGET_PEAK_GB else 'NOT met'})")
    print(f"load average after: {_load()} on {cpus} CPUs"
          + (" -- the machine was busy before the runs: figures are disturbed" if load_before > 0.5 * cpus else ""))


if __name__ == "__main__":
    main()
