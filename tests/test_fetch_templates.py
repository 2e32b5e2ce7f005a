"""``--fetch-templates``: the one command that downloads TemplateFlow files (runs never do).

templateflow's ``api.get`` is replaced by a fake that copies from the test
TemplateFlow home (or fails as it does without network): no test reaches
the network.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from thalamus_bidsapp.cli import fetch_templates
from thalamus_bidsapp.tools.templateflow import required_files

TEMPLATE = "MNI152NLin2009cAsym"


@pytest.fixture
def empty_home(tmp_path, monkeypatch) -> Path:
    home = tmp_path / "templateflow"
    home.mkdir()
    monkeypatch.setenv("TEMPLATEFLOW_HOME", str(home))
    return home


def _fake_get(source_home: Path, target_home: Path, calls: list):
    def get(template, raise_empty=False, **entities):
        calls.append((template, entities))
        matches = [f for f in required_files(template)
                   if f.suffix == entities["suffix"] and f.desc == entities.get("desc")
                   and f.atlas == entities.get("atlas")]
        assert len(matches) == 1, entities
        target = matches[0].path(target_home)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(matches[0].path(source_home), target)
        return [target]

    return get


def test_fetch_puts_every_file_in_the_home_once(templateflow_home, empty_home, monkeypatch, capsys):
    from templateflow import api

    calls: list = []
    monkeypatch.setattr(api, "get", _fake_get(templateflow_home, empty_home, calls))
    assert fetch_templates.main(["--fetch-templates", "--template", TEMPLATE]) == 0
    assert all(f.path(empty_home).stat().st_size > 1000 for f in required_files(TEMPLATE))
    assert len(calls) == len(required_files(TEMPLATE))
    assert f"template {TEMPLATE} is ready" in capsys.readouterr().out
    # Files already there are not downloaded again.
    assert fetch_templates.main(["--fetch-templates", "--template", TEMPLATE]) == 0
    assert len(calls) == len(required_files(TEMPLATE))


def test_fetch_without_network_is_exit_66_naming_the_file(empty_home, monkeypatch, capsys):
    from templateflow import api

    def offline(template, raise_empty=False, **entities):
        raise ConnectionError("Name or service not known")

    monkeypatch.setattr(api, "get", offline)
    assert fetch_templates.main(["--fetch-templates"]) == 66
    err = capsys.readouterr().err
    assert "could not download template MNI152NLin2009cAsym, resolution 02, suffix T1w" in err
    assert "ConnectionError" in err and str(empty_home) in err and "Traceback" not in err


def test_fetch_with_no_template_is_a_usage_error(capsys):
    assert fetch_templates.main(["--fetch-templates", "--template", "none"]) == 64
    assert "needs a template" in capsys.readouterr().err


def test_the_missing_template_message_says_how_to_fetch(empty_home):
    from thalamus_bidsapp.errors import ThalamusError
    from thalamus_bidsapp.tools.templateflow import find_template_files

    with pytest.raises(ThalamusError) as info:
        find_template_files(TEMPLATE)
    assert info.value.exit_code == 66
    assert f"thalamus-bidsapp --fetch-templates --template {TEMPLATE}" in str(info.value)
