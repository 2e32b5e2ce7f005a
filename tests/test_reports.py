"""HTML reports on a real derivatives tree, checked as files and in headless Chromium.

The tree comes from running the app on bert's T1w (cropped around the
thalamus so it runs in seconds), with three sessions:

- ses-1: T1w and a FLAIR shifted by a few mm (registered, passes its QC);
- ses-2: T1w and an R1 map of pure noise from an hMRI-style derivatives
  dataset, which the registration QC must exclude;
- ses-3: a FLAIR but no T1w, so the session fails before it starts.

FreeSurfer (bert's finished subject) and MeshNet (weights from the shared
data) run; FSL, DBSegment and MindGlide are absent, so they are skipped.

The browser checks drive Chromium through the DevTools protocol over a pipe
(``--remote-debugging-pipe``): no chromedriver, no Python package and no
network port. They are skipped when Chromium is not installed (Debian
package ``chromium``); the file-level checks always run.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import re
import select
import shutil
import signal
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import REPO_ROOT, shared_file
from tests.foundation.datasets import write_description
from tests.registration_helpers import make_noise_like, make_shifted
from tests.simulate_cohort import REPORT_METHODS, simulate_cohort, write_group_outputs
from thalamus_bidsapp.bidsio.atomic import read_tsv
from thalamus_bidsapp.cli.run import main
from thalamus_bidsapp.reports.group import write_group_report
from thalamus_bidsapp.reports.participant import read_skipped_methods, write_participant_report

#: A whole participant run on real images: over a minute.
pytestmark = [pytest.mark.slow]
#: ses-1 and ses-2 both have a T1w: the longitudinal mode would add its step and its report section, which
#: tests/test_reports_longitudinal.py checks; these checks are of the sessions' sections.
LONGITUDINAL_OFF = ("--longitudinal", "off")

HALF_WIDTH = (48, 30, 48)  # voxels each side of bert's thalamus centre (LIA storage)
ARTIFACTS = REPO_ROOT / "test-artifacts"
SKIPPED = {"sub-01_ses-1": {"first": "FSL not found: FSLDIR is not set",
                            "dbsegment": "DBSegment not found: no 'DBSegment' on PATH",
                            "mindglide": "MindGlide weights not found"}}


def _crop(img: nib.spatialimages.SpatialImage, centre: np.ndarray) -> nib.Nifti1Image:
    window = tuple(slice(c - h, c + h) for c, h in zip(centre, HALF_WIDTH))
    return nib.Nifti1Image(np.asanyarray(img.dataobj)[window].astype(np.float32), img.slicer[window].affine)


@pytest.fixture(scope="module")
def derivatives(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("reports")
    aseg = nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "aseg.mgz")))
    centre = np.array(np.nonzero(np.isin(np.asanyarray(aseg.dataobj), [10, 49]))).mean(axis=1).round().astype(int)
    t1w = _crop(nib.load(str(shared_file("freesurfer_bert_7.2", "mri", "brainmask.mgz"))), centre)
    bids, hmri, scratch = root / "bids", root / "hmri", root / "scratch"
    write_description(bids, "bert, three sessions")
    write_description(hmri, "hMRI")
    scratch.mkdir()
    nib.save(t1w, str(scratch / "t1w.nii.gz"))
    make_shifted(scratch / "t1w.nii.gz", scratch / "flair.nii.gz", (4.0, 0.0, -3.0))
    make_noise_like(scratch / "t1w.nii.gz", scratch / "noise.nii.gz")
    files = {"1": {"T1w": "t1w", "FLAIR": "flair"}, "2": {"T1w": "t1w"}, "3": {"FLAIR": "flair"}}
    for session, images in files.items():
        anat = bids / "sub-01" / f"ses-{session}" / "anat"
        anat.mkdir(parents=True)
        for suffix, source in images.items():
            shutil.copy(scratch / f"{source}.nii.gz", anat / f"sub-01_ses-{session}_{suffix}.nii.gz")
    r1_anat = hmri / "sub-01" / "ses-2" / "anat"
    r1_anat.mkdir(parents=True)
    shutil.copy(scratch / "noise.nii.gz", r1_anat / "sub-01_ses-2_R1map.nii.gz")
    (bids / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t35\tM\n")
    subjects_dir = root / "freesurfer"
    subjects_dir.mkdir()
    (subjects_dir / "sub-01").symlink_to(shared_file("freesurfer_bert_7.2"))

    out, work = root / "out", root / "work"
    code = main([str(bids), str(out), "participant", "--fs-subjects-dir", str(subjects_dir),
                 "--derivatives", f"r1={hmri}", "-w", str(work), "--nprocs", "1", *LONGITUDINAL_OFF])
    group_code = main([str(bids), str(out), "group", "-w", str(work)])
    participant_report = write_participant_report(out, "01", skipped=SKIPPED)
    group_report = write_group_report(out)
    return {"out": out, "code": code, "group_code": group_code, "participant": participant_report,
            "group": group_report}


# --------------------------------------------------------------------------- HTML parsing

class _Resources(HTMLParser):
    """Every URL a page refers to (href, src), its element ids, and its tags."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.ids: set[str] = set()
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for name, value in attrs:
            if name == "id" and value:
                self.ids.add(value)
            if name in {"href", "src", "srcset", "data", "poster", "action"} and value is not None:
                self.urls.append((tag, name, value))


