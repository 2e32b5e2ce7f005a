"""logs/<run>/timings.tsv: every node and phase, filed under its session, written and read back."""

from __future__ import annotations

import json
import re
import time

import pytest
from nipype.interfaces import utility as niu
from nipype.pipeline import engine as pe

from thalamus_bidsapp.participant.timings import TIMING_COLUMNS, RunTimings, StepTiming, critical_path, read_timings


def _wait(seconds):
    import time

    time.sleep(seconds)
    return seconds


def _session_wf(name: str) -> pe.Workflow:
    """A session: a 'tool' (brain_mask) then a 'step' (volumes), as in the app."""
    workflow = pe.Workflow(name=name)
    tool = pe.Node(niu.Function(function=_wait, input_names=["seconds"], output_names=["out"]),
                   name="brain_mask", n_procs=1)
    tool.inputs.seconds = 0.3
    step = pe.Node(niu.Function(function=_wait, input_names=["seconds"], output_names=["out"]), name="volumes")
    workflow.connect(tool, "out", step, "seconds")
    return workflow


@pytest.mark.parametrize("plugin", ["Linear", "MultiProc"])
def test_timings_written_and_parsable(tmp_path, plugin):
    timings = RunTimings({"sub_01_wf": "sub-01", "sub_02_wf": "sub-02"})
    with timings.phase("index"):
        time.sleep(0.05)
    top = pe.Workflow(name="top_wf", base_dir=str(tmp_path / "work"))
    top.add_nodes([_session_wf("sub_01_wf"), _session_wf("sub_02_wf")])
    args = {"n_procs": 2, "raise_insufficient": False} if plugin == "MultiProc" else {}
    top.config["execution"]["poll_sleep_duration"] = 0.05
    top.run(plugin=plugin, plugin_args={**args, "status_callback": timings.node_status})

    path = timings.write(tmp_path / "logs" / "run" / "timings.tsv")
    table = read_timings(path)
    assert list(table.columns) == list(TIMING_COLUMNS)
    assert set(json.loads(path.with_suffix(".json").read_text())) == set(TIMING_COLUMNS)
    nodes = table[table["session"] != "n/a"]
    assert sorted(zip(nodes["session"], nodes["step"], nodes["kind"])) == [
        ("sub-01", "brain_mask", "tool"), ("sub-01", "volumes", "step"),
        ("sub-02", "brain_mask", "tool"), ("sub-02", "volumes", "step"),
    ]
    # nipype's own stamps: each 'tool' slept 0.3 s, then its 'volumes' node slept 0.3 s after it.
    assert (nodes["seconds"] >= 0.29).all() and (nodes["seconds"] < 5).all()
    assert (nodes["threads"] == 1).all()
    for session in ("sub-01", "sub-02"):
        rows = nodes[nodes["session"] == session].set_index("step")
        assert rows.loc["volumes", "start"] >= rows.loc["brain_mask", "start"] + 0.29
        assert f"{session}: " in timings.session_summary(session)
        assert re.search(r"tools \d+\.\d s \(brain_mask \d+\.\d s x1\)", timings.session_summary(session))
    phase = table[table["step"] == "index"].iloc[0]
    assert phase["session"] == "n/a" and phase["kind"] == "phase" and phase["seconds"] >= 0.05
    if plugin == "MultiProc":
        # Two 1-thread tools on 2 processes ran side by side: their critical path is about one of them.
        assert critical_path(table) < nodes[nodes["kind"] == "tool"]["seconds"].sum()

    # A rerun in the same work folder reuses every node: recorded as cached, 0 s.
    again = RunTimings({"sub_01_wf": "sub-01", "sub_02_wf": "sub-02"})
    top.run(plugin=plugin, plugin_args={**args, "status_callback": again.node_status})
    rerun = read_timings(again.write(tmp_path / "again.tsv"))
    assert set(rerun["kind"]) == {"cached"} and (rerun["seconds"] == 0).all()
    assert "4 reused" not in again.session_summary("sub-01")
    assert "2 reused from the work folder" in again.session_summary("sub-01")


def test_critical_path_of_serial_and_overlapping_tools():
    def row(start, seconds, kind="tool"):
        return StepTiming("sub-01", "x", kind, seconds, 2, start)

    assert critical_path([row(0, 5), row(5, 20)]) == pytest.approx(25)       # one after the other
    assert critical_path([row(0, 10), row(2, 5)]) == pytest.approx(10)       # nested
    assert critical_path([row(0, 10), row(8, 10), row(30, 1)]) == pytest.approx(19)
    assert critical_path([row(0, 10, "step"), row(20, 1)]) == pytest.approx(1)  # only tools count
    assert critical_path([]) == 0


def test_a_run_level_tool_phase_counts_in_the_critical_path():
    timings = RunTimings(started=time.time())
    with timings.phase("tool_libraries", kind="tool"):
        time.sleep(0.05)
    with timings.phase("workers"):
        time.sleep(0.05)
    (tool,) = [row for row in timings.rows if row.kind == "tool"]
    assert (tool.session, tool.step) == ("n/a", "tool_libraries")
    assert critical_path(timings.rows) == pytest.approx(tool.seconds) and tool.seconds >= 0.05
