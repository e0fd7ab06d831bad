"""A version is served with the preprocessing on its own card, read through the TF Serving protocol."""
from __future__ import annotations

import pytest

from fundus_seg.model_card import ModelCard
from preprocessing.decode import decode_image
from preprocessing.transform import PreprocessConfig
from serving.client import RestClient
from tests.serving.helpers import build_saved_model, eventually
from training_job.config import UNetConfig

pytestmark = pytest.mark.slow


def crop_area(height: int, width: int, fraction: float) -> int:
    """Pixels inside the border crop: where a model that calls everything disc puts the mask."""
    dy, dx = round(height * fraction), round(width * fraction)
    return (height - 2 * dy) * (width - 2 * dx)


@pytest.mark.parametrize("predictor_api", ["grpc", "rest"])
def test_each_version_is_served_with_its_own_preprocessing(tmp_path, start_stack, publish_version, image_bytes,
                                                          predictor_api):
    card = ModelCard("optic-disc", UNetConfig(depth=2, width=4), PreprocessConfig(crop_fraction=0.05))
    old, new = tmp_path / "no-card", tmp_path / "card"
    build_saved_model(old, bias=-5.0)  # a version from before cards: the defaults (10% crop)
    build_saved_model(new, bias=-5.0, card=card.to_json())
    repo = tmp_path / "repo"
    publish_version(repo, 1, old)
    stack = start_stack(repo, predictor_api=predictor_api)
    assert stack.wait_ready(120)
    height, width = decode_image(image_bytes).shape[:2]
    client = RestClient(stack.config.url)
    [before] = client.segment([image_bytes])
    assert before.model_version == 1 and before.disc["area_px"] == crop_area(height, width, 0.10)
    publish_version(repo, 2, new)  # picked up while serving, and served with its own card
    latest = eventually(lambda: next(r for r in client.segment([image_bytes]) if r.model_version == 2)
                        if client.segment([image_bytes])[0].model_version == 2 else None, timeout=60)
    client.close()
    assert latest.disc["area_px"] == crop_area(height, width, 0.05)


def test_a_version_trained_with_a_5_percent_crop_is_served_with_it(tiny_datasets, tmp_path, start_stack, drishti):
    """Trained with `preprocess.crop_fraction: 0.05` from a config file: the card says so in the
    SavedModel (read in this process), and the service (through the TF Serving protocol) answers
    exactly what this process computes with that card."""
    import numpy as np
    import yaml

    from fundus_seg.model_repository import load_version
    from preprocessing.pipeline import finish, prepare
    from training_job.__main__ import main as train

    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"preprocess": {"crop_fraction": 0.05}}))
    repo = tmp_path / "models"
    assert train(["--config", str(config), "--data", str(tiny_datasets["drishti-gs1"]), "--model-repo", str(repo),
                  "--epochs", "1", "--steps-per-epoch", "2", "--batch-size", "4", "--depth", "1", "--width", "4",
                  "--no-jit-compile"]) == 0
    version = load_version(repo / "optic-disc" / "1")
    assert version.card.preprocess.crop_fraction == 0.05  # from the SavedModel's model_card signature

    image = drishti[0][0].read_bytes()
    prepared = prepare(image, version.card.preprocess)
    expected = finish(version.predict(prepared.input[None])[0], prepared.box, version.card.threshold)
    stack = start_stack(repo)
    assert stack.wait_ready(120)
    client = RestClient(stack.config.url)
    [served] = client.segment([image])
    client.close()
    assert served.model_version == 1 and np.array_equal(served.mask(), expected)
    with_defaults = prepare(image)
    assert not np.array_equal(version.predict(with_defaults.input[None]), version.predict(prepared.input[None]))
    assert "crop_fraction=0.05" in (stack.config.log_dir / "transformer.log").read_text()
