"""The two-stage pipeline's geometry and decisions, with stand-in models that see brightness.

The stand-ins make the expected answer known exactly: stage 1 "finds" the bright disc of a synthetic
fundus, stage 2 "segments" the bright disc on its crop and a brighter cup inside it. What is checked
is the pipeline around the models: the crop lands on the disc at the configured scale, the answer
returns on the original pixel grid, the second look recentres a crop that missed, the cup stays
inside the disc, and the confidence says when something is off.
"""
from __future__ import annotations

import dataclasses
import math

import cv2
import numpy as np
import pytest

from preprocessing.confidence import CHECKS, Limits, field_of_view
from preprocessing.disc_crop import DiscCropConfig, SquareBox, crop_resized, disc_center_and_diameter, restore_crop
from preprocessing.metrics import dice
from preprocessing.photometric import PhotometricConfig, photometric_augment
from preprocessing.transform import CropBox
from preprocessing.two_stage import Location, TwoStageConfig, read_location, segment_image
from tests.helpers import synthetic_fundus


def fundus_with_cup(height=600, width=800, center=(500, 280), radius=45, cup_radius=20):
    image, disc = synthetic_fundus(height, width, center, radius)
    cv2.circle(image, center, cup_radius, (255, 250, 235), -1)
    cup = np.zeros(disc.shape, np.uint8)
    cv2.circle(cup, center, cup_radius, 1, -1)
    return image, disc, cup.astype(bool)


def bright(batch: np.ndarray, level: float) -> np.ndarray:
    """A stand-in "model": probability 1 where the mean of the (equalised) channels is above `level`."""
    return (batch.mean(axis=-1, keepdims=True) > level).astype(np.float32)


def locate(batch):
    return bright(batch, 0.75)


def segment(batch):
    return np.concatenate([bright(batch, 0.75), bright(batch, 0.93)], axis=-1)


def test_crop_and_restore_are_inverse_on_the_original_grid():
    mask = np.zeros((300, 400), np.float32)
    cv2.circle(mask, (100, 150), 40, 1.0, -1)
    cx, cy, diameter = disc_center_and_diameter(mask)
    assert (cx, cy) == pytest.approx((100, 150), abs=0.1) and diameter == pytest.approx(80, rel=0.01)
    box = SquareBox.for_disc(300, 400, cx, cy, diameter, DiscCropConfig())
    assert box.side == round(2.5 * diameter)  # the configured multiple of the diameter
    crop = crop_resized(mask, box, 128)
    assert 2 * math.sqrt(crop.sum() / math.pi) == pytest.approx(128 / 2.5, rel=0.02)  # the disc is size/multiple across
    assert dice(restore_crop(crop, box) >= 0.5, mask >= 0.5) > 0.99


def test_a_square_past_the_image_is_black_outside_and_costs_no_more_than_the_image():
    image = np.full((50, 60, 3), 200, np.uint8)
    box = SquareBox.around(50, 60, 0.0, 0.0, 100_000)  # a "disc" whose square is 100,000 pixels wide
    crop = crop_resized(image, box, 128)
    assert crop.shape == (128, 128, 3) and crop[:60].max() == 0  # the image is a speck in the corner's quadrant
    restored = restore_crop(np.ones((128, 128, 2), np.float32), box)
    assert restored.shape == (50, 60, 2)
    assert crop_resized(image, SquareBox.around(50, 60, -500, -500, 10), 32).max() == 0  # misses it entirely


def test_the_pipeline_answers_disc_and_cup_on_the_original_grid():
    image, disc, cup = fundus_with_cup()
    answer = segment_image(image, locate, segment, TwoStageConfig())
    assert answer.disc.shape == disc.shape and dice(answer.disc, disc) > 0.95
    assert dice(answer.cup, cup) > 0.9 and not (answer.cup & ~answer.disc).any()  # the cup lies inside the disc
    assert answer.measurements.vcdr == pytest.approx(20 / 45, abs=0.05)
    cx, cy = answer.square.center
    assert (cx, cy) == pytest.approx((500, 280), abs=3)  # the crop is centred on the disc


def test_the_second_look_recentres_a_crop_that_missed():
    image, disc, _ = fundus_with_cup()

    def off_locator(batch):  # finds the disc, but half a diameter to the left of where it is
        return np.roll(locate(batch), -4, axis=2)

    answer = segment_image(image, off_locator, segment, TwoStageConfig())
    assert answer.second_look
    assert answer.square.center == pytest.approx((500, 280), abs=4)
    assert dice(answer.disc, disc) > 0.95
    assert "stages_disagree" not in answer.confidence.reasons  # 4 px at 128 is a third of a diameter: tolerated


