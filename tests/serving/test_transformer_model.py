"""The transformer's three stages against a fake predictor: no processes, no network."""
from __future__ import annotations

import asyncio
import base64
import json

import cv2
import numpy as np
import pytest
from kserve.errors import InferenceError, InvalidInput, ModelNotFound, ModelNotReady

from preprocessing.decode import decode_image
from preprocessing.pipeline import finish, prepare
from serving.transformer.config import TransformerConfig
from serving.transformer.model import VERSION_HEADER, FundusTransformer, UnknownVersion
from serving.transformer.predictor_client import (
    PredictorCallError,
    PredictorUnavailable,
    PredictResult,
    VersionNotFound,
)
from tests.serving.helpers import FakePredictor, disc_probability


def make(tmp_path=None, **options) -> tuple[FundusTransformer, FakePredictor]:
    fake = FakePredictor(**{k: options.pop(k) for k in ("versions", "errors", "labels", "cards", "segment")
                            if k in options})
    return FundusTransformer(TransformerConfig(**options), predictor=fake), fake


def call(model, body, headers=None):
    response, _ = asyncio.run(model(body, headers or {}))
    return response


def v1(*images: bytes) -> dict:
    return {"instances": [{"image_bytes": {"b64": base64.b64encode(i).decode()}} for i in images]}


def test_several_images_one_batched_predict_masks_at_full_size(image_bytes):
    model, fake = make()
    response = call(model, v1(image_bytes, image_bytes))
    assert fake.card_calls == [None]  # who answers the latest, and with which preprocessing
    assert fake.calls == [((2, 128, 128, 3), "3")]  # one Predict for the whole request, pinned to that version
    original = decode_image(image_bytes)
    prepared = prepare(image_bytes)
    expected = finish(disc_probability(), prepared.box)
    for prediction in response["predictions"]:
        mask = cv2.imdecode(np.frombuffer(base64.b64decode(prediction["mask"]["b64"]), np.uint8), cv2.IMREAD_GRAYSCALE)
        assert mask.shape == original.shape[:2]
        assert np.array_equal(mask > 0, expected)
        assert prediction["disc"]["area_px"] == int(expected.sum()) > 0
        assert prediction["model_name"] == "optic-disc" and prediction["model_version"] == 3
        assert set(prediction["timings_ms"]) == {"decode_preprocess", "predict", "postprocess", "total"}
    json.dumps(response)  # JSON-ready


def test_raw_image_body(image_bytes):
    model, _ = make()
    assert len(call(model, image_bytes)["predictions"]) == 1


def test_a_bad_image_is_invalid_input_naming_it(image_bytes):
    model, fake = make()
    with pytest.raises(InvalidInput, match="image 1: not a readable image"):
        call(model, v1(image_bytes, b"definitely not an image"))
    assert fake.calls == []


def test_decode_limits_apply(image_bytes):
    from preprocessing.decode import DecodeLimits

    model, _ = make(decode_limits=DecodeLimits(max_pixels=1000))
    with pytest.raises(InvalidInput, match="larger than the limit"):
        call(model, v1(image_bytes))


def test_requested_version_and_its_absence(image_bytes):
    model, fake = make(errors=[VersionNotFound("model optic-disc has no version 9 loaded")])
    with pytest.raises(UnknownVersion, match="no version 9") as caught:
        call(model, image_bytes, {VERSION_HEADER: "9"})
    assert isinstance(caught.value, ModelNotFound) and fake.card_calls == ["9"] and fake.calls == []


@pytest.mark.parametrize("error, expected", [
    (VersionNotFound("nothing loaded"), ModelNotReady),
    (PredictorUnavailable("unreachable"), ModelNotReady),
    (PredictorCallError("boom"), InferenceError),
])
def test_predictor_failures_map_to_kserve_errors(image_bytes, error, expected):
    model, _ = make(errors=[error])
    with pytest.raises(expected):
        call(model, image_bytes)


def test_rollout_split_labels_and_fallback(tmp_path, image_bytes):
    rollout = tmp_path / "rollout.json"
    rollout.write_text(json.dumps({"stable": 3, "canary": 4, "canary_percent": 100}))
    model, fake = make(rollout_file=rollout, ready_cache_s=0.0)
    call(model, image_bytes)  # canary not loaded yet: served by the latest, not failed
    fake.labels["canary"] = 4
    call(model, image_bytes)
    assert fake.card_calls == ["canary", None, "canary"]
    assert [version for _, version in fake.calls] == ["3", "4"]