def _parse(page: Path) -> _Resources:
    parser = _Resources()
    parser.feed(page.read_text())
    return parser


def _check_links(page: Path) -> list[str]:
    """Problems with the page's links: missing files, missing anchors, anything external."""
    parsed = _parse(page)
    problems = []
    for tag, attribute, url in parsed.urls:
        parts = urlsplit(url)
        if parts.scheme == "data":
            continue
        if parts.scheme or url.startswith("//"):
            problems.append(f"<{tag} {attribute}={url!r}> is not a relative link")
            continue
        if not parts.path:
            if parts.fragment and unquote(parts.fragment) not in parsed.ids:
                problems.append(f"anchor #{parts.fragment} has no element")
            continue
        target = (page.parent / unquote(parts.path)).resolve()
        if not target.is_file():
            problems.append(f"<{tag} {attribute}={url!r}> points to a missing file")
    return problems


def _images(page: Path) -> list[Path]:
    return [(page.parent / unquote(url)).resolve() for tag, attr, url in _parse(page).urls if tag == "img"]


# --------------------------------------------------------------------------- file-level tests

def test_runs_finished(derivatives):
    # ses-3 has no T1w: exit 1 (some sessions failed) is the expected outcome of this tree.
    assert derivatives["code"] == 1 and derivatives["group_code"] == 0
    assert derivatives["participant"] == derivatives["out"] / "sub-01.html"
    assert derivatives["group"] == derivatives["out"] / "group" / "report.html"


def test_participant_report_content(derivatives):
    text = derivatives["participant"].read_text()
    for session in ("ses-1", "ses-2", "ses-3"):
        assert f'id="sub-01_{session}"' in text
    # The failed session and why; the inputs found; the skipped methods with their reasons.
    assert "no T1w image found for sub-01_ses-3" in text
    assert "sub-01/ses-1/anat/sub-01_ses-1_FLAIR.nii.gz" in text
    # ses-2's R1 map was found but excluded: only the QC table records it.
    ses2 = text.split('id="sub-01_ses-2"', 1)[1].split("</section>", 1)[0]
    assert "R1map" in ses2 and "path not recorded" in ses2 and "No R1map image" not in ses2
    assert "FSL not found: FSLDIR is not set" in text
    # ses-2 has no recorded reasons: the report says so rather than inventing one.
    assert "the reason was not recorded" in text
    # Registration QC: ses-1's FLAIR passed; ses-2's noise R1 map was excluded.
    assert "ants_rigid" in text
    assert "R1map excluded" in text
    # Volumes and the methods paragraph built from the sidecars of what ran.
    assert "17.06" in text
    assert "FreeSurfer 7.2.0-beta" in text and "MeshNet" in text
    assert "Fischl B" in text and "Fedorov A" in text
    assert "Patenaude B" not in text  # FIRST did not run: not cited
    assert "<script" not in text
    # Segmentation QC: a traffic light per method with the reasons, and the table linked.
    ses1 = text.split('id="sub-01_ses-1"', 1)[1].split("</section>", 1)[0]
    assert "Segmentation QC" in ses1 and 'class="qc-light' in ses1
    assert "sub-01_ses-1_label-thalamus_desc-segmentation_qc.tsv" in ses1


