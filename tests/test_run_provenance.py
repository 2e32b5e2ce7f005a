"""``logs/<run>/config.json``'s provenance: the values a run actually used, not the options it was given."""

from __future__ import annotations

import hashlib

from tests.conftest import shared_file
from thalamus_bidsapp import __version__
from thalamus_bidsapp.cli.run import build_config
from thalamus_bidsapp.methods.meshnet import METHOD as MESHNET
from thalamus_bidsapp.participant.provenance import run_provenance
from thalamus_bidsapp.tools.templateflow import TemplateFiles


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_models_chosen_by_the_environment_and_template_files_are_recorded_with_their_sha256(tmp_path):
    models = shared_file("brainchop", "models")
    environ = {"THALAMUS_MESHNET_MODEL": str(models / "model30chan18cls"),
               "THALAMUS_MESHNET_SIDES_MODEL": str(models / "model21_104class"),
               "TEMPLATEFLOW_HOME": str(tmp_path / "tf")}
    config = build_config([str(shared_file("ds002748_subset")), str(tmp_path / "out"), "participant",
                           "--methods", "meshnet"], environ=environ)
    # No --meshnet-model on the command line: the environment chose it, and the configuration says so.
    assert config.option("meshnet_model") == (models / "model30chan18cls").resolve()
    assert config.option_sources["meshnet_model"] == "THALAMUS_MESHNET_MODEL"
    status = MESHNET.check_tools(config)
    assert status.reason is None
    home = tmp_path / "tf" / "tpl-X"
    home.mkdir(parents=True)
    (home / "target.nii.gz").write_bytes(b"target")
    (home / "prior.nii.gz").write_bytes(b"prior")
    template = TemplateFiles("X", home / "target.nii.gz", home / "prior.nii.gz", {}, "", "")

    provenance = run_provenance(config, {"meshnet": status.settings}, template)

    assert provenance["app_version"] == __version__
    assert provenance["app_commit"] is None or len(provenance["app_commit"].split("+")[0]) == 40
    for key, folder in (("model_dir", "model30chan18cls"), ("sides_model_dir", "model21_104class")):
        recorded = provenance["models"]["meshnet"][key]
        assert recorded["path"] == str((models / folder).resolve())
        assert recorded["files"]["model.json"] == _sha256(models / folder / "model.json")
    files = provenance["templateflow"]["files"]
    assert provenance["templateflow"]["home"] == str(config.templateflow_home)
    assert files["target"] == {"path": str(home / "target.nii.gz"), "sha256": _sha256(home / "target.nii.gz")}
    assert files["prior"]["sha256"] == _sha256(home / "prior.nii.gz")
    assert run_provenance(config, {"meshnet": status.settings}, None)["templateflow"] is None  # --template none
