import math

import numpy as np
import pytest

from preprocessing import dice, disc_geometry, postprocess_mask, radius_within, summarize
from preprocessing.postprocess import fill_holes, largest_component


def test_dice_hand_computed():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    a[0, :2] = True  # 2 pixels
    b[0, 1:4] = True  # 3 pixels, overlap 1
    assert dice(a, b) == pytest.approx(2 * 1 / (2 + 3))
    assert dice(a, a) == 1.0
    assert dice(np.zeros((2, 2)), np.zeros((2, 2))) == 1.0
    assert dice(a, np.zeros((4, 4))) == 0.0
    with pytest.raises(ValueError):
        dice(a, np.zeros((3, 3)))


def test_rrp_radius_tolerance():
    truth = np.zeros((100, 100), bool)
    truth[:10, :10] = True  # area 100
    close = np.zeros((100, 100), bool)
    close[:11, :11] = True  # area 121 -> radius ratio 1.1 exactly: not within (strict)
    near = np.zeros((100, 100), bool)
    near[:10, :11] = True  # ratio sqrt(1.1) = 1.049
    assert radius_within(near, truth)
    assert not radius_within(close, truth)
    summary = summarize([0.5, 1.0], [True, False])
    assert summary == {"n": 2, "dice_mean": 0.75, "dice_std": 0.25, "dice_min": 0.5, "dice_max": 1.0, "rrp": 50.0}
    assert summarize([], [])["n"] == 0


def test_largest_component_and_hole_filling():
    prob = np.zeros((50, 50), np.float32)
    prob[10:30, 10:30] = 0.9
    prob[18:22, 18:22] = 0.1  # a vessel hole inside the disc
    prob[40:43, 40:43] = 0.95  # a bright exudate elsewhere
    mask = postprocess_mask(prob)
    assert mask[20, 20] and not mask[41, 41]
    assert mask.sum() == 400
    assert not largest_component(np.zeros((5, 5), bool)).any()
    assert not fill_holes(np.zeros((5, 5), bool)).any()


def test_geometry_of_an_ellipse():
    import cv2

    mask = np.zeros((200, 300), np.uint8)
    cv2.ellipse(mask, (150, 100), (40, 60), 0, 0, 360, 1, -1)  # 80 wide, 120 tall
    geometry = disc_geometry(mask.astype(bool))
    assert geometry.area_px == int(mask.sum())
    assert geometry.equivalent_radius_px == pytest.approx(math.sqrt(mask.sum() / math.pi))
    assert geometry.centroid == pytest.approx((150, 100), abs=0.5)
    assert geometry.vertical_diameter_px == 121 and geometry.horizontal_diameter_px == 81
    assert geometry.bbox == (110, 40, 81, 121)
    assert geometry.ellipse.major_axis == pytest.approx(120, abs=2) and geometry.ellipse.minor_axis == pytest.approx(80, abs=2)
    empty = disc_geometry(np.zeros((10, 10), bool))
    assert empty.area_px == 0 and empty.centroid is None and empty.to_dict()["ellipse"] is None


def test_bounding_box_postprocessing_equals_whole_image_postprocessing():
    rng = np.random.default_rng(0)
    for _ in range(20):
        prob = np.zeros((300, 400), np.float32)
        for _ in range(rng.integers(1, 4)):
            y, x = rng.integers(0, 300), rng.integers(0, 400)
            prob[max(0, y - 40) : y + 40, max(0, x - 30) : x + 30] = rng.uniform(0.4, 1.0)
        prob[rng.random(prob.shape) < 0.02] = 0.0  # speckle holes
        whole = fill_holes(largest_component(prob >= 0.5))
        assert np.array_equal(postprocess_mask(prob), whole)
    assert not postprocess_mask(np.zeros((10, 10))).any()


def test_geometry_on_the_bounding_box_is_the_whole_images_exactly():
    """disc_geometry measures on the mask's bounding box (plus a pixel of background); the figures are
    those of the straightforward whole-image computation, for masks at the border, scattered, empty,
    of any dtype."""
    import cv2

    def whole_image(mask):
        mask = np.asarray(mask).squeeze().astype(bool)
        ys, xs = np.nonzero(mask)
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        contour = max(contours, key=cv2.contourArea)
        (cx, cy), (a, b), angle = cv2.fitEllipse(contour) if len(contour) >= 5 else ((0, 0), (0, 0), 0)
        return (int(mask.sum()), (float(xs.mean()), float(ys.mean())), (int(xs.min()), int(ys.min())),
                (float(cx), float(cy), float(max(a, b)), float(min(a, b)), float(angle)) if len(contour) >= 5 else None)

    rng = np.random.default_rng(0)
    for i in range(120):
        mask = np.zeros((300, 400), bool)
        cv2.ellipse(mask.view(np.uint8), (int(rng.integers(-30, 430)), int(rng.integers(-30, 330))),
                    (int(rng.integers(1, 120)), int(rng.integers(1, 120))), float(rng.uniform(0, 180)), 0, 360, 1, -1)
        if i % 5 == 0:
            mask[rng.random(mask.shape) < 0.002] = True
        if i % 7 == 0:
            mask[:, :2] = True
        if not mask.any():
            continue
        for form in (mask, mask.astype(np.uint8) * 255, mask[..., None], mask.astype(np.float32)):
            got = disc_geometry(form)
            area, centroid, corner, ellipse = whole_image(form)
            assert (got.area_px, got.centroid, got.bbox[:2]) == (area, centroid, corner)
            want = None if ellipse is None else ellipse
            have = None if got.ellipse is None else (got.ellipse.center_x, got.ellipse.center_y, got.ellipse.major_axis,
                                                     got.ellipse.minor_axis, got.ellipse.angle_deg)
            assert have == want
    assert disc_geometry(np.zeros((5, 5), bool)).area_px == 0