def test_more_looks_walk_a_crop_cut_inside_the_disc_out_to_the_whole_disc():
    image, disc, _ = fundus_with_cup(radius=60, cup_radius=25)

    def speck(batch):  # stage 1 sees only a speck at the disc's centre: a crop far smaller than the disc
        out = np.zeros(batch.shape[:-1] + (1,), np.float32)
        for i, found in enumerate(locate(batch)):
            ys, xs = np.nonzero(found[..., 0])
            out[i, int(ys.mean()), int(xs.mean())] = 1.0
        return out

    once = segment_image(image, speck, segment, TwoStageConfig())
    more = segment_image(image, speck, segment, TwoStageConfig(second_looks=3))
    assert once.second_look and dice(once.disc, disc) < 0.8  # one look is not enough to grow out of it
    assert dice(more.disc, disc) > 0.95 and "cut_by_crop" not in more.confidence.reasons
    with pytest.raises(ValueError, match="second_looks"):
        TwoStageConfig(second_looks=9)


def test_a_known_disc_replaces_stage_one_for_measuring_stage_two_alone():
    image, disc, _ = fundus_with_cup()

    def lost(batch):  # a locator that sees nothing at all
        return np.zeros(batch.shape[:-1] + (1,), np.float32)

    assert dice(segment_image(image, lost, segment).disc, disc) < 0.5
    known = Location(500.0, 280.0, 90.0, peak=1.0, found=True)
    answer = segment_image(image, lost, segment, known_disc=known)
    assert answer.located == known and dice(answer.disc, disc) > 0.95


def test_no_disc_found_is_low_confidence_never_a_confident_disc():
    grey = np.full((400, 500, 3), 90, np.uint8)
    answer = segment_image(grey, lambda b: np.zeros(b.shape[:3] + (1,), np.float32),
                           lambda b: np.zeros(b.shape[:3] + (2,), np.float32), TwoStageConfig())
    assert answer.confidence.low and "no_disc_located" in answer.confidence.reasons
    assert "no_disc_segmented" in answer.confidence.reasons and answer.measurements is None
    assert not answer.disc.any()
    described = answer.confidence.to_dict()
    assert described["low"] is True and described["reasons"][0] == CHECKS["no_disc_located"][2]


def test_an_absurdly_large_disc_on_a_whole_fundus_photo_is_flagged():
    image, _, _ = fundus_with_cup(radius=45)
    huge = np.zeros(image.shape[:2], np.uint8)
    cv2.circle(huge, (400, 300), 200, 1, -1)  # a "disc" a third of the retina across

    fov = field_of_view(image)
    assert fov.full_field and fov.fundus_colour  # dark corners: a whole photo, not a crop
    from preprocessing.confidence import assess
    from preprocessing.two_stage import Location

    located = Location(400, 300, 400, 0.99, True)
    disc_map = np.zeros((128, 128), np.float32)
    cv2.circle(disc_map, (64, 64), 25, 1.0, -1)
    crop_probability = np.stack([disc_map, np.zeros_like(disc_map)], axis=-1)
    confidence = assess(located, 2 * math.sqrt(huge.sum() / math.pi), crop_probability, None, fov)
    assert "implausible_size" in confidence.reasons
    assert Limits().full_field_size[1] < 400 / fov.width_px


def test_a_photo_that_is_not_a_fundus_is_flagged_by_its_colour():
    rng = np.random.default_rng(0)
    sky = np.zeros((300, 400, 3), np.uint8)
    sky[..., 2] = 200  # blue
    sky[..., 1] = np.linspace(60, 180, 400, dtype=np.uint8)[None, :]
    sky = np.clip(sky + rng.integers(0, 20, sky.shape), 0, 255).astype(np.uint8)
    answer = segment_image(sky, locate, segment, TwoStageConfig())
    assert "not_fundus_colour" in answer.confidence.reasons and answer.confidence.score < 1.0