def test_every_mask_has_a_cropped_figure(derivatives):
    out = derivatives["out"]
    masks = sorted(out.glob("sub-01/ses-*/anat/*_space-T1w_label-thalamus_desc-*_mask.nii.gz"))
    assert {m.name.split("_desc-")[1] for m in masks} == {"freesurfer_mask.nii.gz", "meshnet_mask.nii.gz"}
    assert len(masks) == 4  # two methods x two sessions with a T1w
    images = {p.name for p in _images(derivatives["participant"])}
    for mask in masks:
        figure = out / "sub-01" / "figures" / mask.name.replace(".nii.gz", ".svg")
        assert figure.name in images
        svg = figure.read_text()
        assert svg.lstrip().startswith("<?xml") and "<svg" in svg
        # 15 slices (5 per plane), each labelled with its position in mm; one T1w row per plane with the
        # thalamus contour as paths.
        assert len(re.findall(r">[xyz]=[+-]\d+ mm<", svg)) == 15
        assert all(f">{plane}<" in svg for plane in ("axial", "coronal", "sagittal"))
        assert svg.count("<image") == 3
        assert svg.count('id="QuadContourSet_') >= 3


def test_mask_figures_draw_left_and_right_in_two_colours(derivatives):
    from thalamus_bidsapp.reports.mask_figures import _SIDE_COLORS

    out = derivatives["out"]
    for desc in ("freesurfer", "meshnet"):
        dseg = out / "sub-01" / "ses-1" / "anat" / f"sub-01_ses-1_space-T1w_seg-thalamus_desc-{desc}_dseg.nii.gz"
        assert dseg.is_file()
        svg = (out / "sub-01" / "figures" / f"sub-01_ses-1_space-T1w_label-thalamus_desc-{desc}_mask.svg").read_text()
        assert _SIDE_COLORS["left"] in svg and _SIDE_COLORS["right"] in svg
    # The participant report's volumes table has the bilateral, left and right rows.
    text = derivatives["participant"].read_text()
    ses1 = text.split('id="sub-01_ses-1"', 1)[1].split("</section>", 1)[0]
    assert "bilateral" in ses1 and ">left<" in ses1 and ">right<" in ses1


def test_report_links_and_images_resolve(derivatives):
    for page in (derivatives["participant"], derivatives["group"]):
        assert _check_links(page) == [], page
        for image in _images(page):
            assert image.stat().st_size > 1000, image


def test_no_external_resources(derivatives):
    for page in (derivatives["participant"], derivatives["group"]):
        text = page.read_text()
        parsed = _parse(page)
        assert not [url for _, _, url in parsed.urls if re.match(r"^(https?:)?//", url)]
        assert "script" not in parsed.tags and "iframe" not in parsed.tags
        assert "@import" not in text and "url(http" not in text
        # The figures it shows load nothing either (matplotlib SVGs embed their bitmaps as data URIs).
        for image in _images(page):
            if image.suffix == ".svg":
                assert not re.search(r'(?:href|src)="(?:https?:)?//', image.read_text()), image


