"""The model card: what a published version is, typed; its one wire form is the version's metrics.json.

Written once, at publish, and carried twice (`fundus_seg.model_repository` owns both places): as
`metrics.json` next to the SavedModel (for training, evaluation, rollout gating and the report,
which read the repository) and inside the SavedModel as the `model_card` signature (for the
transformer, which in the cluster can reach a version only through TF Serving). Whoever serves a version therefore prepares its input with the
preprocessing it was trained with, the way nnU-Net ships its plans with the model.

Readers take a `ModelCard`, never the JSON by key. Unknown keys are kept (`extra`), so a card
written by a newer release survives a round trip through an older one.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from preprocessing.disc_crop import DiscCropConfig
from preprocessing.transform import PreprocessConfig
from preprocessing.two_stage import check_locator_view, check_second_looks

if TYPE_CHECKING:
    from training_job.config import TrainConfig, UNetConfig

DEFAULT_THRESHOLD = 0.5
INPUT_DTYPES = ("uint8", "float32")  # a version's `images` dtype (fundus_seg.model_repository); new versions: the first


class ModelCardError(ValueError):
    """A card that cannot be read: not JSON, not an object, or a field of the wrong kind."""


@dataclass(frozen=True)
class Scores:
    """One dataset's test-split figures at the original resolution (and, when recorded, at 128 px).
    A figure that was not recorded, or not as a number, is None: the gates treat it as missing."""

    n: int | None = None
    dice_mean: float | None = None
    dice_std: float | None = None
    dice_min: float | None = None
    dice_max: float | None = None
    rrp: float | None = None
    at_128: Scores | None = None
    more: dict[str, Any] = field(default_factory=dict, compare=False)
    """The rest of the dataset's evaluation as written (cup, vcdr, glaucoma_auc, flagged ...)."""

    @classmethod
    def from_dict(cls, document: Any) -> Scores:
        if not isinstance(document, dict):
            return cls()
        own = [f.name for f in dataclasses.fields(cls) if f.name not in ("at_128", "more")]
        values = {name: _maybe_number(document.get(name)) for name in own}
        values["n"] = None if values["n"] is None else int(values["n"])
        at_128 = document.get("at_128")
        more = {k: v for k, v in document.items() if k not in own and k != "at_128"}
        return cls(**values, at_128=cls.from_dict(at_128) if isinstance(at_128, dict) else None, more=more)

    def value(self, metric: str) -> float | None:
        """A gated figure, None when missing or NaN."""
        number = getattr(self, metric)
        return None if number is None or math.isnan(number) else number

    def to_dict(self) -> dict:
        document = {**self.more, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                                    if f.name not in ("at_128", "more") and getattr(self, f.name) is not None}}
        if self.at_128 is not None:
            document["at_128"] = self.at_128.to_dict()
        return document


@dataclass(frozen=True)
class SegmentCard:
    """Stage 2 of a two-stage version (`preprocessing.two_stage`): disc and cup on a crop around the located disc.
    Written under the card's ``config.segment``; a card without it is the paper's single-stage model."""

    architecture: UNetConfig
    crop: DiscCropConfig = field(default_factory=DiscCropConfig)
    cup_threshold: float = DEFAULT_THRESHOLD
    convex: bool = True
    second_looks: int = 1  # preprocessing.two_stage.TwoStageConfig.second_looks
    locator_looks: int = 0  # TwoStageConfig.locator_looks: versions before it had none
    locator_view: float = 1.5  # TwoStageConfig.locator_view

    @classmethod
    def from_dict(cls, document: dict) -> SegmentCard:
        from training_job.config import UNetConfig

        card = cls(
            architecture=UNetConfig(**_known(UNetConfig, document.get("model") or {})),
            crop=DiscCropConfig(**_known(DiscCropConfig, document.get("crop") or {})),
            cup_threshold=_number(document.get("cup_threshold", DEFAULT_THRESHOLD), "segment.cup_threshold"),
            convex=bool(document.get("convex", True)),
            second_looks=_given(document, "second_looks", 1),  # null: a run config the job had yet to resolve
            locator_looks=_given(document, "locator_looks", 0),
            locator_view=_given(document, "locator_view", 1.5),
        )
        if not 0.0 < card.cup_threshold < 1.0:
            raise ModelCardError(f"segment.cup_threshold must be in (0, 1), got {card.cup_threshold}")
        try:
            check_second_looks(card.second_looks)
            check_second_looks(card.locator_looks, "locator_looks")
            check_locator_view(card.locator_view)
        except ValueError as exc:
            raise ModelCardError(f"segment.{exc}") from None
        return card

    def to_dict(self) -> dict:
        return {"model": dataclasses.asdict(self.architecture), "crop": dataclasses.asdict(self.crop),
                "cup_threshold": self.cup_threshold, "convex": self.convex, "second_looks": self.second_looks,
                "locator_looks": self.locator_looks, "locator_view": self.locator_view}


