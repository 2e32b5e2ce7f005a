"""Content keys of report figures: what changes a key and where it is kept."""

from __future__ import annotations

import shutil

from thalamus_bidsapp.reports.figure_keys import figure_key, file_digest, is_current, recorded_key, with_key


def test_key_follows_the_bytes_and_parameters_not_the_folder(tmp_path):
    a = tmp_path / "a" / "image.nii.gz"
    a.parent.mkdir()
    a.write_bytes(b"voxels")
    key = figure_key([a], ["title"], code=(__name__,))
    assert key == figure_key([a], ["title"], code=(__name__,))
    copy = tmp_path / "copy" / "image.nii.gz"
    copy.parent.mkdir()
    shutil.copy(a, copy)
    assert figure_key([copy], ["title"], code=(__name__,)) == key  # a copied output folder keeps its figures
    assert figure_key([a], ["another title"], code=(__name__,)) != key
    assert figure_key([a, tmp_path / "missing.nii.gz"], ["title"], code=(__name__,)) != key
    a.write_bytes(b"other voxels")
    assert figure_key([a], ["title"], code=(__name__,)) != key
    assert file_digest(tmp_path / "missing.nii.gz") == "absent"


def test_key_is_written_after_the_xml_declaration(tmp_path):
    key = "ab" * 32
    figure = tmp_path / "figure.svg"
    assert recorded_key(figure) is None and not is_current(figure, key)
    figure.write_bytes(with_key("<?xml version='1.0'?>\n<svg/>", key))
    assert figure.read_text().startswith(f"<?xml version='1.0'?>\n<!-- thalamus_bidsapp figure key: {key} -->")
    assert recorded_key(figure) == key and is_current(figure, key) and not is_current(figure, "cd" * 32)
    figure.write_bytes(with_key(b"<svg/>", key))
    assert recorded_key(figure) == key
