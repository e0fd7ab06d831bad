"""Write a trained model as a TF Serving SavedModel version with its model card, and publish it.

What a version holds and which signatures it has is `fundus_seg.model_repository`'s contract;
this module builds them from a Keras model: `serving_default` runs the U-Net, `model_card`
returns the card, and the same card is written as metrics.json.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from fundus_seg import model_repository
from fundus_seg.model_card import ModelCard
from fundus_seg.model_repository import (
    CARD_OUTPUT,
    CARD_SIGNATURE,
    CUP_OUTPUT_KEY,
    INPUT_DTYPES,
    INPUT_KEY,
    KERAS_FILE,
    OUTPUT_KEY,
    SEGMENT_KERAS_FILE,
    SEGMENT_SIGNATURE,
    SERVING_SIGNATURE,
)


def inference_copy(model: keras.Model) -> keras.Model:
    """The same weights without the optimizer: a version holds what serving needs (half the bytes)."""
    copy = keras.Model.from_config(model.get_config())  # architecture only: not compiled
    copy.set_weights(model.get_weights())
    return copy


def save_serving_model(model: keras.Model, directory: str | Path, metrics: dict,
                       segment_model: keras.Model | None = None) -> Path:
    """A version: `model` as serving_default; with `segment_model` (stage 2, two outputs) a two-stage version.
    Its signatures take `images` as the card's `input_dtype` says (uint8 unless `metrics` says otherwise)."""
    directory = Path(directory)
    model = inference_copy(model)
    size = model.input_shape[1]
    card = ModelCard.from_dict({"input_dtype": INPUT_DTYPES[0], **metrics})  # refuses a card serving could not read
    dtype = tf.as_dtype(card.input_dtype)

    def scaled(images):
        """What the U-Nets were trained on: float32 in [0, 1] (uint8 bytes / 255, as preprocessing.transform.equalise)."""
        return tf.cast(images, tf.float32) / 255.0 if dtype == tf.uint8 else images
    if (segment_model is None) != (card.segment is None):
        raise ValueError("a two-stage version needs both its stage-2 model and config.segment on its card")
    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SERVING_SIGNATURE,
        fn=lambda images: {OUTPUT_KEY: model(scaled(images), training=False)},
        input_signature=[tf.TensorSpec([None, size, size, 3], dtype, name=INPUT_KEY)],
    )
    if segment_model is not None:
        stage2 = inference_copy(segment_model)
        crop = stage2.input_shape[1]
        archive.track(stage2)

        def segment(images):
            both = stage2(scaled(images), training=False)
            return {OUTPUT_KEY: both[..., 0:1], CUP_OUTPUT_KEY: both[..., 1:2]}

        archive.add_endpoint(name=SEGMENT_SIGNATURE, fn=segment,
                             input_signature=[tf.TensorSpec([None, crop, crop, 3], dtype, name=INPUT_KEY)])
    text = card.to_json()
    archive.add_endpoint(name=CARD_SIGNATURE, fn=lambda: {CARD_OUTPUT: tf.constant(text)}, input_signature=[])
    archive.write_out(str(directory), verbose=False)
    write_warmup(directory, card)
    # TF Serving ignores extra files; incremental training restarts from these Keras weights.
    model.save(directory / KERAS_FILE)
    if segment_model is not None:
        stage2.save(directory / SEGMENT_KERAS_FILE)
    (directory / model_repository.CARD_FILE).write_text(text)
    return directory


def write_warmup(directory: Path, card: ModelCard) -> Path:
    """TF Serving's warm-up requests (`serving.warmup`): replayed on load, so a new version's first request is not slow."""
    from serving.warmup import warmup_requests, write_warmup_requests

    return write_warmup_requests(directory, warmup_requests(card))


def publish(model: keras.Model, metrics: dict, model_repo: str, model_name: str, run_id: str | None = None,
            segment_model: keras.Model | None = None) -> int:
    """Save to a scratch folder, then publish atomically as the next integer version."""
    with tempfile.TemporaryDirectory(prefix="fundus-seg-export-") as scratch:
        local = save_serving_model(model, Path(scratch) / "model", metrics, segment_model)
        return model_repository.publish_version(local, model_repo, model_name, run_id=run_id)
