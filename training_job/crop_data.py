"""Stage 2's training data: disc-centred crops with the jitter stage 1 will really produce.

Every training image is cut once around its EXPERT disc (the same `SquareBox.for_disc` rule serving
applies to the located disc) with extra context, and kept as uint8. Each step then draws a fresh
crop from it: the centre shifted and the side scaled as stage 1's errors would, rotated and
flipped, then the instrument augmentation (`preprocessing.photometric`) and the shared contrast
step. The model therefore sees, in training, exactly what serving feeds it from a located disc.

Datasets are mixed as the paper mixes them (each drawn equally often, whatever its size).
"""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from preprocessing.datasets import Record, read_manifest
from preprocessing.decode import decode_image, decode_mask
from preprocessing.disc_crop import DiscCropConfig, SquareBox, crop_resized, disc_center_and_diameter
from preprocessing.errors import DatasetError
from preprocessing.photometric import PhotometricConfig, photometric_augment
from preprocessing.transform import PreprocessConfig, equalise
from training_job.config import CropJitter, FieldOfViewAugment

CONTEXT = 1.75
"""Each stored crop is this much larger than the model's view, so shifts, zoom-outs and rotations stay on real pixels."""


@dataclass
class CropSamples:
    """One dataset split's crops around the expert disc, at CONTEXT x the model's view."""

    name: str
    images: np.ndarray  # N x C x C x 3 uint8, black beyond the photo's edges (as serving cuts them)
    mirrored: np.ndarray  # the same crops with the photo mirrored beyond its edges (FieldOfViewAugment.p_mirror; else images)
    masks: np.ndarray  # N x C x C x 2 float32: disc, cup (cup inside disc; 0 where unannotated)
    has_cup: np.ndarray  # N bool
    records: list[Record]

    def __len__(self) -> int:
        return len(self.records)


def context_size(crop: DiscCropConfig) -> int:
    return int(math.ceil(crop.size * CONTEXT / 2)) * 2


def mirrored_square(image: np.ndarray, box: SquareBox, size: int) -> np.ndarray:
    """The square resized to size x size with the photo mirrored, not black, beyond its edges (area-averaged first,
    so a photo shrunk 10x does not alias)."""
    scale = size / box.side
    height, width = image.shape[:2]
    small = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)
    sx, sy = small.shape[1] / width, small.shape[0] / height
    matrix = np.array([[1.0, 0.0, box.x0 * sx], [0.0, 1.0, box.y0 * sy]])
    return cv2.warpAffine(small, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REFLECT_101)


def _load(record: Record, crop: DiscCropConfig, mirror: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    image = decode_image(record.image.read_bytes())
    disc = decode_mask(record.disc_mask.read_bytes())
    cup = decode_mask(record.cup_mask.read_bytes()) & disc if record.cup_mask is not None else np.zeros_like(disc)
    located = disc_center_and_diameter(disc)
    if located is None:
        raise DatasetError(f"id {record.id}: disc mask is empty")
    cx, cy, diameter = located
    size = context_size(crop)
    box = SquareBox.around(disc.shape[0], disc.shape[1], cx, cy, diameter * crop.multiple * CONTEXT)
    masks = np.stack([disc, cup], axis=-1).astype(np.float32)
    inside = box.inside == (box.x0, box.y0, box.x0 + box.side, box.y0 + box.side)
    black = crop_resized(image, box, size)
    return (black, mirrored_square(image, box, size) if mirror and not inside else black, crop_resized(masks, box, size),
            record.cup_mask is not None)


def load_crops(folder: str | Path, split: str | None, crop: DiscCropConfig = DiscCropConfig(),
               mirror: bool = False) -> CropSamples:
    """`mirror`: also cut the mirrored crops (FieldOfViewAugment.p_mirror); without it `mirrored` is `images`."""
    folder = Path(folder)
    records = [r for r in read_manifest(folder) if split is None or r.split == split]
    if not records:
        raise DatasetError(f"{folder}: no rows with split {split!r}")
    with ThreadPoolExecutor(max_workers=4) as pool:
        loaded = list(pool.map(lambda r: _load(r, crop, mirror), records))
    images = np.stack([x[0] for x in loaded])
    mirrored = np.stack([x[1] for x in loaded]) if mirror else images
    return CropSamples(folder.name, images, mirrored, np.stack([x[2] for x in loaded]),
                       np.array([x[3] for x in loaded]), records)


def jitter_matrix(rng: np.random.Generator, context: int, size: int, crop: DiscCropConfig, jitter: CropJitter) -> np.ndarray:
    """2 x 3 affine map from output pixel indices to context-crop pixel indices (cv2's WARP_INVERSE_MAP)."""
    scale = math.exp(rng.uniform(math.log(jitter.scale[0]), math.log(jitter.scale[1])))
    theta = math.radians(rng.uniform(-jitter.rotation_deg, jitter.rotation_deg))
    flip = -1.0 if jitter.horizontal_flip and rng.random() < 0.5 else 1.0
    diameter = size / crop.multiple  # the disc's diameter in output pixels, before the scale error
    shift = rng.uniform(-jitter.shift, jitter.shift, size=2) * diameter
    linear = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]]) / scale
    linear = linear @ np.diag([flip, 1.0])
    out_center, in_center = size / 2.0, context / 2.0
    offset = in_center + shift - 0.5 - linear @ np.array([out_center - 0.5, out_center - 0.5])
    return np.hstack([linear, offset[:, None]])


