"""Stage 2's training crops, on real DRISHTI-GS1 photos: the disc at the configured scale, the jitter stage 1's
errors produce, and the tight field of view of a camera that photographs only the nerve head."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from preprocessing.disc_crop import DiscCropConfig, disc_center_and_diameter
from preprocessing.photometric import PhotometricConfig
from preprocessing.transform import PreprocessConfig
from tests.helpers import DRISHTI, RIM_ONE
from training_job.config import CropJitter, FieldOfViewAugment, SegmentStageConfig, run_config_from_dict
from training_job.crop_data import CONTEXT, CropSampler, keep_field_of_view, load_crops

CROP = DiscCropConfig(multiple=1.75)


@pytest.fixture(scope="module")
def drishti():
    return load_crops(DRISHTI, "train", CROP)


def test_stored_crops_hold_the_expert_disc_at_the_context_scale(drishti):
    assert len(drishti) == 50 and drishti.images.dtype == np.uint8 and drishti.has_cup.all()
    context = drishti.images.shape[1]
    for masks in drishti.masks[:10]:
        cx, cy, diameter = disc_center_and_diameter(masks[..., 0])
        assert (cx, cy) == pytest.approx((context / 2, context / 2), abs=2)
        assert diameter == pytest.approx(context / (CROP.multiple * CONTEXT), rel=0.03)
        assert (masks[..., 1] <= masks[..., 0]).all()  # the cup inside the disc


def test_unjittered_samples_show_the_disc_size_over_multiple_across(drishti):
    sampler = CropSampler([drishti], CROP, PreprocessConfig(), CropJitter(scale=(1, 1), shift=0, rotation_deg=0),
                          PhotometricConfig.off(), seed=0)
    inputs, targets = sampler.batch(8)
    assert inputs.shape == (8, 128, 128, 3) and targets.shape == (8, 128, 128, 3)
    assert 0.0 <= inputs.min() and inputs.max() <= 1.0 and (targets[..., 2] == 1).all()  # cup annotated
    for target in targets:
        cx, cy, diameter = disc_center_and_diameter(target[..., 0])
        assert diameter == pytest.approx(128 / CROP.multiple, rel=0.03) and (cx, cy) == pytest.approx((64, 64), abs=2)


def test_jitter_moves_and_resizes_the_disc_within_its_ranges(drishti):
    jitter = CropJitter(scale=(0.8, 1.25), shift=0.25, rotation_deg=15)
    sampler = CropSampler([drishti], CROP, PreprocessConfig(), jitter, PhotometricConfig.off(), seed=1)
    _, targets = sampler.batch(32)
    found = [disc_center_and_diameter(t[..., 0]) for t in targets]
    sizes = np.array([d / (128 / CROP.multiple) for _, _, d in found])
    shifts = np.array([max(abs(x - 64), abs(y - 64)) / (128 / CROP.multiple) for x, y, _ in found])
    assert sizes.min() > 0.75 and sizes.max() < 1.3 and sizes.std() > 0.05  # the located diameter's error, inverted
    assert shifts.max() < 0.3 and shifts.mean() > 0.05


def test_field_of_view_blacks_out_all_but_a_square_around_the_disc(drishti):
    field = FieldOfViewAugment(p=1.0, side=(1.2, 1.2), offset=0.0)
    image = drishti.images[0]
    kept = keep_field_of_view(image, np.random.default_rng(0), CROP, field)
    visible = kept.any(axis=2)
    rows, cols = np.nonzero(visible)
    diameter = image.shape[0] / (CROP.multiple * CONTEXT)
    assert rows.max() - rows.min() + 1 == pytest.approx(1.2 * diameter, abs=2)
    assert cols.max() - cols.min() + 1 == pytest.approx(1.2 * diameter, abs=2)
    assert np.array_equal(kept[visible], image[visible])  # what it keeps is untouched
    disc = drishti.masks[0][..., 0] > 0.5
    assert visible[disc].mean() > 0.97  # the disc stays in view; only its surroundings go
    assert visible.mean() < 0.2


def test_field_of_view_is_drawn_with_its_probability(drishti):
    image = drishti.images[1]
    rng = np.random.default_rng(0)
    assert keep_field_of_view(image, rng, CROP, FieldOfViewAugment(p=0.0)) is image
    cut = [not np.array_equal(keep_field_of_view(image, rng, CROP, FieldOfViewAugment(p=0.5)), image) for _ in range(200)]
    assert 0.35 < np.mean(cut) < 0.65
    sides = []
    for _ in range(50):
        visible = keep_field_of_view(image, rng, CROP, FieldOfViewAugment(p=1.0, side=(1.05, 2.0))).any(axis=2)
        sides.append(math.sqrt(visible.sum()) / (image.shape[0] / (CROP.multiple * CONTEXT)))
    assert 1.0 < min(sides) and max(sides) < 2.05 and np.std(sides) > 0.1


def test_field_of_view_is_part_of_the_stage_two_config():
    run = run_config_from_dict({"segment": {"field_of_view": {"p": 0.5, "side": [1.1, 1.8]}}})
    assert run.segment.field_of_view == FieldOfViewAugment(p=0.5, side=(1.1, 1.8))
    with pytest.raises(ValueError):
        FieldOfViewAugment(p=1.5)


def test_mirrored_crops_match_the_black_ones_inside_the_photo_and_fill_the_rest():
    rim = load_crops(RIM_ONE, "test", CROP, mirror=True)
    visible = rim.images.any(axis=3)
    assert visible.mean() < 0.5  # a RIM-ONE DL photo is barely larger than its disc: most of the context is black
    difference = np.abs(rim.images.astype(int) - rim.mirrored.astype(int)).max(axis=3)
    assert np.median(difference[visible]) <= 2  # the same pixels where the photo is
    assert rim.mirrored.any(axis=3).mean() > 0.99  # and a photo everywhere else
    drishti = load_crops(DRISHTI, "test", CROP, mirror=True)
    same = (drishti.images == drishti.mirrored).all(axis=(1, 2, 3))
    assert same.mean() > 0.8  # a whole photo needs no mirroring, unless its disc is near the edge


def test_the_sampler_mirrors_with_its_probability():
    rim = load_crops(RIM_ONE, "test", CROP, mirror=True)
    still = CropJitter(scale=(1, 1), shift=0, rotation_deg=0, horizontal_flip=False)
    black = CropSampler([rim], CROP, PreprocessConfig(), still, PhotometricConfig.off(), seed=0)
    mirrored = CropSampler([rim], CROP, PreprocessConfig(), still, PhotometricConfig.off(), seed=0,
                           field_of_view=FieldOfViewAugment(p_mirror=1.0))
    dark = lambda sampler: np.mean([(sampler.sample()[0].max(axis=2) < 0.02).mean() for _ in range(20)])  # noqa: E731
    assert dark(black) > 0.2 and dark(mirrored) < 0.01


def test_the_job_chooses_from_the_training_photos_formats():
    """Extended edges and the locator's own second looks (on a view as wide as the training views) only when every
    training set is disc-filled photos; stage 2's wide jitter with 3 second looks only when every set is whole
    photos; stage 2's field of view when every set has one format; none of them when both formats are mixed; a
    value set in the config is kept."""
    from preprocessing.datasets import load_split
    from training_job.config import (
        EXTEND_EDGES,
        FIELD_OF_VIEW,
        LOCATOR_AUGMENT,
        LOCATOR_LOOKS,
        WIDE_JITTER,
        CropJitter,
        RunConfig,
    )
    from training_job.job import disc_shares, resolve_format_choices

    shares = disc_shares([load_split(DRISHTI, "train"), load_split(RIM_ONE, "train")])
    assert shares["drishti-gs1"] < 0.1 < 0.4 < shares["rim-one-dl"]
    whole, tight = {"drishti-gs1": shares["drishti-gs1"]}, {"rim-one-dl": shares["rim-one-dl"]}
    run = RunConfig(augment=LOCATOR_AUGMENT, segment=SegmentStageConfig())
    assert LOCATOR_AUGMENT.extend_edges is None and SegmentStageConfig().field_of_view is None  # left to the data
    only_tight = resolve_format_choices(run, tight)
    assert only_tight.augment.extend_edges == EXTEND_EDGES and only_tight.segment.field_of_view == FIELD_OF_VIEW
    assert only_tight.segment.jitter == CropJitter() and only_tight.segment.second_looks == 1
    assert only_tight.segment.locator_looks == LOCATOR_LOOKS
    assert 1.1 <= only_tight.segment.locator_view <= 1.3  # a RIM-ONE DL photo is ~1.15 disc diameters across
    only_whole = resolve_format_choices(run, whole)
    assert only_whole.augment.extend_edges == 0.0 and only_whole.segment.field_of_view == FIELD_OF_VIEW
    assert only_whole.segment.jitter == WIDE_JITTER and only_whole.segment.second_looks == 3
    assert only_whole.segment.locator_looks == 0
    assert 3.0 <= only_whole.segment.locator_view <= 5.0  # a cropped DRISHTI photo: ~4 disc diameters across
    mixed = resolve_format_choices(run, shares)
    assert mixed.augment.extend_edges == 0.0 and mixed.segment.field_of_view == FieldOfViewAugment()  # off
    assert mixed.segment.jitter == CropJitter() and mixed.segment.second_looks == 1
    assert mixed.segment.locator_looks == 0
    chosen = dataclasses.replace(run, augment=dataclasses.replace(LOCATOR_AUGMENT, extend_edges=0.3),
                                 segment=dataclasses.replace(run.segment, field_of_view=FieldOfViewAugment(p=0.2),
                                                             jitter=CropJitter(shift=0.1), second_looks=2,
                                                             locator_looks=1, locator_view=2.0))
    assert resolve_format_choices(chosen, tight) == chosen
    assert run_config_from_dict(run.to_dict()) == run  # None survives a round trip (a resumed job decides again)