def test_group_report_content(derivatives):
    out, text = derivatives["out"], derivatives["group"].read_text()
    for table in (out / "group").glob("*.tsv"):
        assert f'href="{table.name}"' in text, table.name
    shown = {p.stem for p in _images(derivatives["group"])}
    assert shown == {p.stem for p in (out / "group" / "figures").glob("*.*")}
    assert "containment_heatmap" in shown
    assert "no T1w image found for sub-01_ses-3" in text
    assert 'href="../sub-01.html"' in text
    # ses-2's R1 map failed its QC: listed among the exclusions with the QC table linked.
    excluded = text.split('id="qc"', 1)[1].split("</section>", 1)[0]
    assert "sub-01_ses-2" in excluded and "R1map" in excluded
    assert "sub-01_ses-2_desc-registration_qc.tsv" in excluded
    volumes = read_tsv(out / "group" / "volumes.tsv")
    assert f"{len(volumes)} rows" in text
    # QC: every mask's checks in group/qc.tsv, its worst status in the volumes, flagged masks listed.
    assert "Sessions flagged by the segmentation QC" in excluded and "The QC checks flagged" in excluded
    qc = read_tsv(out / "group" / "qc.tsv")
    assert list(qc.columns) == ["participant_id", "session_id", "method", "contrast", "check", "value",
                                "threshold", "status", "reason"]
    assert set(qc["session_id"]) == {"ses-1", "ses-2"} and set(qc["method"]) == {"freesurfer", "meshnet"}
    assert {"dice_methods", "lr_ratio", "cohort_robust_z", "annual_change"} <= set(qc["check"])
    assert set(volumes["qc_status"]) <= {"pass", "warn", "fail", "skipped"}
    session = read_tsv(out / "sub-01" / "ses-1" / "anat" / "sub-01_ses-1_label-thalamus_volumes.tsv")
    assert "qc_status" in session


@pytest.fixture(scope="module")
def cohort_report(tmp_path_factory) -> Path:
    """The group report of a simulated 30-subject, two-session cohort with five methods and manual masks."""
    out = tmp_path_factory.mktemp("cohort") / "out"
    write_group_outputs(simulate_cohort(n_subjects=30, seed=3, methods=REPORT_METHODS), out)
    return write_group_report(out)


SECTION_ORDER = ("volumes", "agreement", "between-methods", "cross-sectional", "longitudinal", "progression",
                 "power", "qc", "participants")


def test_cohort_report_results_first(cohort_report):
    text = cohort_report.read_text()
    group = cohort_report.parent
    # One section per analysis, in the order of the paper; each with its figure before any table.
    starts = [text.index(f'<section id="{s}"') for s in SECTION_ORDER]
    assert starts == sorted(starts)
    assert text.index("<img") < text.index("<table")
    for section in SECTION_ORDER[:7]:
        body = text.split(f'<section id="{section}"', 1)[1].split("</section>", 1)[0]
        assert "<img" in body and '<p class="lead">' in body, section
        if "<table" in body:
            assert body.index("<img") < body.index("<details"), section
    # Every table linked (downloadable) and collapsed; every figure in SVG and PNG.
    for table in group.glob("*.tsv"):
        assert f'href="{table.name}"' in text, table.name
    assert "<details class=\"table\" id=\"table-volumes\">" in text
    for svg in (group / "figures").glob("*.svg"):
        assert f'src="figures/{svg.name}"' in text and f'href="figures/{svg.stem}.png"' in text
    # Key numbers written from the tables.
    summary = read_tsv(group / "agreement_summary.tsv")
    dice = summary[summary["metric"] == "dice"].sort_values("median").iloc[-1]
    assert f"{dice['method']} has the highest median Dice, {dice['median']:.3f} (IQR {dice['q1']:.3f}" in text
    cross = read_tsv(group / "clinical_crosssectional.tsv")
    n_sig = int((cross["p_fdr"] < 0.05).sum())
    assert f"{n_sig} of {cross['beta'].notna().sum()} cross-sectional associations survive" in text
    assert _check_links(cohort_report) == []


def test_analyses_that_did_not_run_say_why(tmp_path):
    out = tmp_path / "out"
    cohort = simulate_cohort(n_subjects=12, n_sessions=1, seed=2, methods=REPORT_METHODS[:1])
    write_group_outputs(cohort, out, n_manual=0)
    text = write_group_report(out).read_text()

    def section(name):
        return text.split(f'<section id="{name}"', 1)[1].split("</section>", 1)[0]

    assert "Not run: no manual thalamus masks were given" in section("agreement")
    assert "Only one method (freesurfer) has masks" in section("between-methods")
    assert '<p class="skipped">Not run: ' in section("longitudinal")
    assert '<p class="skipped">Not run: ' in section("progression")
    assert "<img" in section("volumes") and "<img" in section("cross-sectional")


