"""The DICOM node end to end with real DICOM tools: dcmtk's storescu sends fundus photos (several transfer
syntaxes, made from ../shared/data) to `python -m dicom_node`, whose SEG objects dcmtk's storescp receives;
every SEG passes dciodvfy; a new version published while it runs answers the next image; bad images get a
failure status; no patient attribute reaches the log."""
from __future__ import annotations

import io
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import DRISHTI, PATIENT, eventually, fundus_dicom

pytestmark = pytest.mark.slow

SYNTAXES = ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.1")
PROPOSE = {"1.2.840.10008.1.2.4.50": "-xy", "1.2.840.10008.1.2.4.90": "-xv", "1.2.840.10008.1.2.1": "-xe"}
"""storescu's option that proposes each file's own transfer syntax (it sends compressed files as they are)."""
REPO_ROOT = Path(__file__).resolve().parents[2]


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed: run tools/install-dicom-tools.sh (dcmtk, dicom3tools)")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def storescu(port: int, *files: Path, syntax: str = "1.2.840.10008.1.2.1") -> str:
    run = subprocess.run([tool("storescu"), "-v", "-nh", PROPOSE[syntax], "-aec", "FUNDUSSEG", "127.0.0.1", str(port),
                          *map(str, files)], capture_output=True, text=True, timeout=300)
    return run.stdout + run.stderr


def dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run([tool("dciodvfy"), str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith(("Error", "Warning"))]


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    from preprocessing.decode import decode_image

    names = ["drishtiGS_002", "drishtiGS_004", "drishtiGS_008"]
    if not all((DRISHTI / "images" / f"{n}.jpg").is_file() for n in names):
        pytest.skip(f"the real datasets are not in {DRISHTI.parent}")
    folder = tmp_path_factory.mktemp("photos")
    files = {}
    for name, syntax, eye in zip(names, SYNTAXES, ("R", "L", "R")):
        rgb = decode_image((DRISHTI / "images" / f"{name}.jpg").read_bytes())
        files[syntax] = folder / f"{name}.dcm"
        files[syntax].write_bytes(fundus_dicom(rgb, syntax, laterality=eye))
    files["multi-frame"] = folder / "multi.dcm"
    files["multi-frame"].write_bytes(fundus_dicom(rgb[:200, :200], frames=2))
    files["no pixels"] = folder / "broken.dcm"
    files["no pixels"].write_bytes(fundus_dicom(rgb[:200, :200], Rows=400))  # header says more than the data holds
    return files


@pytest.fixture(scope="module")
def node(two_stage_version, tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    shutil.copytree(two_stage_version, repo / "optic-disc" / "1")
    received, written = tmp_path_factory.mktemp("received"), tmp_path_factory.mktemp("written")
    receiver_port, node_port = free_port(), free_port()
    receiver = subprocess.Popen([tool("storescp"), "-aet", "PACS", "-od", str(received), "+xa", str(receiver_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path_factory.mktemp("log") / "node.log"
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "dicom_node", "--port", str(node_port), "--model-repo",
                                    str(repo), "--forward", f"127.0.0.1:{receiver_port}:PACS", "--out", str(written),
                                    "--poll-s", "0.5"], stdout=out, stderr=subprocess.STDOUT, env=environment)
    try:
        eventually(lambda: "listening on" in log.read_text() or process.poll() is not None, timeout=180)
        assert process.poll() is None, log.read_text()
        yield {"port": node_port, "repo": repo, "received": received, "written": written, "log": log}
    finally:
        for child in (process, receiver):
            child.terminate()
            child.wait(timeout=30)


def _segs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.endswith((".json", ".tmp")))


def _uid(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def test_photos_in_three_transfer_syntaxes_come_back_as_valid_segs(node, photos):
    import highdicom as hd
    import pydicom

    for syntax in SYNTAXES:
        output = storescu(node["port"], photos[syntax], syntax=syntax)
        assert "Received Store Response (Success)" in output, output
    received = eventually(lambda: len(_segs(node["received"])) == 3 and _segs(node["received"]), timeout=60)
    sources = {str(pydicom.dcmread(photos[s]).SOPInstanceUID): s for s in SYNTAXES}
    for path in received:
        assert dciodvfy_errors(path) == [], path
        seg = hd.seg.segread(io.BytesIO(path.read_bytes()))
        [referenced] = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
        assert referenced.ReferencedSOPInstanceUID in sources
        assert seg.ManufacturerModelName == "optic-disc/1" and len(seg.SegmentSequence) == 2
        disc = seg.get_pixels_by_source_instance([referenced.ReferencedSOPInstanceUID], segment_numbers=[1])
        assert disc.sum() > 1000  # the brightness model finds a real disc
    written = _segs(node["written"])  # the same SEGs, and their Observations, in --out
    assert sorted(p.name for p in written) == sorted(f"{_uid(p)}.dcm" for p in received)
    from fhir.resources.observation import Observation

    for path in written:
        observation = Observation.model_validate_json((path.parent / f"{_uid(path)}.observation.json").read_text())
        assert observation.derivedFrom[-1].identifier.value == f"urn:oid:{_uid(path)}"
        assert observation.valueQuantity is not None and 0 <= float(observation.valueQuantity.value) <= 1


def test_images_it_cannot_read_get_a_failure_status_and_the_node_goes_on(node, photos):
    output = storescu(node["port"], photos["multi-frame"], photos["no pixels"])
    assert output.count("Received Store Response (Error: CannotUnderstand)") == 2, output  # 0xC000
    assert "Received Store Response (Success)" in storescu(node["port"], photos[SYNTAXES[2]])


def test_a_version_published_while_running_answers_the_next_photo(node, photos):
    import pydicom

    staging = node["repo"] / "optic-disc" / ".staging-2"
    shutil.copytree(node["repo"] / "optic-disc" / "1", staging)
    staging.rename(node["repo"] / "optic-disc" / "2")
    eventually(lambda: "version 2" in node["log"].read_text(), timeout=120)
    before = set(_segs(node["received"]))
    assert "Received Store Response (Success)" in storescu(node["port"], photos[SYNTAXES[0]], syntax=SYNTAXES[0])
    [new] = eventually(lambda: list(set(_segs(node["received"])) - before), timeout=60)
    assert pydicom.dcmread(new).ManufacturerModelName == "optic-disc/2"


def test_no_patient_attribute_reaches_the_log(node, photos):
    time.sleep(0.5)
    text = node["log"].read_text()
    assert "SEG" in text
    for value in (PATIENT["PatientName"], PATIENT["PatientID"], PATIENT["PatientBirthDate"], "ACC-SECRET-99"):
        assert value not in text
    assert np.any([line.startswith(tuple("0123456789")) for line in text.splitlines()])
