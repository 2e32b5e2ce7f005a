"""An MS session with a FLAIR and a lesion mask through the default path: BIDS-valid outputs and their provenance.

Patient 07 of Lesjak et al. 2017 (T1w and FLAIR, brain-extracted, in MNI
space; the consensus lesion mask as a derivatives dataset). MeshNet is real
(both models from the shared data, given through their environment
variables), the template registration uses the tests' fast schedule.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file
from tests.foundation.datasets import write_description
from thalamus_bidsapp.cli.run import main

pytest.importorskip("torch")
pytestmark = [pytest.mark.slow, pytest.mark.heavy]

PATIENT = ("ms_lesjak2017_mni", "patient07")
T1 = "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
FLAIR = "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"
LESIONS = "GOLD_STANDARD_N4_noneck_reduced_winsor_regtoFLAIR_regtoMNI.nii.gz"


@pytest.fixture(scope="module")
def ms_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ms_bids")
    bids, lesions = root / "bids", root / "lesion_tool"
    write_description(bids, "MS patient with FLAIR")
    write_description(lesions, "consensus lesion masks")
    anat = bids / "sub-07" / "anat"
    anat.mkdir(parents=True)
    shutil.copyfile(shared_file(*PATIENT, T1), anat / "sub-07_T1w.nii.gz")
    shutil.copyfile(shared_file(*PATIENT, FLAIR), anat / "sub-07_FLAIR.nii.gz")
    (lesions / "sub-07" / "anat").mkdir(parents=True)
    mask = nib.load(str(shared_file(*PATIENT, LESIONS)))
    nib.save(nib.Nifti1Image((np.asanyarray(mask.dataobj) > 0).astype(np.uint8), mask.affine),
             str(lesions / "sub-07" / "anat" / "sub-07_desc-lesion_mask.nii.gz"))
    (bids / "participants.tsv").write_text("participant_id\tage\tsex\nsub-07\t40\tF\n")
    out = root / "out"
    code = main([str(bids), str(out), "participant", "--methods", "meshnet", "--derivatives", f"lesions={lesions}",
                 "-w", str(root / "work"), "--nprocs", "1", "--omp-nthreads", "2"])
    return {"out": out, "code": code, "anat": out / "sub-07" / "anat"}


def _sidecar(path: Path) -> dict:
    return json.loads(Path(str(path).replace(".nii.gz", ".json")).read_text())


def test_the_run_succeeds(ms_run):
    assert ms_run["code"] == 0


def test_skull_stripped_inputs_are_said_to_be(ms_run):
    anat = ms_run["anat"]
    for name in ("sub-07_desc-preproc_T1w", "sub-07_space-T1w_desc-preproc_FLAIR", "sub-07_desc-lesionfilled_T1w"):
        sidecar = _sidecar(anat / f"{name}.nii.gz")
        assert sidecar["SkullStripped"] is True, name
        assert sidecar["SkullStrippedDecision"].startswith("measured"), name


def test_template_masks_have_millimetre_units(ms_run):
    masks = sorted(ms_run["anat"].glob("*_space-MNI152NLin2009cAsym_label-thalamus_desc-*_mask.nii.gz"))
    assert masks
    for path in masks:
        assert nib.load(str(path)).header.get_xyzt_units()[0] == "mm"


def test_bids_validator_finds_no_errors(ms_run):
    beside_python = Path(sys.executable).with_name("bids-validator-deno")
    validator = str(beside_python) if beside_python.exists() else shutil.which("bids-validator-deno")
    if validator is None:
        pytest.skip("bids-validator-deno is not installed")
    assert list(ms_run["anat"].glob("*_from-FLAIR_to-T1w_mode-image_xfm.*"))
    result = subprocess.run([validator, str(ms_run["out"]), "--format", "json"], capture_output=True, text=True,
                            timeout=600)
    report = json.loads(result.stdout)
    errors = [i for i in report["issues"]["issues"] if i["severity"] == "error"]
    assert errors == [], errors


def test_config_records_the_values_used(ms_run):
    from thalamus_bidsapp import __version__

    config = json.loads(next((ms_run["out"] / "logs").glob("*/config.json")).read_text())
    models = shared_file("brainchop", "models")
    assert config["option_sources"] == {"meshnet_model": "THALAMUS_MESHNET_MODEL",
                                        "meshnet_sides_model": "THALAMUS_MESHNET_SIDES_MODEL"}
    assert config["method_options"]["meshnet_model"] == str((models / "model30chan18cls").resolve())
    provenance = config["provenance"]
    assert provenance["app_version"] == __version__
    assert provenance["app_commit"] is None or len(provenance["app_commit"].split("+")[0]) == 40
    meshnet = provenance["models"]["meshnet"]
    for key, folder in (("model_dir", "model30chan18cls"), ("sides_model_dir", "model21_104class")):
        assert meshnet[key]["path"] == str((models / folder).resolve())
        weights = models / folder / "model.json"
        assert meshnet[key]["files"]["model.json"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    templateflow = provenance["templateflow"]
    assert templateflow["home"] == config["templateflow_home"] and templateflow["template"] == "MNI152NLin2009cAsym"
    for role in ("target", "prior"):
        path = Path(templateflow["files"][role]["path"])
        assert path.is_relative_to(Path(config["templateflow_home"]))
        assert templateflow["files"][role]["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert "TEMPLATEFLOW_HOME" in config["environment"]["variables"]
