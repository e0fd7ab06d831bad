import numpy as np
import tensorflow as tf

from preprocessing import dice, preprocess_image, preprocess_mask
from preprocessing.augment import AugmentConfig, dynamic_augment, static_augment
from tests.helpers import synthetic_fundus


def _pair(seed=0):
    rgb, mask = synthetic_fundus(center=(250, 130), radius=28, seed=seed)
    return preprocess_image(rgb)[0], preprocess_mask(mask)


def test_static_variants_change_brightness_and_contrast_only():
    x, m = _pair()
    config = AugmentConfig()
    images, masks = static_augment(x[None], m[None], config)
    assert len(images) == len(config.static_variants) == len(masks)
    assert np.array_equal(images[0], x)
    assert images[3].mean() > x.mean() > images[4].mean()  # brighter, darker
    assert images[1].std() > x.std() > images[2].std()  # more, less contrast
    assert all(np.array_equal(mask, m) for mask in masks)


def test_dynamic_augmentation_moves_image_and_mask_together():
    tf.random.set_seed(1)
    x, m = _pair()
    images = tf.constant(np.repeat(x[None], 16, axis=0))
    masks = tf.constant(np.repeat(m[None], 16, axis=0))
    config = AugmentConfig(rotation_deg=30, shift_fraction=0.15, zoom_range=(0.7, 1.4), vertical_flip=True)
    out_x, out_m = dynamic_augment(images, masks, config)
    out_x, out_m = out_x.numpy(), out_m.numpy()
    assert out_x.shape == images.shape and out_m.shape == masks.shape
    moved = [dice(out_m[i, ..., 0] >= 0.5, m[..., 0] >= 0.5) for i in range(16)]
    assert min(moved) < 0.9, "the transforms should actually move the disc"
    for i in range(16):
        bright = out_x[i].mean(axis=2) > 0.85
        assert dice(bright, out_m[i, ..., 0] >= 0.5) > 0.8, f"sample {i}: image and mask drifted apart"


def test_zoom_on_disc_keeps_an_off_centre_disc_in_view_at_a_strong_zoom_in():
    """A 3x zoom about the image's centre cuts most of an off-centre disc off; about the disc it keeps it whole,
    9x larger."""
    tf.random.set_seed(2)
    x, m = _pair()  # disc well right of the centre
    images = tf.constant(np.repeat(x[None], 8, axis=0))
    masks = tf.constant(np.repeat(m[None], 8, axis=0))
    common = dict(rotation_deg=0.0, shift_fraction=0.0, zoom_range=(3.0, 3.0), horizontal_flip=False)
    _, about_centre = dynamic_augment(images, masks, AugmentConfig(**common))
    _, about_disc = dynamic_augment(images, masks, AugmentConfig(**common, zoom_on_disc=1.0))
    area = float((m[..., 0] >= 0.5).sum())
    assert all(float((mask[..., 0] >= 0.5).sum()) < 0.6 * 9.0 * area for mask in about_centre.numpy())
    for mask in about_disc.numpy():
        assert 0.9 * 9.0 * area < float((mask[..., 0] >= 0.5).sum()) < 1.1 * 9.0 * area


def test_extend_edges_fills_a_zoom_out_with_the_photo_s_edge_colours_and_leaves_the_mask_black_there():
    """A zoom-out of a photo that is all disc region leaves a black frame: with `extend_edges` the frame shows the
    photo's edge colours instead (no black edge for a locator to take for the disc's), the mask is unchanged."""
    tf.random.set_seed(3)
    x, m = _pair()
    images = tf.constant(np.repeat(x[None], 32, axis=0))
    masks = tf.constant(np.repeat(m[None], 32, axis=0))
    common = dict(rotation_deg=0.0, shift_fraction=0.0, zoom_range=(0.5, 0.5), horizontal_flip=False)
    black_x, black_m = dynamic_augment(images, masks, AugmentConfig(**common))
    half_x, half_m = dynamic_augment(images, masks, AugmentConfig(**common, extend_edges=0.5))
    frame = np.ones((128, 128), bool)
    frame[30:98, 30:98] = False  # what lies outside the shrunken photo (63.5 +- 32 pixels)
    assert black_x.numpy()[:, frame].max() == 0
    extended = half_x.numpy()[:, frame].max(axis=(1, 2)) > 0
    assert 0.2 < extended.mean() < 0.8  # about half the samples
    assert np.array_equal(half_m.numpy(), black_m.numpy())  # the mask never sees the extension
    inner = np.zeros((128, 128), bool)
    inner[34:94, 34:94] = True
    assert np.allclose(half_x.numpy()[:, inner], black_x.numpy()[:, inner], atol=1e-5)  # the photo itself unchanged