def test_stage_one_location_maps_back_through_the_border_crop():
    box = CropBox.for_shape(1000, 2000, 0.10)
    disc_map = np.zeros((128, 128), np.float32)
    cv2.circle(disc_map, (96, 32), 8, 1.0, -1)
    probability = disc_map[..., None]
    location = read_location(probability, box)
    scale_x, scale_y = (box.x1 - box.x0) / 128, (box.y1 - box.y0) / 128
    assert location.center_x == pytest.approx(box.x0 + 96.5 * scale_x, abs=scale_x)
    assert location.center_y == pytest.approx(box.y0 + 32.5 * scale_y, abs=scale_y)
    assert location.found and location.candidates == 1
    assert location.diameter == pytest.approx(2 * math.sqrt((probability > 0.5).sum() * scale_x * scale_y / math.pi), rel=1e-6)


def test_photometric_augmentation_is_seeded_and_can_be_turned_off():
    image, _ = synthetic_fundus()
    first = photometric_augment(image, np.random.default_rng(3))
    assert np.array_equal(first, photometric_augment(image, np.random.default_rng(3)))
    assert not np.array_equal(first, image) and first.dtype == np.uint8 and first.shape == image.shape
    assert np.array_equal(photometric_augment(image, np.random.default_rng(3), PhotometricConfig.off()), image)


def test_grayscale_and_saturation_change_the_chroma_only():
    image, _ = synthetic_fundus()
    only = lambda **on: dataclasses.replace(PhotometricConfig.off(), **on)  # noqa: E731
    grey = photometric_augment(image, np.random.default_rng(0), only(p_grayscale=1.0)).astype(int)
    assert np.abs(grey - grey.mean(axis=2, keepdims=True)).max() <= 1  # no colour left
    assert abs(grey.mean() - image.mean()) < 1.0  # the same brightness
    paler = photometric_augment(image, np.random.default_rng(0), only(p_saturation=1.0, saturation=(0.5, 0.5))).astype(int)
    chroma = lambda x: np.abs(x - x.mean(axis=2, keepdims=True)).mean()  # noqa: E731
    assert chroma(paler) == pytest.approx(0.5 * chroma(image.astype(int)), rel=0.05)


def test_the_pipelines_masks_are_measured_as_given_with_the_same_figures():
    from preprocessing.measurements import measure

    image, _, _ = fundus_with_cup()
    answer = segment_image(image, locate, segment, TwoStageConfig(), "R")
    assert measure(answer.disc, answer.cup, "R") == answer.measurements  # cleaning them again changes nothing


def test_the_locator_looks_again_at_the_disc_at_the_scale_it_was_trained_on():
    """A stand-in for a locator trained on disc-filled photos only: on a whole photo (the disc a small share of its
    view) it marks a blob ~1.8x the disc's diameter; where the disc fills its view, the disc itself."""
    image, disc, _ = fundus_with_cup(radius=45)
    *_, true_diameter = disc_center_and_diameter(disc)
    calls = []

    def disc_filled_locator(batch):
        calls.append(len(batch))
        found = locate(batch)
        out = []
        for view in found:
            if view.mean() < 0.2:  # a whole photo: the disc it has never seen this small comes out too large
                view = cv2.dilate(view[..., 0], np.ones((13, 13), np.uint8))[..., None]
            out.append(view)
        return np.stack(out)

    once = segment_image(image, disc_filled_locator, segment, TwoStageConfig(second_looks=0))
    assert once.located.diameter / true_diameter > 1.5 and len(calls) == 1
    calls.clear()
    config = TwoStageConfig(second_looks=0, locator_looks=2, locator_view=1.5)
    again = segment_image(image, disc_filled_locator, segment, config)
    assert again.located.diameter / true_diameter == pytest.approx(1.0, abs=0.1) and len(calls) == 3
    assert again.located.center_x == pytest.approx(500, abs=3) and again.located.center_y == pytest.approx(280, abs=3)
    assert dice(again.disc, disc) > dice(once.disc, disc) and dice(again.disc, disc) > 0.95

    calls.clear()
    nothing = segment_image(image, lambda batch: (calls.append(len(batch)), np.zeros(batch.shape[:-1] + (1,),
                                                                                      np.float32))[1], segment, config)
    assert not nothing.located.found and len(calls) == 1  # nothing found: no second look at a guess
    assert "no_disc_located" in nothing.confidence.reasons and nothing.confidence.low
    for wrong in ({"locator_looks": 5}, {"locator_looks": 1.0}, {"locator_view": 0.5}, {"locator_view": 20}):
        with pytest.raises(ValueError, match=next(iter(wrong))):
            TwoStageConfig(**wrong)