def keep_field_of_view(image: np.ndarray, rng: np.random.Generator, crop: DiscCropConfig, field: FieldOfViewAugment) -> np.ndarray:
    """A context crop (centred on the expert disc) with everything outside a random square around the disc black, as
    an instrument that photographs only the nerve head delivers it; the masks are untouched (the disc stays inside)."""
    if not (field.p > 0 and rng.random() < field.p):
        return image
    context = image.shape[0]
    diameter = context / (crop.multiple * CONTEXT)
    half = diameter * math.exp(rng.uniform(math.log(field.side[0]), math.log(field.side[1]))) / 2
    cx, cy = context / 2 + rng.uniform(-field.offset, field.offset, size=2) * diameter
    x0, x1 = max(0, int(round(cx - half))), min(context, int(round(cx + half)))
    y0, y1 = max(0, int(round(cy - half))), min(context, int(round(cy + half)))
    kept = np.zeros_like(image)
    kept[y0:y1, x0:x1] = image[y0:y1, x0:x1]
    return kept


class CropSampler:
    """Draws augmented (input, target) pairs; thread-safe per instance only if used from one thread."""

    def __init__(self, datasets: list[CropSamples], crop: DiscCropConfig, preprocess: PreprocessConfig,
                 jitter: CropJitter = CropJitter(), photometric: PhotometricConfig = PhotometricConfig(), seed: int = 0,
                 replay: list[CropSamples] = (), replay_fraction: float = 0.0, field_of_view: FieldOfViewAugment = FieldOfViewAugment()):
        """`replay` (incremental runs): earlier datasets, drawn for `replay_fraction` of the samples."""
        if not datasets or not all(len(d) for d in datasets):
            raise DatasetError("no training data")
        self.datasets, self.crop, self.preprocess = datasets, crop, preprocess
        self.jitter, self.photometric, self.field_of_view = jitter, photometric, field_of_view
        self.replay = [d for d in replay if len(d)]
        self.replay_fraction = replay_fraction if self.replay else 0.0
        self.rng = np.random.default_rng(seed)

    def sample(self) -> tuple[np.ndarray, np.ndarray, float]:
        pool = self.replay if self.replay_fraction and self.rng.random() < self.replay_fraction else self.datasets
        data = pool[int(self.rng.integers(len(pool)))]
        index = int(self.rng.integers(len(data)))
        size, context = self.crop.size, data.images.shape[1]
        matrix = jitter_matrix(self.rng, context, size, self.crop, self.jitter)
        warp = lambda a: cv2.warpAffine(a, matrix, (size, size), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,  # noqa: E731
                                        borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        field = self.field_of_view
        mirror = field.p_mirror > 0 and self.rng.random() < field.p_mirror
        image = keep_field_of_view((data.mirrored if mirror else data.images)[index], self.rng, self.crop, field)
        image = photometric_augment(warp(image), self.rng, self.photometric)
        return equalise(image, self.preprocess), warp(data.masks[index]), float(data.has_cup[index])

    def batch(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Inputs N x S x S x 3, targets N x S x S x 3: disc, cup, and a cup-annotated flag plane (the loss skips
        the cup where a dataset has no cup masks)."""
        drawn = [self.sample() for _ in range(n)]
        size = self.crop.size
        targets = np.concatenate([np.stack([d[1] for d in drawn]),
                                  np.broadcast_to(np.array([d[2] for d in drawn], np.float32)[:, None, None, None],
                                                  (n, size, size, 1))], axis=-1)
        return np.stack([d[0] for d in drawn]), np.ascontiguousarray(targets, np.float32)


def crop_pipeline(sampler_factory, batch_size: int, workers: int = 2):
    """A tf.data pipeline of augmented batches drawn by `workers` independent samplers (OpenCV releases the GIL)."""
    import tensorflow as tf

    size = sampler_factory(0).crop.size
    signature = (tf.TensorSpec([batch_size, size, size, 3], tf.float32), tf.TensorSpec([batch_size, size, size, 3], tf.float32))

    def generator(worker):
        sampler = sampler_factory(int(worker))
        while True:
            yield sampler.batch(batch_size)

    return (tf.data.Dataset.range(workers)
            .interleave(lambda w: tf.data.Dataset.from_generator(generator, output_signature=signature, args=(w,)),
                        cycle_length=workers, num_parallel_calls=workers, deterministic=False)
            .prefetch(4))
