"""The export's signatures take `images` as the card's `input_dtype` says: uint8 (the equalised bytes, a quarter of
float32's on every hop) for new versions, float32 for a card that asks for it, as every version before it had.
The two must answer alike, bit for bit, on real photos through the shared pipeline."""
from __future__ import annotations

import json

import numpy as np
import pytest

from fundus_seg.model_card import ModelCard, ModelCardError
from fundus_seg.model_repository import INPUT_KEY, SEGMENT_SIGNATURE, SERVING_SIGNATURE, load_version, signature_input
from tests.helpers import DRISHTI


def test_signature_input_gives_back_every_byte_exactly():
    equalised = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1).repeat(3, axis=-1)
    as_trained = equalised.astype(np.float32) / 255.0  # what preprocessing.transform.equalise returns
    np.testing.assert_array_equal(signature_input(as_trained, "uint8"), equalised)
    assert signature_input(as_trained, "float32").dtype == np.float32
    with pytest.raises(ValueError, match="input_dtype"):
        signature_input(as_trained, "int8")


def test_the_card_says_which_and_an_old_card_is_float32():
    card = {"model_name": "optic-disc", "config": {"model": {"depth": 2, "width": 4, "increment_ratio": 1.0}}}
    assert ModelCard.from_dict(card).input_dtype == "float32"  # every version published before the field
    assert ModelCard.from_json(ModelCard.from_dict({**card, "input_dtype": "uint8"}).to_json()).input_dtype == "uint8"
    with pytest.raises(ModelCardError, match="input_dtype must be one of uint8, float32"):
        ModelCard.from_dict({**card, "input_dtype": "int8"})


@pytest.fixture(scope="module")
def twins(tmp_path_factory):
    """The newest bundled two-stage version's weights, exported once as the export does now and once as before."""
    import keras

    from fundus_seg.quiet_tensorflow import load_tensorflow
    from tests.serving.helpers import bundled_two_stage

    bundled = bundled_two_stage()
    if bundled is None:
        pytest.skip("no bundled two-stage version")
    load_tensorflow(False)
    from training_job.export import save_serving_model

    document = json.loads((bundled / "metrics.json").read_text())
    document.pop("input_dtype", None)
    stage1 = keras.models.load_model(bundled / "model.keras", compile=False)
    stage2 = keras.models.load_model(bundled / "segment.keras", compile=False)
    root = tmp_path_factory.mktemp("twins")
    return {dtype: save_serving_model(stage1, root / dtype, {**document, **extra}, segment_model=stage2)
            for dtype, extra in (("uint8", {}), ("float32", {"input_dtype": "float32"}))}


@pytest.mark.slow
def test_a_new_version_takes_uint8_and_answers_what_its_float32_twin_answers(twins):
    import tensorflow as tf

    from preprocessing.decode import decode_image
    from preprocessing.two_stage import segment_image

    loaded = {dtype: tf.saved_model.load(str(path)) for dtype, path in twins.items()}
    for dtype in twins:
        for name in (SERVING_SIGNATURE, SEGMENT_SIGNATURE):
            spec = loaded[dtype].signatures[name].structured_input_signature[1][INPUT_KEY]
            assert spec.dtype == tf.as_dtype(dtype), (dtype, name)
    versions = {dtype: load_version(path) for dtype, path in twins.items()}
    assert versions["uint8"].card.input_dtype == "uint8" and versions["float32"].card.input_dtype == "float32"
    config = versions["uint8"].card.two_stage()
    photos = sorted((DRISHTI / "images").glob("*.jpg"))[:3]
    assert photos, f"no DRISHTI photos under {DRISHTI}"
    for photo in photos:
        rgb = decode_image(photo.read_bytes())
        answers = [segment_image(rgb, v.predict, v.segment, config) for v in versions.values()]
        np.testing.assert_array_equal(answers[0].disc, answers[1].disc)
        np.testing.assert_array_equal(answers[0].cup, answers[1].cup)
        assert answers[0].disc.sum() > 1000  # a real disc, not two empty masks
