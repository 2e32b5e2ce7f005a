"""The group level's own log file, linked from its report; a clinical column under another name or missing."""

from __future__ import annotations

import html
import re
from pathlib import Path

from tests.fuzz.dataset_cases import make_dataset, write_participant_outputs
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.run import main

SUBJECTS = ("01", "02", "03")


def _case(tmp_path: Path, header: str) -> tuple[Path, Path]:
    bids, _ = make_dataset(tmp_path / "bids", subjects=SUBJECTS)
    rows = [header] + [f"sub-{s}\t{30 + 7 * i}\t{'FMF'[i]}" for i, s in enumerate(SUBJECTS)]
    (bids / "participants.tsv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    write_participant_outputs(out, bids, {(s, None): "ok" for s in SUBJECTS})
    return bids, out


def test_group_log_file_and_report_name_the_missing_column(tmp_path: Path) -> None:
    bids, out = _case(tmp_path, "participant_id\tage\tsexe")  # no sex column, nor an alias of it
    assert main([str(bids), str(out), "group", "-w", str(tmp_path / "work")]) == 0
    logs = sorted(out.glob("logs/*/group.log"))
    assert len(logs) == 1
    text = logs[0].read_text()
    assert "clinical analyses skipped" in text and "'sex'" in text and "group/volumes.tsv" in text
    analyses = read_tsv(out / "group" / "clinical_analyses.tsv")
    assert set(analyses["status"]) == {"skipped"} and analyses["reason"].str.contains("'sex'").all()
    report = (out / "group" / "report.html").read_text()
    skipped = [html.unescape(s) for s in re.findall(r'<p class="skipped">(.*?)</p>', report, flags=re.S)]
    clinical = [s for s in skipped if "clinical role 'sex'" in s]
    assert len(clinical) == 4  # cross-sectional, longitudinal, progression, power
    link = f'href="../logs/{logs[0].parent.name}/group.log"'
    assert all(link in s for s in clinical)


def test_gender_column_is_read_as_sex(tmp_path: Path) -> None:
    bids, out = _case(tmp_path, "participant_id\tage\tgender")
    assert main([str(bids), str(out), "group", "-w", str(tmp_path / "work")]) == 0
    analyses = read_tsv(out / "group" / "clinical_analyses.tsv").set_index("analysis")
    assert analyses.loc["cross_sectional", "status"] == "done" or "sex" not in str(
        analyses.loc["cross_sectional", "reason"])
    assert (out / "group" / "clinical_exclusions.tsv").is_file()
    assert "'sex'" not in next(out.glob("logs/*/group.log")).read_text()


def test_with_a_clinical_config_a_missing_required_column_is_exit_65_named_in_the_log(tmp_path: Path,
                                                                                       caplog) -> None:
    """The documented other branch: a clinical config is a request for the analyses, so a missing column stops."""
    bids, out = _case(tmp_path, "participant_id\tage\tsexe")
    clinical = tmp_path / "clinical.yaml"
    clinical.write_text("columns:\n  age: {column: age}\n")
    code = main([str(bids), str(out), "group", "--clinical-config", str(clinical), "-w", str(tmp_path / "work")])
    assert code == 65
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert any("'sex'" in text and "participants.tsv" in text for text in errors)
    log = next(out.glob("logs/*/group.log")).read_text()
    assert "'sex'" in log and "ERROR" in log  # the log file says why the group level stopped