def test_regenerating_touches_nothing(derivatives):
    out = derivatives["out"]
    files = [derivatives["participant"], derivatives["group"], *(out / "sub-01" / "figures").glob("*.svg")]
    before = {p: p.stat().st_mtime_ns for p in files}
    write_participant_report(out, "sub-01", skipped=SKIPPED)
    write_group_report(out)
    assert {p: p.stat().st_mtime_ns for p in files} == before


def test_reports_from_a_copied_output_folder(derivatives, tmp_path):
    # The reports of the copy still resolve, and --reports-only style regeneration works there
    # from the derivatives alone (no BIDS dataset, no work folder).
    copy = tmp_path / "moved"
    shutil.copytree(derivatives["out"], copy, symlinks=True)
    for page in (copy / "sub-01.html", copy / "group" / "report.html"):
        assert _check_links(page) == [], page
    # A later run's plan (logs/<run>/methods.json, as the participant level writes it) wins.
    (copy / "logs" / "99991231-235959_later").mkdir()
    (copy / "logs" / "99991231-235959_later" / "methods.json").write_text(json.dumps({
        "sub-01_ses-2": {"methods_run": ["freesurfer", "meshnet"],
                         "methods_skipped": {"first": "recorded in methods.json"}}}))
    assert read_skipped_methods(copy)["sub-01_ses-2"] == {"first": "recorded in methods.json"}
    figures = sorted(p.name for p in (copy / "sub-01" / "figures").iterdir())
    assert "sub-01_ses-1_space-T1w_desc-registration_FLAIR.svg" in figures
    group_figures = sorted(p.name for p in (copy / "group" / "figures").iterdir())
    # Every figure is drawn from published files: all of them come back.
    shutil.rmtree(copy / "sub-01" / "figures")
    shutil.rmtree(copy / "group" / "figures")
    page = write_participant_report(copy, "01")
    text = page.read_text()
    assert "recorded in methods.json" in text
    assert "logs/&lt;run&gt;/methods.json" in text
    assert sorted(p.name for p in (copy / "sub-01" / "figures").iterdir()) == figures
    assert _check_links(page) == []
    assert _check_links(write_group_report(copy)) == []  # the group report draws its figures from the tables
    assert sorted(p.name for p in (copy / "group" / "figures").iterdir()) == group_figures


# --------------------------------------------------------------------------- headless Chromium

