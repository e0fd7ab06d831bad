"""The model card: typed, written once at publish, carried inside the SavedModel and as metrics.json."""
from __future__ import annotations

import json

import pytest

from fundus_seg.model_card import ModelCard, ModelCardError
from fundus_seg.model_repository import CARD_OUTPUT, CARD_SIGNATURE
from fundus_seg.paths import BUNDLED_MODEL_REPO
from preprocessing.transform import PreprocessConfig
from training_job.config import UNetConfig


def test_the_bundled_model_has_a_card_in_its_savedmodel_equal_to_its_metrics_json():
    import tensorflow as tf

    version = BUNDLED_MODEL_REPO / "optic-disc" / "1"
    on_disk = ModelCard.from_json((version / "metrics.json").read_text())
    carried = ModelCard.from_json(tf.saved_model.load(str(version)).signatures[CARD_SIGNATURE]()[CARD_OUTPUT].numpy())
    assert carried == on_disk
    assert on_disk.architecture == UNetConfig(depth=6, width=16, increment_ratio=1.4)
    assert on_disk.preprocess == PreprocessConfig() and on_disk.threshold == 0.5
    assert on_disk.test_metrics["drishti-gs1"].n == 51 and on_disk.test_metrics["rim-one-dl"].n == 146


def test_export_carries_a_non_default_card(tmp_path):
    import tensorflow as tf

    from training_job.export import save_serving_model
    from training_job.unet import build_unet

    card = ModelCard("optic-disc", UNetConfig(depth=2, width=4), PreprocessConfig(crop_fraction=0.05, size=128),
                     threshold=0.4, run_id="r1", extra={"epochs": 1})
    save_serving_model(build_unet(card.architecture), tmp_path / "v", card.to_dict())
    loaded = tf.saved_model.load(str(tmp_path / "v"))
    assert ModelCard.from_json(loaded.signatures[CARD_SIGNATURE]()[CARD_OUTPUT].numpy()) == card
    assert ModelCard.from_json((tmp_path / "v" / "metrics.json").read_text()) == card
    assert json.loads((tmp_path / "v" / "metrics.json").read_text())["epochs"] == 1  # the rest is kept


def test_round_trip_keeps_what_it_does_not_model():
    document = json.loads((BUNDLED_MODEL_REPO / "optic-disc" / "1" / "metrics.json").read_text())
    again = ModelCard.from_dict(document).to_dict()
    assert {k: v for k, v in again.items() if k in document} == document


@pytest.mark.parametrize("document, message", [
    ([1, 2], "JSON object"),
    ({"threshold": 1.5}, "threshold"),
    ({"threshold": "high"}, "number"),
    ({"base_version": "first"}, "unusable model card"),
    ({"config": {"segment": {"second_looks": 9}}}, "second_looks"),
    ({"config": {"segment": {"second_looks": "two"}}}, "second_looks"),
    ({"config": {"segment": {"locator_looks": 9}}}, "locator_looks"),
    ({"config": {"segment": {"locator_view": 0.2}}}, "locator_view"),
    ({"config": {"segment": {"locator_view": "wide"}}}, "locator_view"),
])
def test_unusable_cards_are_refused(document, message):
    with pytest.raises(ModelCardError, match=message):
        ModelCard.from_dict(document)


def test_a_two_stage_card_says_how_many_looks_its_pipeline_takes():
    from fundus_seg.model_card import SegmentCard

    card = ModelCard("optic-disc", UNetConfig(), segment=SegmentCard(UNetConfig(), second_looks=3))
    again = ModelCard.from_json(card.to_json())
    assert again == card and again.two_stage().second_looks == 3
    older = card.to_dict()
    older["config"]["segment"].pop("second_looks")  # a version published before the setting: one look, as then
    assert ModelCard.from_dict(older).two_stage().second_looks == 1


def test_a_two_stage_card_says_whether_its_locator_looks_again():
    from fundus_seg.model_card import SegmentCard

    card = ModelCard("optic-disc", UNetConfig(), segment=SegmentCard(UNetConfig(), locator_looks=2, locator_view=1.14))
    pipeline = ModelCard.from_json(card.to_json()).two_stage()
    assert (pipeline.locator_looks, pipeline.locator_view) == (2, 1.14)
    older = card.to_dict()
    for key in ("locator_looks", "locator_view"):
        older["config"]["segment"].pop(key)  # versions 1-3: published before it, their locator looks once
    assert ModelCard.from_dict(older).two_stage().locator_looks == 0
