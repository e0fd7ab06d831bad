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
