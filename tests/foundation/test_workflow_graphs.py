"""Graph tests: the participant workflow built, never run, for several option sets on a BIDS skeleton.

Like sMRIPrep's ``test_anatomical.py``: the input images are empty files, so
these tests need no data and no tools; they check that every combination of
inputs and options yields a well-formed graph in which every mandatory input
of every node is either set or connected, and that the expected steps are (or
are not) there.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

from thalamus_bidsapp.bidsio.inputs import SessionInputs
from thalamus_bidsapp.methods import MethodPlan
from thalamus_bidsapp.tools.templateflow import TemplateFiles
from thalamus_bidsapp.workflows.context import RunContext
from thalamus_bidsapp.workflows.participant import init_participant_wf, workflow_name

ALL_METHODS = ("freesurfer", "first", "dbsegment", "meshnet", "mindglide")


def _skeleton(root: Path, *, flair: bool, r1map: bool, lesion: bool, sessions: tuple[str, ...]) -> list[SessionInputs]:
    """Empty files laid out like a BIDS dataset, one ``SessionInputs`` per session."""
    inputs = []
    for session in sessions:
        anat = root / "sub-01" / f"ses-{session}" / "anat"
        anat.mkdir(parents=True, exist_ok=True)
        prefix = f"sub-01_ses-{session}"

        def touch(name: str) -> Path:
            path = anat / f"{prefix}_{name}.nii.gz"
            path.touch()
            return path

        inputs.append(SessionInputs(
            "01", session, touch("T1w"),
            flair=touch("FLAIR") if flair else None,
            r1map=touch("R1map") if r1map else None,
            lesion=touch("label-lesion_mask") if lesion else None,
        ))
    return inputs


def _plan(tmp_path: Path, methods: tuple[str, ...]) -> MethodPlan:
    """Each method's settings as its tool check would give them (paths that are never opened)."""
    licence = tmp_path / "license.txt"
    licence.write_text("not a real licence: the workflow is built, never run\n")
    settings = {
        "freesurfer": {"recon_all": {"subject_id": "sub-01", "subjects_dir": tmp_path, "license_file": licence}},
        "first": {},
        "dbsegment": {"model_folder": tmp_path / "dbsegment"},
        "meshnet": {"model_dir": tmp_path / "meshnet", "sides_model_dir": tmp_path / "meshnet_sides"},
        "mindglide": {"model_path": tmp_path / "mindglide.pth", "device": "cpu"},
    }
    for folder in ("dbsegment", "meshnet", "meshnet_sides"):
        (tmp_path / folder).mkdir(exist_ok=True)
    (tmp_path / "mindglide.pth").touch()
    envelope = next((m for m in ("first", "meshnet", "freesurfer", "dbsegment") if m in methods), None)
    return MethodPlan(run=methods, settings={m: settings[m] for m in methods},
                      envelope=envelope if "mindglide" in methods else None)


def _template(tmp_path: Path) -> TemplateFiles:
    for name in ("tpl_T1w.nii.gz", "tpl_atlas.nii.gz"):
        (tmp_path / name).touch()
    return TemplateFiles(template="MNI152NLin2009cAsym", target=tmp_path / "tpl_T1w.nii.gz",
                         prior=tmp_path / "tpl_atlas.nii.gz", prior_volumes={"L": 3, "R": 14},
                         prior_description="a prior that is never read", prior_atlas="none")


def _build(tmp_path: Path, sessions: list[SessionInputs], methods: tuple[str, ...], *,
           template: bool = True, lesion_filling: str = "auto"):
    plan = _plan(tmp_path, methods)
    run = RunContext(output_dir=tmp_path / "out", work_dir=tmp_path / "work", crash_root=tmp_path / "crash",
                     dataset_roots={"raw": tmp_path / "bids"}, lesion_filling=lesion_filling,
                     template=_template(tmp_path) if template else None, template_schedule="fast")
    return init_participant_wf(sessions, {s.name: plan for s in sessions}, run)


def _node_names(workflow) -> set[str]:
    return {node.fullname.split(".", 1)[1] for node in workflow._create_flat_graph().nodes()}


def _unconnected_mandatory_inputs(workflow) -> list[str]:
    """``node.input`` for every mandatory input that is neither set nor fed by an edge."""
    flat = workflow._create_flat_graph()
    connected: dict[str, set[str]] = {}
    for _, child, data in flat.edges(data=True):
        connected.setdefault(child.fullname, set()).update(dst for _, dst in data.get("connect", []))
    missing = []
    for node in flat.nodes():
        spec = node.interface.inputs
        for name in spec.copyable_trait_names():
            trait = spec.trait(name)
            if not getattr(trait, "mandatory", False) or name in connected.get(node.fullname, set()):
                continue
            if not _is_set(getattr(spec, name)):
                missing.append(f"{node.fullname}.{name}")
    return missing


def _is_set(value) -> bool:
    from nipype.interfaces.base import isdefined

    return isdefined(value)


@pytest.mark.parametrize(
    ("methods", "flair", "r1map", "lesion", "template", "filling"),
    [
        (("meshnet",), False, False, False, True, "auto"),
        (("meshnet",), False, False, False, False, "auto"),
        (("meshnet",), True, False, True, True, "auto"),
        (("meshnet",), True, False, True, True, "both"),
        (("meshnet",), True, False, True, True, "off"),
        (ALL_METHODS, True, True, True, True, "auto"),
        (ALL_METHODS, True, True, False, False, "auto"),
        (("first", "mindglide"), False, True, False, True, "auto"),
        (("freesurfer",), True, False, True, True, "both"),
        (("first", "dbsegment"), False, False, True, False, "both"),
    ],
)
def test_every_mandatory_input_is_set_or_connected(tmp_path, methods, flair, r1map, lesion, template, filling):
    sessions = _skeleton(tmp_path / "bids", flair=flair, r1map=r1map, lesion=lesion, sessions=("1",))
    workflow = _build(tmp_path, sessions, methods, template=template, lesion_filling=filling)
    assert _node_names(workflow), "the workflow has no nodes"
    assert _unconnected_mandatory_inputs(workflow) == []


