#!/usr/bin/env python
"""One real participant session with default settings, against its tools' own time and a minimal script.

What it runs (each in a fresh child process, in a fresh temporary output and
work folder, so nothing is reused from an earlier run):

1. **the app**: ``thalamus-bidsapp BIDS OUT participant --participant-label 01``
   with default settings on the pip path (deepbet brain mask + MeshNet;
   FSL, FreeSurfer, DBSegment and the MindGlide weights are not looked for
   unless installed), on ``../shared/data/ds002748_subset``;
2. **a minimal script**: what a user would write by hand for the same
   tools: load the same T1w, run deepbet, register the brain to the template
   with antspyx (affine + SyN, ``interfaces.ants.ants_to_template``, as the
   app's default template space does), then MeshNet
   (``interfaces.meshnet.segment_thalamus``), save the masks and transforms,
   torch and ITK using every CPU.

What it prints:

- the app's wall time (child process start to exit), and from its
  ``logs/<run>/timings.tsv``: the start-up before the first tool, the
  **critical path of the tools' own compute** (the time during which at
  least one tool node ran; with one session each tool uses every core, so
  this is the sum of deepbet's and MeshNet's node times), and the finish
  (end of the last tool to the end of the run: publishing, volumes, report);
- the minimal script's wall time;
- the ratios app / tools' critical path (target <= 1.2) and app / minimal
  script (target <= 1.3), and the peak memory of each (target <= 3 GB):
  the largest sum of the proportional set size (PSS, shared pages counted
  once) over the process and its children, sampled every 0.1 s, and the
  largest single process's peak RSS;
- the machine's CPU count and load average before and after, since other
  processes on the machine lengthen every figure. On a shared machine, run
  it when the load average is well below the CPU count, with ``--repeat 3``
  (the minimum of the repeats is reported).

Usage::

    python benchmarks/bench_participant.py [--participant 01] [--repeat 1] [--keep DIR]

Environment: the MeshNet weights come from ``$THALAMUS_MESHNET_MODEL``, else
``../shared/data/brainchop/models/model30chan18cls``; the templates from
``$TEMPLATEFLOW_HOME`` when it holds them, else a TemplateFlow home built
from ``../shared/data/templates`` as the tests build it; no network is used.
"""

from __future__ import annotations

import argparse
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

DEFAULT_TEMPLATE = "MNI152NLin2009cAsym"

TARGET_TOOLS = 1.2
TARGET_MINIMAL = 1.3
TARGET_PEAK_GB = 3.0

