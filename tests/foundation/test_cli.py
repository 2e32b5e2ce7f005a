"""The command line: help, version, usage errors and their exit codes."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import shared_file
from thalamus_bidsapp import __version__
from thalamus_bidsapp.cli.run import main


def test_help_lists_the_bids_app_contract(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for option in ("bids_dir", "output_dir", "--participant-label", "--fs-subjects-dir", "--derivatives",
                   "--bids-filter-file", "--nprocs", "--work-dir", "exit status"):
        assert option in out


def test_version(capsys):
    assert main(["--version"]) == 0
    assert __version__ in capsys.readouterr().out


def test_python_dash_m_entry_point():
    result = subprocess.run([sys.executable, "-m", "thalamus_bidsapp", "--version"], capture_output=True, text=True)
    assert result.returncode == 0 and __version__ in result.stdout


@pytest.mark.parametrize("argv", [
    [],
    ["{bids}", "{out}", "subject"],
    ["{bids}", "{out}", "participant", "--nprocs", "0"],
    ["{bids}", "{out}", "participant", "--methods", "nonsense"],
    ["/no/such/folder", "{out}", "participant"],
])
def test_usage_errors_exit_64(argv, tmp_path, capsys):
    bids = shared_file("ds002748_subset")
    argv = [a.format(bids=bids, out=tmp_path / "out") for a in argv]
    assert main(argv) == 64
    assert "error" in capsys.readouterr().err


def test_output_inside_input_is_refused(tmp_path, capsys):
    bids = tmp_path / "bids"
    bids.mkdir()
    assert main([str(bids), str(bids / "derivatives" / "x"), "participant"]) == 64
    assert "never written" in capsys.readouterr().err
    assert not (bids / "derivatives").exists()


def test_unknown_participant_exits_66(tmp_path, caplog):
    bids = shared_file("ds002748_subset")
    code = main([str(bids), str(tmp_path / "out"), "participant", "--participant-label", "sub-77",
                 "-w", str(tmp_path / "work")])
    assert code == 66
    assert "77" in caplog.text and "not found" in caplog.text


def test_not_a_bids_dataset_exits_65(tmp_path, caplog):
    (tmp_path / "empty").mkdir()
    code = main([str(tmp_path / "empty"), str(tmp_path / "out"), "participant", "-w", str(tmp_path / "work")])
    assert code == 65
    assert "not a usable BIDS dataset" in caplog.text


def test_group_before_participant_exits_66(tmp_path, caplog):
    bids = shared_file("ds002748_subset")
    assert main([str(bids), str(tmp_path / "out"), "group", "-w", str(tmp_path / "work")]) == 66
    assert "run the participant level first" in caplog.text


def test_unwritable_output_exits_73(tmp_path, caplog):
    out = tmp_path / "out"
    out.write_text("a file where the output folder should be")
    bids = shared_file("ds002748_subset")
    code = main([str(bids), str(out / "derivatives"), "participant", "--participant-label", "01",
                 "-w", str(tmp_path / "work")])
    assert code == 73
    assert "cannot write" in caplog.text and "Traceback" not in caplog.text