def _chromium() -> str | None:
    for name in (os.environ.get("CHROMIUM"), "chromium", "chromium-browser", "google-chrome"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


class HeadlessChromium:
    """Chromium driven through the DevTools protocol over a pipe (``--remote-debugging-pipe``).

    Chromium reads commands on fd 3 and writes replies and events on fd 4,
    each message a JSON text ended by a NUL byte.
    """

    def __init__(self, executable: str, user_data_dir: Path, timeout: float = 60.0) -> None:
        self.timeout = timeout
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # Move the child's ends to fds >= 10 so the dup2 onto 3 and 4 cannot overwrite one of them.
        high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r)
        os.close(from_child_w)
        self.log_path = Path(user_data_dir) / "chromium.log"
        args = [executable, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--no-first-run", "--no-default-browser-check",
                "--disable-dev-shm-usage", "--disable-extensions", "--hide-scrollbars", "--mute-audio",
                f"--user-data-dir={user_data_dir}", "--remote-debugging-pipe", "--window-size=1280,1000",
                "about:blank"]
        actions = [(os.POSIX_SPAWN_DUP2, high_r, 3), (os.POSIX_SPAWN_DUP2, high_w, 4),
                   (os.POSIX_SPAWN_OPEN, 1, str(self.log_path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
                   (os.POSIX_SPAWN_DUP2, 1, 2)]
        # setsid: Chromium's helper processes share the new process group, killed together if need be.
        self.pid = os.posix_spawn(executable, args, os.environ, file_actions=actions, setsid=True)
        os.close(high_r)
        os.close(high_w)
        self._buffer = b""
        self._next_id = 0
        self.events: list[dict] = []

    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no reply from Chromium; see {self.log_path}")
            ready, _, _ = select.select([self._from_child], [], [], remaining)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                if not chunk:
                    raise RuntimeError(f"Chromium closed the pipe; see {self.log_path}")
                self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        """Send a command; return its result. Events arriving meanwhile are kept in ``events``."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_child, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str, session: str) -> dict:
        for event in self.events:
            if event.get("method") == method and event.get("sessionId") == session:
                return event
        deadline = time.monotonic() + self.timeout
        while True:
            event = self._read_message(deadline)
            self.events.append(event)
            if event.get("method") == method and event.get("sessionId") == session:
                return event

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (OSError, RuntimeError, TimeoutError):
            pass  # already gone; the process is reaped below
        for _ in range(100):
            if os.waitpid(self.pid, os.WNOHANG)[0]:
                break
            time.sleep(0.1)
        else:
            os.killpg(self.pid, signal.SIGKILL)
            os.waitpid(self.pid, 0)
        os.close(self._to_child)
        os.close(self._from_child)

    def load(self, page: Path, screenshot: Path, max_height: int = 12000) -> dict:
        """Open ``page``; return its image/anchor check and console problems; save a full-page PNG."""
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", session=session)
        self.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
        self.wait_event("Page.loadEventFired", session)
        # Lazy images below the fold load only when scrolled to: make them eager so every one is checked.
        check = self.send("Runtime.evaluate", {
            "expression": """(async () => {
                for (const img of document.images) { img.loading = 'eager'; }
                await Promise.all([...document.images].map(img => img.decode().catch(() => null)));
                const broken = [...document.images].filter(i => !i.complete || i.naturalWidth === 0)
                    .map(i => i.getAttribute('src'));
                const anchors = [...document.querySelectorAll('a[href^="#"]')]
                    .map(a => decodeURIComponent(a.getAttribute('href').slice(1)))
                    .filter(id => id && !document.getElementById(id));
                const figure = document.querySelector('figure img'), table = document.querySelector('table');
                const figureFirst = figure && table
                    ? Boolean(figure.compareDocumentPosition(table) & Node.DOCUMENT_POSITION_FOLLOWING) : null;
                const overflowingTables = [...document.querySelectorAll('div.table-wrap')]
                    .filter(w => !w.closest('details:not([open])') && w.scrollWidth > w.clientWidth + 1)
                    .map(w => w.querySelector('th') ? w.querySelector('th').textContent : '?');
                const firstScreen = [...document.querySelectorAll('table.results tr.default')]
                    .filter(r => r.getBoundingClientRect().bottom <= 900)
                    .map(r => ({text: r.innerText, light: Boolean(r.querySelector('.qc-light'))}));
                const mosaics = [...document.images].filter(i => /_mask\.svg$/.test(i.getAttribute('src')))
                    .map(i => ({src: i.getAttribute('src'), width: i.getBoundingClientRect().width}));
                return JSON.stringify({images: document.images.length, broken, anchors, overflowingTables,
                                       scrollWidth: document.documentElement.scrollWidth, firstScreen, mosaics,
                                       height: document.documentElement.scrollHeight, figureFirst,
                                       firstFigureWidth: figure ? figure.getBoundingClientRect().width : 0});
            })()""",
            "awaitPromise": True, "returnByValue": True}, session=session)
        result = json.loads(check["result"]["value"])
        height = min(int(result["height"]), max_height)
        shot = self.send("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True,
            "clip": {"x": 0, "y": 0, "width": 1280, "height": height, "scale": 1}}, session=session)
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        screenshot.write_bytes(base64.b64decode(shot["data"]))
        problems = []
        for event in self.events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in {"error", "assert", "warning"}:
                problems.append(f"console.{params['type']}: {params.get('args')}")
            elif method == "Runtime.exceptionThrown":
                problems.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") in {"error", "warning"}:
                entry = params["entry"]
                problems.append(f"{entry.get('source')} {entry.get('level')}: {entry.get('text')} "
                                f"{entry.get('url', '')}")
        self.send("Target.closeTarget", {"targetId": target})
        result["console"] = problems
        return result


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    executable = _chromium()
    if executable is None:
        pytest.skip("Chromium not installed (Debian: apt-get install chromium chromium-driver; or set $CHROMIUM): "
                    "browser checks skipped, file checks still ran")
    chromium = HeadlessChromium(executable, tmp_path_factory.mktemp("chromium-profile"))
    yield chromium
    chromium.close()


def test_broken_page_is_caught(browser, tmp_path):
    # The checks below are only worth something if they fail on a broken page.
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"></head><body>'
                    '<img src="missing.svg"><a href="#nowhere">x</a><script>console.error("boom")</script>'
                    "</body></html>")
    result = browser.load(page, tmp_path / "broken.png")
    assert result["broken"] == ["missing.svg"] and result["anchors"] == ["nowhere"]
    assert any("boom" in p for p in result["console"]) and any("ERR_FILE_NOT_FOUND" in p for p in result["console"])


def _report_artifact(request, path: Path) -> None:
    """Name a screenshot in the test output (also under -q, where prints are captured)."""
    with request.getfixturevalue("capsys").disabled():
        print(f"\nscreenshot: {path}")


@pytest.mark.parametrize("which", ["participant", "group", "cohort"])
def test_report_in_headless_chromium(request, browser, which):
    # Fixtures by name: the cohort's case does not need the (slower) pipeline run.
    page = (request.getfixturevalue("cohort_report") if which == "cohort"
            else request.getfixturevalue("derivatives")[which])
    screenshot = ARTIFACTS / f"report_{which}.png"
    result = browser.load(page, screenshot)
    _report_artifact(request, screenshot)
    assert result["console"] == []
    assert result["scrollWidth"] <= 1280 and result["overflowingTables"] == []
    assert result["broken"] == [] and result["anchors"] == []
    assert result["images"] == len(_images(page)) > 0
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert screenshot.stat().st_size > 20_000, "screenshot suspiciously small: blank page?"
    if which != "participant":
        # Results first: the first figure comes before the first table, at a readable size.
        assert result["figureFirst"] is True
        assert result["firstFigureWidth"] >= 480


def test_participant_results_on_the_first_screen(request, browser, derivatives):
    # At 1280 px, the first 900 px show each session's default-method volume, as in its volumes table, and
    # its QC light; the mosaics are shown wide enough for their text to read (>= 10 px).
    page = derivatives["participant"]
    screenshot = ARTIFACTS / "report_participant_first_screen.png"
    result = browser.load(page, screenshot, max_height=900)
    _report_artifact(request, screenshot)
    first_screen = result["firstScreen"]
    text = page.read_text()
    for session in ("ses-1", "ses-2"):
        volumes = read_tsv(derivatives["out"] / "sub-01" / session / "anat" /
                           f"sub-01_{session}_label-thalamus_volumes.tsv")
        default = volumes[(volumes["method"] == "freesurfer") & (volumes["hemisphere"] == "bilateral")]
        number = f"{float(default['volume_ml'].iloc[0]):.2f}"
        section = text.split(f'id="sub-01_{session}"', 1)[1].split("</section>", 1)[0]
        assert f'<td class="num">{number}</td>' in section  # the volumes table shows the same number
        assert any(number in row["text"] and "freesurfer" in row["text"] and row["light"] for row in first_screen), \
            (session, number, first_screen)
    assert len(first_screen) == 2  # ses-3 failed: no volume, its row says why
    assert result["scrollWidth"] <= 1280 and result["overflowingTables"] == []
    assert result["mosaics"]
    for mosaic in result["mosaics"]:
        svg = (page.parent / unquote(mosaic["src"])).read_text()
        width = float(re.search(r'viewBox="0 0 ([0-9.]+) ', svg).group(1))
        smallest = min(float(v) for v in re.findall(r"font-size: ([0-9.]+)px", svg))
        assert smallest * mosaic["width"] / width >= 10, mosaic
    # The install hints of the methods that did not run are at the end, collapsed.
    assert text.index('id="not-run"') > text.index('id="references"')
    assert "<details><summary>Which methods did not run" in text