def test_rest_predictor_gets_pinned_numbers(tmp_path, image_bytes):
    rollout = tmp_path / "rollout.json"
    rollout.write_text(json.dumps({"stable": 3, "canary": None}))
    model, fake = make(rollout_file=rollout, predictor_api="rest", predictor_host="127.0.0.1:8501")
    call(model, image_bytes)
    assert fake.calls[0][1] == "3"


def test_readiness_follows_the_predictor_and_is_cached():
    model, fake = make(versions=[], ready_cache_s=60)
    assert asyncio.run(model.healthy()) is False  # nothing loaded
    fake.versions.append(1)
    assert asyncio.run(model.healthy()) is False  # the answer is kept for ready_cache_s
    model.config.ready_cache_s = 0
    assert asyncio.run(model.healthy()) is True
    assert model.ready is True  # the transformer itself stays registered with KServe


def test_metrics_count_requests_and_versions(image_bytes):
    from prometheus_client import REGISTRY

    def value(name, **labels):
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before_ok = value("fundus_transformer_requests_total", protocol="v1", outcome="ok")
    before_bad = value("fundus_transformer_requests_total", protocol="raw", outcome="invalid_input")
    before_images = value("fundus_transformer_images_total", model="optic-disc", version="3")
    model, _ = make()
    call(model, v1(image_bytes, image_bytes))
    with pytest.raises(InvalidInput):
        call(model, b"junk")
    assert value("fundus_transformer_requests_total", protocol="v1", outcome="ok") == before_ok + 1
    assert value("fundus_transformer_requests_total", protocol="raw", outcome="invalid_input") == before_bad + 1
    assert value("fundus_transformer_images_total", model="optic-disc", version="3") == before_images + 2


def test_each_version_is_prepared_with_the_preprocessing_on_its_card(image_bytes):
    """Version 5 was trained with a 5% border crop: the crop box (where the mask can be) follows its card."""
    from fundus_seg.model_card import ModelCard
    from preprocessing.transform import PreprocessConfig
    from training_job.config import UNetConfig

    card = ModelCard("optic-disc", UNetConfig(), PreprocessConfig(crop_fraction=0.05), threshold=0.3)
    model, fake = make(versions=[4, 5], cards={5: card.to_json()})
    [prediction] = call(model, image_bytes)["predictions"]
    expected = finish(disc_probability(), prepare(image_bytes, PreprocessConfig(crop_fraction=0.05)).box, 0.3)
    assert prediction["model_version"] == 5 and prediction["disc"]["area_px"] == int(expected.sum())
    [old] = call(model, image_bytes, {VERSION_HEADER: "4"})["predictions"]  # no card: the defaults
    assert old["disc"]["area_px"] == int(finish(disc_probability(), prepare(image_bytes).box).sum())
    assert old["disc"]["area_px"] != prediction["disc"]["area_px"]


def test_a_version_swapped_out_mid_request_is_asked_again_and_prepared_again(image_bytes):
    from fundus_seg.model_card import ModelCard
    from preprocessing.transform import PreprocessConfig
    from training_job.config import UNetConfig

    card = ModelCard("optic-disc", UNetConfig(), PreprocessConfig(crop_fraction=0.05)).to_json()
    model, fake = make(versions=[3], cards={4: card}, ready_cache_s=60)
    call(model, image_bytes)
    fake.versions = [4]  # version 3 unloaded; the cached answer still says 3

    async def predict(images, version=None, signature="serving_default"):
        fake.calls.append((images.shape, version))
        if version == "3":
            raise VersionNotFound("no version 3")
        return PredictResult(np.repeat(disc_probability()[None], len(images), axis=0), int(version))

    fake.errors, fake.predict = [], predict
    [prediction] = call(model, image_bytes)["predictions"]
    assert [v for _, v in fake.calls][-2:] == ["3", "4"] and prediction["model_version"] == 4
    expected = finish(disc_probability(), prepare(image_bytes, PreprocessConfig(crop_fraction=0.05)).box)
    assert prediction["disc"]["area_px"] == int(expected.sum())


# -- two-stage versions ---------------------------------------------------------------------------


def two_stage_card(second_looks: int = 1, locator_looks: int = 0) -> str:
    from fundus_seg.model_card import ModelCard, SegmentCard
    from training_job.config import UNetConfig

    return ModelCard("optic-disc", UNetConfig(), segment=SegmentCard(UNetConfig(), second_looks=second_looks,
                                                                     locator_looks=locator_looks)).to_json()


