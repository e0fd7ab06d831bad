"""A training run as small typed objects, loadable from flags or a YAML/JSON file (a ConfigMap)."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from preprocessing.augment import AugmentConfig
from preprocessing.errors import FundusSegError
from preprocessing.transform import PreprocessConfig
from training_job.unet import UNetConfig


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

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls, values: dict[str, Any], where: str):
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise FundusSegError(f"{where}: unknown setting(s) {', '.join(unknown)}; known: {', '.join(known)}")
    kwargs = {}
    for name, value in values.items():
        nested = {"model": UNetConfig, "train": TrainConfig, "preprocess": PreprocessConfig, "augment": AugmentConfig}
        if cls is RunConfig and name in nested:
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


def load_run_config(path: str | Path) -> RunConfig:
    """Read a YAML or JSON file shaped like `RunConfig.to_dict()` (any subset of it)."""
    text = Path(path).read_text()
    values = json.loads(text) if str(path).endswith(".json") else yaml.safe_load(text)
    return run_config_from_dict(values or {})


def with_overrides(config: RunConfig, **sections: dict[str, Any]) -> RunConfig:
    """Apply flag values (None = not given) on top of a config, section by section."""
    updated = config
    for section, values in sections.items():
        values = {k: v for k, v in values.items() if v is not None}
        if not values:
            continue
        if section == "run":
            updated = dataclasses.replace(updated, **values)
        else:
            updated = dataclasses.replace(updated, **{section: dataclasses.replace(getattr(updated, section), **values)})
    return updated