MINIMAL_SCRIPT = """
import os, sys
from pathlib import Path
t1w_path, model_dir, out_dir, threads, template = sys.argv[1:6]
os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = threads
import torch
import nibabel as nib
import numpy as np
from deepbet import BrainExtraction
from thalamus_bidsapp.interfaces.ants import ants_to_template
from thalamus_bidsapp.interfaces.meshnet import segment_thalamus

torch.set_num_threads(int(threads))
t1w = nib.load(t1w_path)
_, brain, _ = BrainExtraction(no_gpu=True).run(t1w, threshold=0.5)
nib.save(brain, f"{out_dir}/brain_mask.nii.gz")
masked = np.asarray(t1w.dataobj, np.float32) * (np.asarray(brain.dataobj) > 0)
nib.save(nib.Nifti1Image(masked, t1w.affine), f"{out_dir}/t1w_brain.nii.gz")
ants_to_template(Path(f"{out_dir}/t1w_brain.nii.gz"), Path(template), Path(f"{out_dir}/forward.h5"),
                 Path(f"{out_dir}/inverse.h5"))
thalamus, _ = segment_thalamus(t1w, model_dir, threads=int(threads))
nib.save(thalamus, f"{out_dir}/thalamus_meshnet.nii.gz")
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


def run_app(participant: str, env: dict[str, str], folder: Path) -> dict[str, float]:
    from thalamus_bidsapp.timings import critical_path, read_timings

    out, work = folder / "out", folder / "work"
    command = [sys.executable, "-m", "thalamus_bidsapp", str(DATASET), str(out), "participant",
               "--participant-label", participant, "-w", str(work)]
    result = run_measured(command, env, folder / "app.log")
    if result["code"] != 0:
        raise SystemExit(f"the app failed (exit {result['code']}); log: {folder / 'app.log'}")
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


def run_minimal(participant: str, env: dict[str, str], folder: Path, model: Path, threads: int) -> dict[str, float]:
    from thalamus_bidsapp.interfaces.templateflow import find_template_files

    t1w = next((DATASET / f"sub-{participant}").rglob("*_T1w.nii*"))
    template = find_template_files(DEFAULT_TEMPLATE, Path(env["TEMPLATEFLOW_HOME"])).target
    out = folder / "minimal"
    out.mkdir()
    command = [sys.executable, "-c", MINIMAL_SCRIPT, str(t1w), str(model), str(out), str(threads), str(template)]
    result = run_measured(command, env, folder / "minimal.log")
    if result["code"] != 0:
        raise SystemExit(f"the minimal script failed (exit {result['code']}); log: {folder / 'minimal.log'}")
    return result


def templateflow_home(scratch: Path) -> Path:
    """``$TEMPLATEFLOW_HOME`` when it holds the default template's files, else one built from the test data."""
    from thalamus_bidsapp.errors import ThalamusError
    from thalamus_bidsapp.interfaces.templateflow import find_template_files

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--participant", default="01", help="label in ds002748_subset (default 01)")
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; the minimum is reported")
    parser.add_argument("--keep", type=Path, help="keep the outputs and logs in this folder")
    args = parser.parse_args()
    if not DATASET.is_dir():
        raise SystemExit(f"test data not found: {DATASET} (set THALAMUS_TEST_DATA)")
    model = Path(os.environ.get("THALAMUS_MESHNET_MODEL", DEFAULT_MODEL))
    from thalamus_bidsapp.resources import available_cpus

    cpus = available_cpus()
    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="bench_participant_"))
    env = dict(os.environ, THALAMUS_MESHNET_MODEL=str(model), HF_HUB_OFFLINE="1", NIPYPE_NO_ET="1",
               MPLBACKEND="Agg", PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
               TEMPLATEFLOW_HOME=str(templateflow_home(root)), TEMPLATEFLOW_AUTOUPDATE="0")
    print(f"participant benchmark: sub-{args.participant} of {DATASET}, default settings, {cpus} CPUs; "
          f"load average before: {_load()}", flush=True)
    apps, minimals = [], []
    try:
        for index in range(args.repeat):
            folder = root / f"run{index}"
            folder.mkdir()
            apps.append(run_app(args.participant, env, folder))
            minimals.append(run_minimal(args.participant, env, folder, model, cpus))
            print(f"  run {index + 1}: app {apps[-1]['wall_s']:.1f} s, minimal script {minimals[-1]['wall_s']:.1f} s; "
                  f"load average {_load()}", flush=True)
    finally:
        if args.keep:
            shutil.copytree(root, args.keep, dirs_exist_ok=True)
        shutil.rmtree(root, ignore_errors=True)
    app = min(apps, key=lambda r: r["wall_s"])
    minimal = min(minimals, key=lambda r: r["wall_s"])
    largest_rss_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
    ratio_tools = app["wall_s"] / app["critical_path_s"]
    ratio_minimal = app["wall_s"] / minimal["wall_s"]

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    print(f"app (default settings): wall {app['wall_s']:.1f} s; start-up to the first tool {app['startup_s']:.1f} s; "
          f"tools' critical path {app['critical_path_s']:.1f} s ({app['tools']}); finish after the last tool "
          f"{app['finish_s']:.1f} s (session's own steps {app['session_finish_s']:.1f} s); "
          f"peak memory {app['peak_pss_gb']:.2f} GB")
    print(f"  phases: {app['phases']}")
    print(f"minimal script (deepbet, ANTs affine + SyN to {DEFAULT_TEMPLATE}, MeshNet; {cpus} threads): "
          f"wall {minimal['wall_s']:.1f} s; peak memory {minimal['peak_pss_gb']:.2f} GB")
    print(f"ratio app / tools' critical path: {ratio_tools:.2f} (target <= {TARGET_TOOLS}: "
          f"{verdict(ratio_tools <= TARGET_TOOLS)})")
    print(f"ratio app / minimal script: {ratio_minimal:.2f} (target <= {TARGET_MINIMAL}: "
          f"{verdict(ratio_minimal <= TARGET_MINIMAL)})")
    print(f"peak memory of the app {app['peak_pss_gb']:.2f} GB (PSS of the process tree; largest single process "
          f"{largest_rss_gb:.2f} GB RSS) (target <= {TARGET_PEAK_GB} GB: {verdict(app['peak_pss_gb'] <= TARGET_PEAK_GB)})")
    print(f"load average after: {_load()} on {cpus} CPUs"
          + (" -- the machine was busy before the runs: figures are disturbed" if load_before > 0.5 * cpus else ""))


if __name__ == "__main__":
    main()