def test_an_unfed_mandatory_input_is_found(tmp_path):
    sessions = _skeleton(tmp_path / "bids", flair=False, r1map=False, lesion=False, sessions=("1",))
    workflow = _build(tmp_path, sessions, ("meshnet",), template=False)
    session_wf = workflow.get_node(workflow_name(sessions[0]))
    meshnet = session_wf.get_node("segmentation_wf.meshnet_thalamus")
    segmentation = session_wf.get_node("segmentation_wf")
    for parent, child in list(segmentation._graph.in_edges(meshnet)):
        segmentation._graph.remove_edge(parent, child)
    assert any(name.endswith("meshnet_thalamus.t1w") for name in _unconnected_mandatory_inputs(workflow))


def test_both_without_a_method_that_segments_the_t1w_adds_no_unfilled_run(tmp_path):
    sessions = _skeleton(tmp_path / "bids", flair=False, r1map=False, lesion=True, sessions=("1",))
    plan = MethodPlan(run=("freesurfer",), settings={"freesurfer": {"subject_dir": tmp_path}})
    run = RunContext(output_dir=tmp_path / "out", work_dir=tmp_path / "work", crash_root=tmp_path / "crash",
                     lesion_filling="both")
    workflow = init_participant_wf(sessions, {sessions[0].name: plan}, run)
    names = _node_names(workflow)
    assert not any("segmentation_unfilled_wf" in name for name in names)
    assert any("fs_thalamus" in name or "freesurfer" in name for name in names)
    assert _unconnected_mandatory_inputs(workflow) == []


def test_optional_inputs_add_their_steps_and_only_those(tmp_path):
    bare = _skeleton(tmp_path / "bare", flair=False, r1map=False, lesion=False, sessions=("1",))
    full = _skeleton(tmp_path / "full", flair=True, r1map=True, lesion=True, sessions=("1",))
    bare_nodes = _node_names(_build(tmp_path, bare, ("meshnet",), template=False))
    full_nodes = _node_names(_build(tmp_path, full, ("meshnet",), template=True))
    added = full_nodes - bare_nodes
    assert any("flair" in name for name in added) and any("r1" in name for name in added)
    assert any("lesion_fill" in name for name in added)
    assert any("template" in name for name in added)
    assert not any("flair" in name or "lesion" in name or "template" in name for name in bare_nodes)
    assert bare_nodes <= full_nodes


def test_each_session_is_its_own_sub_workflow(tmp_path):
    sessions = _skeleton(tmp_path / "bids", flair=False, r1map=False, lesion=False, sessions=("1", "2", "3"))
    workflow = _build(tmp_path, sessions, ("meshnet",))
    tops = {name.split(".", 1)[0] for name in _node_names(workflow)}
    assert tops == {workflow_name(s) for s in sessions}
    per_session = [{n.split(".", 1)[1] for n in _node_names(workflow) if n.startswith(workflow_name(s))}
                   for s in sessions]
    assert all(nodes == per_session[0] for nodes in per_session)


#: Method sets planning can produce: MindGlide never runs without an envelope method (planning skips it).
PLANNABLE = [m for r in (1, 2) for m in itertools.combinations(ALL_METHODS, r)
             if "mindglide" not in m or set(m) & {"first", "meshnet", "freesurfer", "dbsegment"}]


@pytest.mark.parametrize("methods", PLANNABLE)
def test_each_method_contributes_a_segmentation_node(tmp_path, methods):
    sessions = _skeleton(tmp_path / "bids", flair=True, r1map=False, lesion=False, sessions=("1",))
    nodes = _node_names(_build(tmp_path, sessions, methods, template=False))
    segmentation = {n for n in nodes if "segmentation_wf." in n}
    for method in methods:
        stem = {"freesurfer": "recon_all", "first": "first", "dbsegment": "dbsegment",
                "meshnet": "meshnet", "mindglide": "mindglide"}[method]
        assert any(stem in n for n in segmentation), f"{method}: no node in {sorted(segmentation)}"
    for absent in set(ALL_METHODS) - set(methods) - {"first"}:
        stem = {"freesurfer": "recon_all", "dbsegment": "dbsegment", "meshnet": "meshnet",
                "mindglide": "mindglide"}[absent]
        assert not any(stem in n for n in segmentation), f"{absent} not asked for, yet {sorted(segmentation)}"


def test_node_count_by_public_api_matches_what_runs(tmp_path):
    """The engine counts a session's nodes through nipype's public API: every node but the identity ones."""
    from nipype.interfaces.utility import IdentityInterface

    sessions = _skeleton(tmp_path / "bids", flair=True, r1map=True, lesion=True, sessions=("1",))
    workflow = _build(tmp_path, sessions, ("freesurfer", "meshnet", "mindglide"), lesion_filling="both")
    session_wf = workflow.get_node(workflow.list_node_names()[0].split(".")[0])
    counted = sum(not isinstance(session_wf.get_node(name).interface, IdentityInterface)
                  for name in session_wf.list_node_names())
    flat = workflow._create_flat_graph()
    assert counted == sum(not isinstance(node.interface, IdentityInterface) for node in flat.nodes()) > 20
