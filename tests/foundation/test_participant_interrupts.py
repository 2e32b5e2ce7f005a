"""SIGINT (Ctrl-C) and SIGTERM (SLURM's time limit) during a real participant run.

The run stops promptly with 130 / 143, records the running sessions as
interrupted in logs/<run>/sessions.tsv, leaves no partial outputs and no child
processes, and a rerun completes.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from tests.foundation.datasets import tree_digest
from tests.fuzz.image_cases import cli_env, derivative_files, leftovers, sessions_table, write_dataset

pytestmark = pytest.mark.slow


def _children_of(pid: int) -> list[int]:
    from thalamus_bidsapp.participant.interrupts import _descendants

    return _descendants(pid)


@pytest.mark.parametrize("signum, nprocs", [(signal.SIGINT, "1"), (signal.SIGTERM, "2")],
                         ids=["SIGINT-linear", "SIGTERM-multiproc"])
def test_interrupt_stops_records_and_rerun_completes(tmp_path, signum, nprocs):
    bids, subjects_dir = write_dataset(tmp_path, subjects=("01", "02"))
    before = tree_digest(bids)
    out = tmp_path / "out"
    args = [sys.executable, "-m", "thalamus_bidsapp", str(bids), str(out), "participant",
            "--fs-subjects-dir", str(subjects_dir), "--methods", "freesurfer", "--skip-bids-validation",
            "-w", str(tmp_path / "work"), "--nprocs", nprocs]
    process = subprocess.Popen(args, env=cli_env(), stderr=subprocess.PIPE, text=True)
    log = []
    for line in process.stderr:  # wait until the brain masks (the slow step) are running
        log.append(line)
        if "Executing" in line and "brain_mask" in line:
            break
    time.sleep(1.0)
    children = _children_of(process.pid)
    sent = time.monotonic()
    process.send_signal(signum)
    log.extend(process.stderr)
    process.wait(timeout=120)
    elapsed = time.monotonic() - sent
    text = "".join(log)

    assert process.returncode == 128 + signum, text[-3000:]
    assert elapsed < 30, f"took {elapsed:.1f} s to stop"
    assert "Traceback" not in text
    assert f"interrupted by {signal.Signals(signum).name}" in text
    rows = {row["session"]: row for row in sessions_table(out)}
    assert rows and all(row["status"] == "interrupted" for row in rows.values()), rows
    assert derivative_files(out) == {} and leftovers(out) == []
    time.sleep(0.5)
    assert not [pid for pid in children if _alive(pid)], "child processes left running"

    rerun = subprocess.run(args, env=cli_env(), capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert all(row["status"] == "ok" for row in sessions_table(out))
    for subject in ("01", "02"):
        assert (out / f"sub-{subject}" / "anat" / f"sub-{subject}_label-thalamus_volumes.tsv").is_file()
    assert leftovers(out) == [] and tree_digest(bids) == before


def _alive(pid: int) -> bool:
    from thalamus_bidsapp.participant.interrupts import _alive as alive

    return alive(pid)
