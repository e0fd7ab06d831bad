"""A two-stage version served end to end (predictor + transformer processes) on DRISHTI images and on
photos that are not fundus images: the same answer over every protocol as the shared pipeline run
in-process, laterality, confidence, both predictor clients' `segment` signature, and `fundus-seg segment`.

The version is the bundled two-stage one when published (models/optic-disc/2), else a tiny untrained
one built once per session (then only the answers' form and their agreement are checked, not their quality).
"""
from __future__ import annotations

import asyncio
import base64
import json
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

from preprocessing.decode import decode_image
from serving.client import GrpcClient, RestClient, SegmentationError
from tests.serving.helpers import bundled_two_stage, http, logs_of

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def service(tmp_path_factory, two_stage_version):
    from serving.local_service import LocalService, LocalServiceConfig

    root = tmp_path_factory.mktemp("two-stage-e2e")
    (root / "repo" / "optic-disc").mkdir(parents=True)
    shutil.copytree(two_stage_version, root / "repo" / "optic-disc" / "1")
    config = LocalServiceConfig(model_repo=root / "repo", http_port=0, grpc_port=0, predictor_grpc_port=0,
                                predictor_rest_port=0, poll_seconds=0.2, log_dir=root / "logs")
    with LocalService(config) as stack:
        assert stack.wait_ready(120), logs_of(stack)[-3000:]
        yield stack


@pytest.fixture(scope="module")
def clients(service):
    rest, grpc = RestClient(service.config.url), GrpcClient(service.config.grpc_target)
    yield rest, grpc
    rest.close()
    grpc.close()


@pytest.fixture(scope="module")
def in_process(two_stage_version):
    from fundus_seg.model_repository import load_version

    return load_version(two_stage_version)


def not_fundus_photos() -> list[bytes]:
    """A flat grey card, colour noise and a blue sky gradient, as JPEGs a camera would send."""
    rng = np.random.default_rng(1)
    grey = np.full((600, 800, 3), 128, np.uint8)
    noise = rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)
    sky = np.zeros((600, 800, 3), np.uint8)
    sky[..., 2] = np.linspace(140, 255, 800, dtype=np.uint8)
    sky[..., 1] = np.linspace(60, 160, 600, dtype=np.uint8)[:, None]
    return [cv2.imencode(".jpg", cv2.cvtColor(p, cv2.COLOR_RGB2BGR))[1].tobytes() for p in (grey, noise, sky)]


def test_every_protocol_answers_what_the_shared_pipeline_answers_in_process(clients, in_process, drishti):
    from preprocessing.two_stage import segment_image

    rest, grpc = clients
    images = [drishti[0][0].read_bytes(), drishti[1][0].read_bytes()]
    by_rest, by_grpc = rest.segment(images, laterality=["R", None]), grpc.segment(images, laterality=["R", None])
    config = in_process.card.two_stage()
    for results in (by_rest, by_grpc):
        for result, data, side in zip(results, images, ["R", None], strict=True):
            expected = segment_image(decode_image(data), in_process.predict, in_process.segment, config, side)
            disc, cup = result.mask(), result.cup_mask()
            assert result.pipeline == "two-stage" and result.model_version == 1
            assert disc.shape == cup.shape == decode_image(data).shape[:2]
            assert not (cup & ~disc).any() and result.cup["area_px"] == int(cup.sum())
            assert _dice(disc, expected.disc) > 0.98 and _dice(cup, expected.cup) > 0.95 or not expected.disc.any()
            assert result.confidence.to_dict()["codes"] == list(expected.confidence.reasons)
            if expected.measurements is None:
                assert result.measurements is None
            else:
                assert result.measurements.laterality == side
                assert abs(result.measurements.vcdr - expected.measurements.vcdr) < 0.03
                sectors = result.measurements.rim_width_px
                assert (sectors.nasal is not None) == (side is not None) == (sectors.left is None)
    for a, b in zip(by_rest, by_grpc, strict=True):  # the same pipeline whatever the protocol
        assert a.mask_png == b.mask_png and a.cup_png == b.cup_png and a.measurements == b.measurements
        assert a.confidence == b.confidence and a.disc == b.disc and a.cup == b.cup


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total)


