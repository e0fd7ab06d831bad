"""A training run as small typed objects, loadable from flags or a YAML/JSON file (a ConfigMap).

`RunConfig` describes the model and how it is trained; `JobOptions` (the file's `job:` section)
how this run relates to earlier versions and where it runs. Flags override the file.
"""
from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fundus_seg.errors import FundusSegError
from preprocessing.augment import AugmentConfig
from preprocessing.disc_crop import DiscCropConfig
from preprocessing.photometric import PhotometricConfig
from preprocessing.transform import PreprocessConfig
from preprocessing.two_stage import TwoStageConfig, check_locator_view, check_second_looks
from serving.rollout import DEFAULT_TOLERANCE


@dataclass(frozen=True)
class UNetConfig:
    depth: int = 6
    width: int = 40
    increment_ratio: float = 1.1
    batchnorm: bool = True
    upsampling: bool = False
    """False: transposed convolution (the paper's choice, TPU-friendly); True: bilinear up-sampling + 1x1 conv."""
    dropout: float = 0.0
    input_size: int = 128

    def __post_init__(self) -> None:
        if self.depth < 0 or self.width < 1 or self.increment_ratio <= 0 or not 0 <= self.dropout < 1:
            raise ValueError(f"invalid U-Net configuration: {self}")
        if self.input_size % (2**self.depth):
            raise ValueError(f"input size {self.input_size} is not divisible by 2**depth = {2**self.depth}")

    @property
    def name(self) -> str:
        return f"{self.depth}/{self.width}/{self.increment_ratio:g}"

    def width_at(self, level: int) -> int:
        return max(1, int(round(self.width * self.increment_ratio**level)))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 15
    steps_per_epoch: int = 100
    batch_size: int = 16
    learning_rate: float = 8e-4
    schedule: str = "cosine"
    """"cosine": decay to 5% of the rate over the run (converges in fewer steps); "constant": the paper's."""
    loss: str = "bce_dice"
    """"bce_dice" (binary cross-entropy + soft Dice) or "dice"."""
    seed: int = 0
    jit_compile: bool = True
    """XLA-fuse each training step: +25-35% images/s on CPU (BN + ReLU + conv fuse), also on GPU."""

    def __post_init__(self) -> None:
        # Zero of any of these trains nothing, and the untrained model would still be scored and published.
        for name in ("epochs", "steps_per_epoch", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")


@dataclass(frozen=True)
class CropJitter:
    """How far stage 1's located disc may be from the expert's, drawn afresh for every stage-2 training crop."""

    scale: tuple[float, float] = (0.8, 1.25)
    """Diameter error factor, log-uniform (the crop side follows the located diameter)."""
    shift: float = 0.25
    """Centre error, in disc diameters, uniform in each axis."""
    rotation_deg: float = 15.0
    horizontal_flip: bool = True


@dataclass(frozen=True)
class FieldOfViewAugment:
    """Some instruments deliver only a tight square around the nerve head (a RIM-ONE DL image is ~1.15 disc diameters
    across), so stage 2's crop is black beyond it; a model trained on whole photos has never seen that edge. With
    probability `p` a training crop keeps only such a square around the expert disc, side drawn in `side`."""

    p: float = 0.0
    side: tuple[float, float] = (1.05, 2.0)
    """Side of the visible square, in disc diameters, log-uniform."""
    offset: float = 0.1
    """Its centre's offset from the disc's, in disc diameters, uniform in each axis."""
    p_mirror: float = 0.0
    """The converse, for a model trained on such tight crops: this share of crops shows the photo mirrored beyond its
    edges instead of black, so "the disc is what the photo shows" stops being a cue that a whole photo breaks."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.p <= 1.0 or not 0.0 <= self.p_mirror <= 1.0 or not 0.5 <= self.side[0] <= self.side[1]:
            raise ValueError(f"invalid field of view augmentation: {self}")


@dataclass(frozen=True)
class SegmentStageConfig:
    """Stage 2 of the two-stage model: disc and cup on a crop around the located disc (same U-Net builder)."""

    model: UNetConfig = field(default_factory=lambda: UNetConfig(depth=6, width=16, increment_ratio=1.4, input_size=128))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, steps_per_epoch=200, batch_size=16,
                                                                   learning_rate=1e-3, seed=0))
    crop: DiscCropConfig = field(default_factory=lambda: DiscCropConfig(multiple=1.75))
    """1.75 disc diameters: better than 2.5 on every set, the cup most, with a camera left out (docs/RESULTS.md,
    "What each stage-2 augmentation buys"); versions record theirs in the card."""
    jitter: CropJitter | None = None
    """None: the job chooses from its data (`training_job.job.resolve_format_choices`): WIDE_JITTER when every
    training set is whole photos, else CropJitter(). Trained on whole photos alone, the locator sizes a disc-filled
    camera's discs far off, and a stage 2 that has seen crops mis-sized x0.5-2 tells the second look where the disc
    really is (drishti-gs1 -> rim-one-dl 0.830 -> 0.884 with `second_looks` 3; docs/RESULTS.md, "A stage 2 that
    knows when the crop is wrong"). A disc-filled photo has no context for such crops (0.416 -> 0.303)."""
    photometric: PhotometricConfig = field(default_factory=PhotometricConfig)
    field_of_view: FieldOfViewAugment | None = None
    """None: the training job chooses from its data (`training_job.job.resolve_format_choices`): on
    (FIELD_OF_VIEW) when every training set has one photo format, off when whole photos and disc-filled ones are
    mixed. Trained on one instrument, stage 2 took the photo's edge for the disc's (from the expert crop across
    instruments 0.617 -> 0.893 and 0.478 -> 0.935 with it); beside both formats it cost an unseen camera 0.927 -> 0.907
    (docs/RESULTS.md, "The photo's edge is not the disc's")."""
    second_looks: int | None = None
    """Serving's pipeline setting, written to the card (`preprocessing.two_stage.TwoStageConfig.second_looks`);
    None: the job chooses (3 with WIDE_JITTER, else 1)."""
    locator_looks: int | None = None
    """Stage 1's own second looks, written to the card (`TwoStageConfig.locator_looks`); None: the job chooses
    (LOCATOR_LOOKS when every training set is disc-filled photos: rim-one-dl -> drishti-gs1 0.416 -> 0.820 on the
    selection split, else 0)."""
    locator_view: float | None = None
    """Their side in located disc diameters (`TwoStageConfig.locator_view`); None: the job's training views' width in
    disc diameters."""

    cup_weight: float = 1.0
    """The cup's weight in stage 2's loss against the disc's (`training_job.losses.disc_cup_loss`)."""

    def __post_init__(self) -> None:
        if self.cup_weight <= 0:
            raise ValueError(f"cup_weight must be positive, got {self.cup_weight}")
        if self.second_looks is not None:
            check_second_looks(self.second_looks)
        if self.locator_looks is not None:
            check_second_looks(self.locator_looks, "locator_looks")
        if self.locator_view is not None:
            check_locator_view(self.locator_view)
        if self.model.input_size != self.crop.size:
            raise ValueError(f"stage 2's U-Net input ({self.model.input_size}) must be the crop size ({self.crop.size})")

    def pipeline(self, preprocess: PreprocessConfig) -> TwoStageConfig:
        """The serving pipeline's settings this stage 2 is scored with before publishing (the card's
        `ModelCard.two_stage()` once published); call after the job resolved what was left at None."""
        return TwoStageConfig(preprocess, self.crop, second_looks=self.second_looks, locator_looks=self.locator_looks,
                              locator_view=self.locator_view)


MODES = ("full", "incremental")
ACCELERATORS = ("auto", "cpu", "gpu", "tpu")
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,199}")
INCREMENTAL_EPOCHS = 3
"""The paper's brief retrain on a new instrument's data, unless epochs are set explicitly."""


@dataclass(frozen=True)
class JobOptions:
    """How this run relates to earlier ones and where it runs (the model itself is described by RunConfig)."""

    mode: str = "full"
    """"full" trains from scratch; "incremental" starts from `base_version`'s weights."""
    base_version: int | str | None = None
    """A version number or "latest" (incremental only; a full run ignores it)."""
    replay_fraction: float = 0.0
    """Incremental only: this share of every training batch comes from the base version's earlier datasets."""
    eval_data: tuple[str, ...] = ()
    """Extra datasets whose test split is scored (e.g. the other instrument)."""
    run_id: str | None = None
    """Stable across restarts of one Job: resumes its checkpoint, never publishes twice. None: a one-off run."""
    checkpoint_dir: str | None = None
    """Folder or URI; checkpoints go to `<checkpoint_dir>/<run_id>/`. None: `<model_repo>/.checkpoints/<model_name>`."""
    cache_dir: str | None = None
    """Where dataset URIs are downloaded once. None: `$XDG_CACHE_HOME/fundus-seg/datasets` (~/.cache/...)."""
    accelerator: str = "auto"
    """"cpu", "gpu" (MirroredStrategy), "tpu" (TPUStrategy) or "auto" (gpu when one is visible)."""
    tolerance: float = DEFAULT_TOLERANCE
    """Publishing gate: the largest drop of dice_mean (x100 for rrp) below the latest version on a shared dataset."""
    force: bool = False
    """Publish even when the gate fails; metrics.json then records `"forced": true`."""
    extra_metrics: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.accelerator not in ACCELERATORS:
            raise ValueError(f"accelerator must be one of {', '.join(ACCELERATORS)}, got {self.accelerator!r}")
        if not 0.0 <= self.replay_fraction < 1.0:
            raise ValueError(f"replay fraction must be in [0, 1), got {self.replay_fraction}")
        if not self.tolerance >= 0.0:
            raise ValueError(f"tolerance must be >= 0, got {self.tolerance}")
        if self.run_id is not None and not RUN_ID.fullmatch(self.run_id):
            raise ValueError(f"run id must be letters, digits, '.', '_' or '-' (it names a folder), got {self.run_id!r}")
        base = self.base_version
        if isinstance(base, str) and base.strip().isdecimal():
            object.__setattr__(self, "base_version", base := int(base))
        if base is not None and base != "latest" and not (isinstance(base, int) and base >= 1):
            raise ValueError(f"base version must be a version number or 'latest', got {base!r}")


@dataclass(frozen=True)
class RunConfig:
    data: tuple[str, ...] = ()
    """Dataset folders or URIs; their `train` split is mixed with replication."""
    model_repo: str = "runs/models"
    model_name: str = "optic-disc"
    model: UNetConfig = field(default_factory=UNetConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    segment: SegmentStageConfig | None = None
    """Stage 2 of the two-stage model (`pipeline: two-stage`); None trains the paper's single-stage model.
    `model`/`train`/`augment` then describe stage 1, the locator."""

    @property
    def pipeline(self) -> str:
        return "two-stage" if self.segment is not None else "single-stage"

    def to_dict(self) -> dict[str, Any]:
        document = dataclasses.asdict(self)
        if self.segment is None:
            document.pop("segment")
        return document


PIPELINES = ("two-stage", "single-stage")
LOCATOR_AUGMENT = AugmentConfig(zoom_range=(0.33, 4.0), shift_fraction=0.2, zoom_on_disc=0.5, extend_edges=None)
"""Stage 1 of a two-stage model meets discs filling 5% (a whole photo) to 90% (a camera that photographs the disc
region only, RIM-ONE r3) of its view: zoom wide, half the zoom-ins about the disc so a large one stays in view.
Extended edges only where every training set is such disc-filled photos (the job decides: trained on rim-one-dl
alone they lifted drishti-gs1 0.126 -> 0.558; beside whole photos they cost an unseen camera 0.813 -> 0.714,
docs/RESULTS.md, "The photo's edge is not the disc's")."""
FIELD_OF_VIEW = FieldOfViewAugment(p=0.5, p_mirror=0.5)
"""Stage 2's `field_of_view` when the job finds one photo format only."""
EXTEND_EDGES = 0.5
"""`extend_edges` when the job finds only disc-filled training photos."""
WIDE_JITTER = CropJitter(scale=(0.5, 2.0))
"""Stage 2's crop jitter when the job finds only whole photos (their context holds crops this far off)."""
WIDE_JITTER_SECOND_LOOKS = 3
LOCATOR_LOOKS = 2
"""Stage 1's second looks when the job finds only disc-filled photos (2 and 4 looks scored alike: 0.820, 0.827)."""
TIGHT_DISC_SHARE = 0.25
"""A training set whose median disc covers more than this share of stage 1's view photographs the disc region only
(RIM-ONE DL: ~0.6; a whole DRISHTI photo: ~0.05)."""


def two_stage(run: RunConfig, segment: SegmentStageConfig | None = None) -> RunConfig:
    """`run` as a two-stage run: stage 2 added, stage 1's zoom augmentation widened (unless set otherwise)."""
    augment = LOCATOR_AUGMENT if run.augment == AugmentConfig() else run.augment
    return dataclasses.replace(run, segment=segment or SegmentStageConfig(), augment=augment)


def _build(cls, values: dict[str, Any], where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise FundusSegError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    kwargs = {}
    nested = {RunConfig: {"model": UNetConfig, "train": TrainConfig, "preprocess": PreprocessConfig,
                          "augment": AugmentConfig, "segment": SegmentStageConfig},
              SegmentStageConfig: {"model": UNetConfig, "train": TrainConfig, "crop": DiscCropConfig,
                                   "jitter": CropJitter, "photometric": PhotometricConfig,
                                   "field_of_view": FieldOfViewAugment}}.get(cls, {})
    for name, value in values.items():
        if name in nested:
            if name in ("segment", "field_of_view", "jitter") and value is None:  # None: no stage 2 / chosen by the job
                kwargs[name] = None
                continue
            kwargs[name] = _build(nested[name], value or {}, f"{where}.{name}")
        elif isinstance(value, list):
            kwargs[name] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            kwargs[name] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        raise FundusSegError(f"{where}: {exc}") from None


def run_config_from_dict(values: dict[str, Any]) -> RunConfig:
    return _build(RunConfig, values, "config")


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The raw settings of a YAML or JSON file: `RunConfig.to_dict()`'s shape plus a `job:` section."""
    try:
        text = Path(path).read_text()
        values = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise FundusSegError(f"{path}: cannot read the configuration: {exc}") from None
    if values is not None and not isinstance(values, dict):
        raise FundusSegError(f"{path}: expected a mapping of settings, got {type(values).__name__}")
    return values or {}


def configs_from_dict(values: dict[str, Any]) -> tuple[RunConfig, JobOptions]:
    values = dict(values)
    job = _build(JobOptions, values.pop("job", None) or {}, "config.job")
    return run_config_from_dict(values), job


def with_overrides(config: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """Apply flag values (None = not given) on top of a config, section by section."""
    updated = config
    for section, values in sections.items():
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            continue
        try:
            if section == "run":
                updated = dataclasses.replace(updated, **values)
            else:
                updated = dataclasses.replace(updated, **{section: dataclasses.replace(getattr(updated, section), **values)})
        except ValueError as exc:
            raise FundusSegError(f"{section}: {exc}") from None
    return updated