def masks_of(prediction: dict) -> tuple[np.ndarray, np.ndarray]:
    def png(b64: str) -> np.ndarray:
        return cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_GRAYSCALE) > 0
    return png(prediction["mask"]["b64"]), png(prediction["cup"]["mask"]["b64"])


def test_two_stage_one_batched_call_per_stage_pinned_to_one_version(image_bytes):
    from preprocessing.two_stage import TwoStageConfig, segment_image
    from tests.serving.helpers import crop_probability

    model, fake = make(versions=[5], cards={5: two_stage_card()})
    predictions = call(model, v1(image_bytes, image_bytes))["predictions"]
    assert fake.signatures == ["serving_default", "segment"]  # the crops were right: no second look
    assert fake.calls == [((2, 128, 128, 3), "5"), ((2, 128, 128, 3), "5")]
    # the same answer as the shared pipeline run in-process with the same two model answers
    expected = segment_image(decode_image(image_bytes), lambda x: disc_probability()[None],
                             lambda x: crop_probability()[None], TwoStageConfig())
    for prediction in predictions:
        disc, cup = masks_of(prediction)
        assert np.array_equal(disc, expected.disc) and np.array_equal(cup, expected.cup)
        assert cup.any() and not (cup & ~disc).any()  # the cup lies inside the disc
        assert prediction["cup"]["area_px"] == int(cup.sum()) and prediction["disc"]["area_px"] == int(disc.sum())
        assert prediction["measurements"] == expected.measurements.to_dict()
        assert 0.45 < prediction["measurements"]["vcdr"] < 0.55  # stage 2's cup is half the disc's diameter
        assert prediction["confidence"] == expected.confidence.to_dict()
        assert prediction["pipeline"] == "two-stage" and prediction["model_version"] == 5
    assert model.pixels.used == 0 and model.retained.used == 0  # every budget given back
    json.dumps(predictions)


def test_the_locators_own_looks_are_batched_stage_1_calls_and_answer_as_the_shared_pipeline(image_bytes):
    from preprocessing.two_stage import TwoStageConfig, segment_image
    from tests.serving.helpers import crop_probability

    model, fake = make(versions=[5], cards={5: two_stage_card(locator_looks=2)})
    predictions = call(model, v1(image_bytes, image_bytes))["predictions"]
    assert fake.signatures == ["serving_default"] * 3 + ["segment"]  # two more looks of stage 1, both images each
    assert [shape[0] for shape, _ in fake.calls] == [2, 2, 2, 2] and {v for _, v in fake.calls} == {"5"}
    expected = segment_image(decode_image(image_bytes), lambda x: disc_probability()[None],
                             lambda x: crop_probability()[None], TwoStageConfig(locator_looks=2))
    for prediction in predictions:
        disc, cup = masks_of(prediction)
        assert np.array_equal(disc, expected.disc) and np.array_equal(cup, expected.cup)
        assert prediction["confidence"] == expected.confidence.to_dict()
    assert model.pixels.used == 0 and model.retained.used == 0


def test_single_stage_answers_in_the_same_form(image_bytes):
    model, _ = make()
    [prediction] = call(model, image_bytes)["predictions"]
    assert prediction["pipeline"] == "single-stage" and prediction["cup"] is None and prediction["measurements"] is None
    assert set(prediction["confidence"]) == {"score", "low", "reasons", "codes"}


def test_laterality_names_the_horizontal_sectors_and_judges_isnt(image_bytes):
    model, _ = make(versions=[5], cards={5: two_stage_card()})
    body = v1(image_bytes, image_bytes, image_bytes)
    body["instances"][0]["laterality"], body["instances"][1]["laterality"] = "R", "L"
    right, left, unknown = (p["measurements"] for p in call(model, body)["predictions"])
    assert set(right["rim_width_px"]) == {"superior", "inferior", "nasal", "temporal"} == set(left["rim_width_px"])
    assert set(unknown["rim_width_px"]) == {"superior", "inferior", "left", "right"}
    assert right["laterality"] == "R" and isinstance(right["isnt_holds"], bool) and unknown["isnt_holds"] is None
    # a right eye's nasal side is the image's right
    assert right["rim_width_px"]["nasal"] == unknown["rim_width_px"]["right"] == left["rim_width_px"]["temporal"]
    [raw] = call(model, image_bytes, {"fundus-seg-laterality": "L"})["predictions"]
    assert raw["measurements"] == left
    with pytest.raises(InvalidInput, match="laterality must be"):
        call(model, image_bytes, {"fundus-seg-laterality": "left"})