def test_v2_rest_and_raw_bodies_carry_laterality_and_answer_the_new_outputs(service, clients, drishti):
    url = service.config.url
    data = drishti[0][0].read_bytes()
    [v1] = clients[0].segment([data], laterality="L")
    status, body = http(f"{url}/v2/models/optic-disc/infer", {"inputs": [
        {"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(data).decode()]},
        {"name": "laterality", "datatype": "BYTES", "shape": [1], "data": ["L"]}]})
    assert status == 200, body
    outputs = {o["name"]: o["data"][0] for o in body["outputs"]}
    assert base64.b64decode(outputs["cup_mask"]) == v1.cup_png and json.loads(outputs["cup"]) == v1.cup
    measurements = json.loads(outputs["measurements"])
    assert measurements == (v1.measurements.to_dict() if v1.measurements else None)
    assert json.loads(outputs["confidence"]) == v1.confidence.to_dict() and outputs["pipeline"] == "two-stage"
    for where, headers in ((f"{url}/v1/models/optic-disc:predict?laterality=L", {}),
                           (f"{url}/v1/models/optic-disc:predict", {"fundus-seg-laterality": "L"})):
        status, raw = http(where, data, headers={"Content-Type": "image/jpeg", **headers})
        assert status == 200, raw
        [prediction] = raw["predictions"]
        assert prediction["measurements"] == measurements and base64.b64decode(prediction["cup"]["mask"]["b64"]) \
            == v1.cup_png
    refusals = [
        (f"{url}/v1/models/optic-disc:predict?laterality=left", data, {"Content-Type": "image/jpeg"}),
        (f"{url}/v1/models/optic-disc:predict?laterality=L", data, {"Content-Type": "image/jpeg",
                                                                    "fundus-seg-laterality": "R"}),
        (f"{url}/v1/models/optic-disc:predict", {"instances": [{"b64": base64.b64encode(data).decode(),
                                                                "laterality": "OD"}]}, {}),
        (f"{url}/v2/models/optic-disc/infer", {"inputs": [
            {"name": "image_bytes", "datatype": "BYTES", "shape": [1], "data": [base64.b64encode(data).decode()]},
            {"name": "laterality", "datatype": "BYTES", "shape": [2], "data": ["L", "R"]}]}, {}),
    ]
    for where, request, headers in refusals:
        status, answer = http(where, request, headers=headers)
        assert status == 400 and "laterality" in answer["error"], (where, status, answer)
    with pytest.raises(SegmentationError, match="laterality must be") as caught:
        clients[1].segment([data], laterality="X")
    assert caught.value.status == "INVALID_ARGUMENT"


def test_a_photo_that_is_not_a_fundus_is_never_a_confident_disc(clients):
    for client in clients:
        for result in client.segment(not_fundus_photos()):
            assert result.confidence.low is True, result.confidence
            assert result.confidence.reasons  # and says why


def test_a_fundus_photo_with_the_bundled_model_is_confident(clients, drishti):
    results = clients[0].segment([drishti[i][0].read_bytes() for i in range(4)])
    for result in results:  # the answer's form holds for any model
        assert 0.0 <= result.confidence.score <= 1.0 and isinstance(result.confidence.low, bool)
    if bundled_two_stage() is None:
        pytest.skip("no bundled two-stage version (models/optic-disc/2) yet: the tiny untrained stand-in's "
                    "confidence means nothing; the form was checked")
    assert sum(not r.confidence.low for r in results) >= 3, [r.confidence for r in results]
    for result in results:
        if not result.confidence.low:
            assert 0.2 < result.measurements.vcdr < 0.95


@pytest.mark.parametrize("signature_api", ["grpc", "rest"])
def test_both_predictor_clients_call_the_segment_signature(service, in_process, signature_api):
    from serving.transformer.predictor_client import make_predictor

    port = service.config.predictor_grpc_port if signature_api == "grpc" else service.config.predictor_rest_port
    from fundus_seg.model_repository import signature_input

    predictor = make_predictor(signature_api, f"127.0.0.1:{port}", "optic-disc")
    # equalised bytes / 255, as preprocessing hands them over; sent as the dtype the version's card names
    crops = np.random.default_rng(0).integers(0, 256, (2, 128, 128, 3)).astype(np.float32) / 255.0
    sent = signature_input(crops, in_process.card.input_dtype)

    async def both():
        try:
            return (await predictor.predict(sent, "1", "segment"),
                    await predictor.predict(sent, "1", "serving_default"))
        finally:
            await predictor.close()

    segment, locate = asyncio.run(both())
    assert segment.version == 1 and segment.probability.shape == (2, 128, 128, 2)
    assert locate.probability.shape == (2, 128, 128, 1)
    np.testing.assert_allclose(segment.probability, in_process.segment(crops), atol=1e-5)
    np.testing.assert_allclose(locate.probability, in_process.predict(crops), atol=1e-5)


def test_fundus_seg_segment_writes_both_masks_and_the_overlay(service, tmp_path, drishti):
    image = drishti[0][0]
    done = subprocess.run([sys.executable, "-m", "fundus_seg.cli", "segment", str(image), "--url", service.config.url,
                           "--laterality", "R", "--masks", str(tmp_path), "--overlay", str(tmp_path)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    [line] = [json.loads(x) for x in done.stdout.splitlines()]
    assert line["pipeline"] == "two-stage" and set(line["confidence"]) == {"score", "low", "reasons", "codes"}
    assert line["measurements"] is None or line["measurements"]["laterality"] == "R"
    shape = decode_image(image.read_bytes()).shape
    assert cv2.imread(line["cup_mask"], cv2.IMREAD_GRAYSCALE).shape == shape[:2]
    assert cv2.imread(line["mask"], cv2.IMREAD_GRAYSCALE).shape == shape[:2]
    assert cv2.imread(line["overlay"]).shape == shape


def test_dicom_fundus_photos_are_segmented_with_the_eye_from_their_header(service, clients, drishti):
    """`application/dicom` bodies, v1 `{"dicom": {"b64": ...}}` and the client's bytes: the same answer as the
    JPEG's pixels, with Image Laterality (0020,0062) feeding the ISNT sectors; anything not a fundus photo is a 400."""
    from preprocessing.dicom import decode_dicom
    from tests.helpers import fundus_dicom

    url = service.config.url
    rgb = decode_image(drishti[0][0].read_bytes())
    dicom = fundus_dicom(rgb, "1.2.840.10008.1.2.1", laterality="L")  # explicit VR little endian, uncompressed
    png = cv2.imencode(".png", cv2.cvtColor(decode_dicom(dicom).rgb, cv2.COLOR_RGB2BGR))[1].tobytes()
    [as_png] = clients[0].segment([png], laterality="L")
    status, raw = http(f"{url}/v1/models/optic-disc:predict", dicom, headers={"Content-Type": "application/dicom"})
    assert status == 200, raw
    [prediction] = raw["predictions"]
    assert base64.b64decode(prediction["mask"]["b64"]) == as_png.mask_png  # the pixels, losslessly
    if as_png.measurements is not None:
        assert prediction["measurements"] == as_png.measurements.to_dict()  # "L" from the header, as if sent
        assert prediction["measurements"]["laterality"] == "L" and "nasal" in prediction["measurements"]["rim_width_px"]
    status, v1 = http(f"{url}/v1/models/optic-disc:predict",
                      {"instances": [{"dicom": {"b64": base64.b64encode(dicom).decode()}}]})
    assert status == 200 and v1["predictions"][0]["mask"] == prediction["mask"], v1
    [by_grpc] = clients[1].segment([dicom])
    assert by_grpc.mask_png == as_png.mask_png
    pdf = fundus_dicom(rgb[:64, :64], sop_class="1.2.840.10008.5.1.4.1.1.104.1")  # Encapsulated PDF Storage
    status, refused = http(f"{url}/v1/models/optic-disc:predict", pdf, headers={"Content-Type": "application/dicom"})
    assert status == 400 and "not a fundus photo" in refused["error"], refused


def test_dicom_seg_and_fhir_observation_on_request(service, drishti):
    """`?outputs=dicom-seg,fhir` on v1: the SEG references the source instance and holds the answer's masks; the
    Observation validates against the FHIR model and carries the vCDR; a SEG of a JPEG is refused (no source)."""
    import io

    import highdicom as hd
    import pydicom
    from fhir.resources.observation import Observation

    from tests.helpers import fundus_dicom

    url = service.config.url
    rgb = decode_image(drishti[0][0].read_bytes())
    dicom = fundus_dicom(rgb, laterality="R")
    source = pydicom.dcmread(io.BytesIO(dicom))
    status, raw = http(f"{url}/v1/models/optic-disc:predict?outputs=dicom-seg,fhir", dicom,
                       headers={"Content-Type": "application/dicom"})
    assert status == 200, raw
    [prediction] = raw["predictions"]
    seg = hd.seg.Segmentation.from_dataset(pydicom.dcmread(io.BytesIO(base64.b64decode(prediction["dicom_seg"]["b64"]))))
    assert seg.StudyInstanceUID == source.StudyInstanceUID
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    disc = cv2.imdecode(np.frombuffer(base64.b64decode(prediction["mask"]["b64"]), np.uint8), cv2.IMREAD_GRAYSCALE) > 0
    planes = seg.get_pixels_by_source_instance(source_sop_instance_uids=[source.SOPInstanceUID], segment_numbers=[1])
    assert np.array_equal(planes[0, ..., 0].astype(bool), disc)  # the SEG holds the answer's disc
    observation = Observation.model_validate(prediction["fhir_observation"])
    assert observation.get_resource_type() == "Observation" and observation.status == "preliminary"
    if prediction["measurements"] is not None:
        assert float(observation.valueQuantity.value) == pytest.approx(prediction["measurements"]["vcdr"])
    status, refused = http(f"{url}/v1/models/optic-disc:predict?outputs=dicom-seg", drishti[0][0].read_bytes(),
                           headers={"Content-Type": "image/jpeg"})
    assert status == 400 and "DICOM" in refused["error"], refused
    status, fhir_only = http(f"{url}/v1/models/optic-disc:predict?outputs=fhir", drishti[0][0].read_bytes(),
                             headers={"Content-Type": "image/jpeg"})
    assert status == 200 and "fhir_observation" in fhir_only["predictions"][0] and "dicom_seg" not in fhir_only["predictions"][0]
    status, unknown = http(f"{url}/v1/models/optic-disc:predict?outputs=pdf", drishti[0][0].read_bytes(),
                           headers={"Content-Type": "image/jpeg"})
    assert status == 400 and "unknown output" in unknown["error"]
