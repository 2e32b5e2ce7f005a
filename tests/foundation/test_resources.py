"""The thread rule: all cores for one session, min(nprocs - 1, 8) per step for several; nipype books them."""

from __future__ import annotations

import os

import pytest

from thalamus_bidsapp.cli.parser import build_parser
from thalamus_bidsapp.participant.resources import MAX_SHARED_THREADS, available_cpus, plan_resources
from thalamus_bidsapp.tools.threads import THREAD_VARIABLES, thread_limits


@pytest.mark.parametrize(
    ("n_sessions", "cpus", "threads", "plugin"),
    [
        (1, 1, 1, "Linear"),      # one session, one CPU
        (1, 2, 2, "MultiProc"),   # one session: the networks get every core
        (1, 16, 16, "MultiProc"),
        (3, 1, 1, "Linear"),      # several sessions, one CPU: one thread, one at a time
        (3, 2, 1, "MultiProc"),   # several sessions on 2 cores: two sessions side by side, 1 thread each
        (3, 4, 3, "MultiProc"),   # fMRIPrep's nprocs - 1
        (50, 32, MAX_SHARED_THREADS, "MultiProc"),  # capped at 8
    ],
)
def test_thread_rule(n_sessions, cpus, threads, plugin):
    plan = plan_resources(n_sessions, cpus=cpus, memory_gb=16)
    assert plan.nprocs == cpus
    assert plan.omp_nthreads == threads
    assert plan.plugin == plugin
    assert 1 <= plan.omp_nthreads <= plan.nprocs
    if plugin == "MultiProc":
        # nipype books every node's n_procs and mem_gb against these totals.
        args = plan.plugin_args()
        assert args["n_procs"] == cpus and args["memory_gb"] == pytest.approx(0.9 * 16)
    else:
        assert plan.plugin_args() == {}


def test_user_choices_win_but_threads_never_exceed_processes(caplog):
    assert plan_resources(1, nprocs=4, omp_nthreads=2, mem_gb=5, cpus=16).omp_nthreads == 2
    assert plan_resources(5, nprocs=4, cpus=16).omp_nthreads == 3
    assert plan_resources(1, nprocs=4, cpus=16).omp_nthreads == 4
    assert plan_resources(1, nprocs=3, cpus=16, mem_gb=5).mem_gb == 5
    plan = plan_resources(1, nprocs=2, omp_nthreads=8, cpus=16)
    assert plan.omp_nthreads == 2
    assert "--omp-nthreads 8" in caplog.text


def test_defaults_follow_the_machine():
    plan = plan_resources(1)
    assert plan.nprocs == available_cpus() >= 1
    assert plan.omp_nthreads == plan.nprocs
    assert plan.mem_gb > 0


def test_command_line_leaves_the_defaults_to_the_rule_and_says_it(capsys):
    args = build_parser().parse_args(["/", "/tmp/out", "participant"])
    assert args.nprocs is None and args.omp_nthreads is None and args.mem_gb is None
    args = build_parser().parse_args(["/", "/tmp/out", "participant", "--nprocs", "4", "--omp-nthreads", "2",
                                      "--mem-gb", "7.5"])
    assert (args.nprocs, args.omp_nthreads, args.mem_gb) == (4, 2, 7.5)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "min(nprocs - 1, 8)" in help_text
    assert "one session" in help_text


def test_thread_limits_are_set_for_the_run_and_restored():
    before = {name: os.environ.get(name) for name in THREAD_VARIABLES}
    with thread_limits(3):
        assert all(os.environ[name] == "3" for name in THREAD_VARIABLES)
    assert {name: os.environ.get(name) for name in THREAD_VARIABLES} == before