@dataclass(frozen=True)
class ModelCard:
    model_name: str
    architecture: UNetConfig
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    threshold: float = DEFAULT_THRESHOLD
    mode: str = "full"
    base_version: int | None = None
    run_id: str | None = None
    data: tuple[str, ...] = ()
    seen_data: tuple[str, ...] = ()
    training_seconds: float | None = None
    train: TrainConfig | None = None  # epochs, steps, batch, learning rate ... (None: not recorded)
    trainable_params: int | None = None
    replay_fraction: float = 0.0  # incremental runs: the share of each batch from earlier datasets
    replay_data: tuple[str, ...] = ()
    forced: bool = False
    test_metrics: dict[str, Scores] = field(default_factory=dict)
    segment: SegmentCard | None = None
    """Stage 2 of a two-stage version; None: the paper's single-stage model (stage 1 alone)."""
    input_dtype: str = "float32"
    """The dtype of the signatures' `images` (`fundus_seg.model_repository`): uint8 for versions published since it
    existed, float32 (a card that does not say) before."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Everything else the version records (training settings, lineage, accelerator ...), as written."""

    # -- reading ---------------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, document: Any) -> ModelCard:
        if not isinstance(document, dict):
            raise ModelCardError(f"a model card is a JSON object, got {type(document).__name__}")
        # here, not at the top: training_job.config imports the rollout gate, which reads cards
        from training_job.config import TrainConfig, UNetConfig

        config = document.get("config") if isinstance(document.get("config"), dict) else {}
        try:
            architecture = UNetConfig(**_known(UNetConfig, config.get("model") or {}))
            preprocess = PreprocessConfig(**_known(PreprocessConfig, config.get("preprocess") or {}))
            metrics = {str(name): Scores.from_dict(scores) for name, scores in (document.get("test_metrics") or {}).items()}
            base = document.get("base_version")
            seconds = document.get("training_seconds")
            replay = document.get("replay") if isinstance(document.get("replay"), dict) else {}
            params = document.get("trainable_params")
            segment = config.get("segment")
            card = cls(
                model_name=str(document.get("model_name") or "optic-disc"),
                architecture=architecture,
                preprocess=preprocess,
                threshold=_number(document.get("threshold", DEFAULT_THRESHOLD), "threshold"),
                mode=str(document.get("mode") or "full"),
                base_version=None if base is None else int(base),
                run_id=None if document.get("run_id") is None else str(document["run_id"]),
                data=tuple(map(str, document.get("data") or ())),
                seen_data=tuple(map(str, document.get("seen_data") or document.get("data") or ())),
                training_seconds=None if seconds is None else _number(seconds, "training_seconds"),
                train=TrainConfig(**_known(TrainConfig, config["train"])) if isinstance(config.get("train"), dict) else None,
                trainable_params=None if params is None else int(params),
                replay_fraction=_number(replay.get("fraction", 0.0), "replay.fraction"),
                replay_data=tuple(map(str, replay.get("data") or ())),
                forced=bool(document.get("forced", False)),
                test_metrics=metrics,
                segment=SegmentCard.from_dict(segment) if isinstance(segment, dict) else None,
                input_dtype=str(_given(document, "input_dtype", "float32")),
                extra={k: v for k, v in document.items() if k not in _OWN_KEYS},
            )
        except (TypeError, ValueError) as exc:
            raise ModelCardError(f"unusable model card: {exc}") from None
        if not 0.0 < card.threshold < 1.0:
            raise ModelCardError(f"threshold must be in (0, 1), got {card.threshold}")
        if card.input_dtype not in INPUT_DTYPES:
            raise ModelCardError(f"input_dtype must be one of {', '.join(INPUT_DTYPES)}, got {card.input_dtype!r}")
        return card

    @classmethod
    def from_json(cls, text: str | bytes) -> ModelCard:
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as exc:
            raise ModelCardError(f"a model card is JSON: {exc}") from None

    # -- writing ---------------------------------------------------------------------------------

    def to_dict(self) -> dict:
        config = dict(self.extra.get("config") or {})
        config["model"] = dataclasses.asdict(self.architecture)
        config["preprocess"] = dataclasses.asdict(self.preprocess)
        if self.train is not None:
            config["train"] = dataclasses.asdict(self.train)
        if self.segment is not None:
            config["segment"] = {**(config.get("segment") or {}), **self.segment.to_dict()}
        else:
            config.pop("segment", None)
        return {
            **self.extra,
            "model_name": self.model_name,
            "pipeline": self.pipeline,
            "architecture": self.architecture.name,
            "threshold": self.threshold,
            "mode": self.mode,
            "base_version": self.base_version,
            "run_id": self.run_id,
            "data": list(self.data),
            "seen_data": list(self.seen_data),
            "training_seconds": self.training_seconds,
            "input_dtype": self.input_dtype,
            **({"trainable_params": self.trainable_params} if self.trainable_params is not None else {}),
            **({"replay": {**(self.extra.get("replay") or {}), "fraction": self.replay_fraction,
                           "data": list(self.replay_data)}} if self.replay_fraction else {}),
            **({"forced": True} if self.forced else {}),
            "config": config,
            "test_metrics": {name: scores.to_dict() for name, scores in self.test_metrics.items()},
        }

    @property
    def pipeline(self) -> str:
        return "two-stage" if self.segment is not None else "single-stage"

    def two_stage(self):
        """The pipeline settings `preprocessing.two_stage` runs this version with (two-stage versions only)."""
        from preprocessing.two_stage import TwoStageConfig

        if self.segment is None:
            raise ModelCardError(f"{self.model_name}: a single-stage version has no second stage")
        return TwoStageConfig(self.preprocess, self.segment.crop, self.threshold, self.segment.cup_threshold,
                              self.segment.convex, self.segment.second_looks, self.segment.locator_looks,
                              self.segment.locator_view)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


_OWN_KEYS = {"model_name", "pipeline", "architecture", "threshold", "mode", "base_version", "run_id", "data", "seen_data",
             "training_seconds", "trainable_params", "forced", "test_metrics", "input_dtype"}


def _known(kind: type, values: dict) -> dict:
    names = {f.name for f in dataclasses.fields(kind)}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in names}


def _given(document: dict, key: str, default: Any) -> Any:
    value = document.get(key)
    return default if value is None else value


def _maybe_number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _number(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ModelCardError(f"{name} must be a number, got {value!r}")
    return float(value)
