"""``--lesion-source mindglide``: MindGlide's lesion class, read from the package's label table, as the lesion mask."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_file

torch = pytest.importorskip("torch")
pytest.importorskip("mindglide")

from thalamus_bidsapp.tools import mindglide as mg  # noqa: E402

PATIENT = ("ms_lesjak2017_mni", "patient07")


def test_lesion_label_read_from_package_table() -> None:
    from mindglide.consts import PROPERTIES

    code = mg.lesion_label()
    assert PROPERTIES["labels"][str(code)].lower() == "lesion"
    labels = np.zeros((4, 4, 4), np.uint8)
    labels[1, 1, 1], labels[2, 2, 2] = code, mg.dgm_label()
    mask = np.asanyarray(mg.lesion_mask(nib.Nifti1Image(labels, np.eye(4))).dataobj)
    assert mask.sum() == 1 and mask[1, 1, 1] == 1


@pytest.mark.slow
def test_mindglide_lesions_node_writes_a_t1w_grid_mask_and_records_its_source(tmp_path, monkeypatch) -> None:
    from mindglide import network

    from thalamus_bidsapp.methods.mindglide import MindGlideLesions

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    img = nib.load(shared_file(*PATIENT, "FLAIR_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"))
    centre = np.rint(np.linalg.inv(img.affine) @ [0.0, -18.0, 8.0, 1.0]).astype(int)[:3]
    crop = img.slicer[tuple(slice(c - h, c + h) for c, h in zip(centre, (32, 32, 24)))]
    nib.save(crop, tmp_path / "flair.nii.gz")
    t1 = nib.load(shared_file(*PATIENT, "T1_N4_noneck_reduced_winsor_regtoFLAIR_brain_N4_regtoMNI.nii.gz"))
    nib.save(t1.slicer[tuple(slice(c - h, c + h) for c, h in zip(centre, (32, 32, 24)))], tmp_path / "t1w.nii.gz")
    torch.manual_seed(0)
    checkpoint = tmp_path / "mindglide_random.pt"
    torch.save(network.get_network(torch.device("cpu")).state_dict(), checkpoint)
    (tmp_path / "node").mkdir()
    result = MindGlideLesions(t1w=str(tmp_path / "t1w.nii.gz"), flair=str(tmp_path / "flair.nii.gz"),
                              model_path=str(checkpoint)).run(cwd=str(tmp_path / "node"))
    mask = nib.load(result.outputs.out_file)
    assert mask.shape == crop.shape and np.allclose(mask.affine, crop.affine)
    assert set(np.unique(np.asanyarray(mask.dataobj))) <= {0, 1}
    provenance = json.loads(Path(result.outputs.provenance_file).read_text())
    assert provenance["LesionSource"] == f"MindGlide class {mg.lesion_label()} (Lesion) on the FLAIR"
    assert provenance["Tool"] == "MindGlide" and len(provenance["ModelSHA256"]) == 64
    assert provenance["LabelsTaken"] == {str(mg.lesion_label()): "Lesion"}