def test_the_second_look_sends_only_the_images_whose_crop_was_off(image_bytes):
    from tests.serving.helpers import crop_probability

    def segment(crops, number):
        answers = np.repeat(crop_probability()[None], len(crops), axis=0)
        if number == 1:
            answers[1] = crop_probability(shift=0.4)  # stage 2 sees image 1's disc well right of the centre
        return answers

    model, fake = make(versions=[5], cards={5: two_stage_card()}, segment=segment)
    first, second = call(model, v1(image_bytes, image_bytes))["predictions"]
    assert fake.signatures == ["serving_default", "segment", "segment"]
    assert [shape[0] for shape, _ in fake.calls] == [2, 2, 1] and {v for _, v in fake.calls} == {"5"}
    assert second["disc"]["centroid"][0] > first["disc"]["centroid"][0] + 10  # cut again where the disc was seen


def test_a_version_allowing_more_looks_cuts_again_until_the_crop_is_right(image_bytes):
    from tests.serving.helpers import crop_probability

    def segment(crops, number):  # image 1's disc is seen off-centre on its first two crops, centred on the third
        answers = np.repeat(crop_probability()[None], len(crops), axis=0)
        if number in (1, 2):
            answers[-1] = crop_probability(shift=0.4)
        return answers

    for looks, calls in ((1, [2, 2, 1]), (3, [2, 2, 1, 1])):
        model, fake = make(versions=[5], cards={5: two_stage_card(second_looks=looks)}, segment=segment)
        first, second = call(model, v1(image_bytes, image_bytes))["predictions"]
        assert [shape[0] for shape, _ in fake.calls] == calls
        assert model.retained.used == 0 and model.pixels.used == 0  # every kept image given back
    assert second["disc"]["centroid"][0] > first["disc"]["centroid"][0] + 20  # cut again twice, further right


def test_images_the_retained_budget_cannot_keep_are_decoded_again_to_the_same_answer(image_bytes):
    kept, _ = make(versions=[5], cards={5: two_stage_card()})
    redecoded, _ = make(versions=[5], cards={5: two_stage_card()}, retained_pixels=1)
    body = v1(image_bytes, image_bytes)
    a, b = (call(m, body)["predictions"] for m in (kept, redecoded))
    for x, y in zip(a, b):
        x.pop("timings_ms"), y.pop("timings_ms")
        assert x == y
    assert redecoded.retained.used == 0 and redecoded.pixels.used == 0


def test_a_version_swapped_out_between_the_stages_runs_again_on_the_new_one(image_bytes):
    from tests.serving.helpers import crop_probability

    def segment(crops, number):
        if number == 1:
            fake.versions = [6]
            raise VersionNotFound("no version 5")
        return np.repeat(crop_probability()[None], len(crops), axis=0)

    model, fake = make(versions=[5], cards={5: two_stage_card(), 6: two_stage_card()}, segment=segment)
    [prediction] = call(model, image_bytes)["predictions"]
    assert [v for _, v in fake.calls] == ["5", "5", "6", "6"] and prediction["model_version"] == 6
    assert model.retained.used == 0


def test_a_failing_second_stage_gives_every_budget_back(image_bytes):
    def segment(crops, number):
        return np.full((len(crops), 128, 128, 2), np.nan, np.float32)

    model, _ = make(versions=[5], cards={5: two_stage_card()}, segment=segment)
    with pytest.raises(InferenceError, match="non-finite"):
        call(model, v1(image_bytes, image_bytes))
    assert model.retained.used == 0 and model.pixels.used == 0


def test_a_photo_that_is_not_a_fundus_is_low_confidence_even_when_the_model_sees_a_disc():
    """The fake model answers a perfect disc for anything: the answer must still not be a confident one."""
    rng = np.random.default_rng(0)
    grey = np.full((480, 640, 3), 128, np.uint8)
    noise = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
    sky = np.zeros((480, 640, 3), np.uint8)
    sky[..., 2] = np.linspace(120, 255, 640, dtype=np.uint8)  # a blue gradient: no fundus is blue
    sky[..., 1] = 90
    photos = [cv2.imencode(".jpg", cv2.cvtColor(p, cv2.COLOR_RGB2BGR))[1].tobytes() for p in (grey, noise, sky)]
    for model, _ in (make(versions=[5], cards={5: two_stage_card()}), make()):
        for prediction in call(model, v1(*photos))["predictions"]:
            assert prediction["confidence"]["low"] is True, prediction["confidence"]
            assert "not_fundus_colour" in prediction["confidence"]["codes"]
