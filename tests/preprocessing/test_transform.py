import numpy as np

from preprocessing import CropBox, PreprocessConfig, dice, preprocess_image, preprocess_mask, restore_probability
from preprocessing.decode import decode_mask
from preprocessing.pipeline import finish, prepare
from tests.helpers import DRISHTI, RIM_ONE, encode, synthetic_fundus


def test_crop_box_removes_ten_percent_per_edge():
    box = CropBox.for_shape(877, 1024, 0.10)
    assert (box.y0, box.y1, box.x0, box.x1) == (88, 789, 102, 922)


def test_preprocess_shapes_range_and_clahe_changes_contrast():
    rgb, _ = synthetic_fundus()
    x, box = preprocess_image(rgb)
    assert x.shape == (128, 128, 3) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    no_clahe, _ = preprocess_image(rgb, PreprocessConfig(clahe_clip_limit=0.01))
    assert not np.allclose(x, no_clahe)
    assert (box.height, box.width) == rgb.shape[:2]


def test_mask_follows_image_geometry():
    """The disc lands where the image's bright disc lands after crop + resize."""
    rgb, mask = synthetic_fundus(center=(260, 120), radius=25)
    x, _ = preprocess_image(rgb)
    m = preprocess_mask(mask)[..., 0]
    bright = x.mean(axis=2) > 0.85
    assert dice(bright, m >= 0.5) > 0.85


def test_round_trip_restores_original_grid():
    rgb, mask = synthetic_fundus(height=333, width=517, center=(300, 150), radius=40)
    box = CropBox.for_shape(*mask.shape, 0.10)
    restored = restore_probability(preprocess_mask(mask), box)
    assert restored.shape == mask.shape
    assert dice(restored >= 0.5, mask) > 0.97
    assert not restored[: box.y0].any() and not restored[:, box.x1 :].any()


def test_round_trip_on_real_masks_is_near_the_resolution_cap():
    """Expert mask -> 128x128 -> original size loses little: the paper's pipeline is not the bottleneck."""
    for folder, ident, floor in ((DRISHTI, "drishtiGS_002", 0.97), (RIM_ONE, "r3_G_1", 0.95)):
        candidates = sorted((folder / "masks").glob(f"{ident}*_disc.png")) or sorted((folder / "masks").glob("*_disc.png"))
        truth = decode_mask(candidates[0].read_bytes())
        image_bytes = encode(np.dstack([truth.astype(np.uint8) * 200] * 3))
        prepared = prepare(image_bytes)
        restored = finish(preprocess_mask(truth), prepared.box)
        assert restored.shape == truth.shape
        assert dice(restored, truth) > floor
