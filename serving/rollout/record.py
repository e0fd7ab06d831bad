"""The rollout record (``rollout.json``) and the names of the one-machine contract, defined once.

The rollout writes the record (the local target into the model repository, the KServe target
into a ConfigMap) and the transformer's routing reads it to split traffic; both parse and
validate it here, so writer and reader cannot disagree. Standard library only: the transformer
imports this module and must stay light.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
from dataclasses import dataclass
from typing import Any

MODELS_CONFIG = "models.config"
"""TF Serving ``ModelServerConfig`` in the model repository root: the versions and their labels."""
ROLLOUT_JSON = "rollout.json"
"""The record, next to ``models.config``: which label gets which percent of the traffic."""
STABLE_LABEL, CANARY_LABEL = "stable", "canary"
"""The TF Serving version labels of the serving version and of the canary."""


class RecordError(ValueError):
    """A rollout record that breaks the contract; the message says which field and why."""


def _check_version(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise RecordError(f"{name} must be a version number (an integer >= 0), got {value!r}")


@dataclass(frozen=True)
class RolloutRecord:
    """Which versions take traffic: always `stable`, plus `canary` at `canary_percent` % when set."""

    stable: int
    canary: int | None = None
    canary_percent: float = 0
    model_name: str | None = None

    def __post_init__(self) -> None:
        _check_version("stable", self.stable)
        if self.canary is not None:
            _check_version("canary", self.canary)
        percent = self.canary_percent
        if (isinstance(percent, bool) or not isinstance(percent, (int, float)) or not math.isfinite(percent)
                or not 0 <= percent <= 100):
            raise RecordError(f"canary_percent must be a number from 0 to 100, got {percent!r}")
        if self.canary is None and percent:
            raise RecordError(f"canary_percent is {percent!r} but there is no canary")
        if self.model_name is not None and (not isinstance(self.model_name, str) or not self.model_name):
            raise RecordError(f"model_name must be a non-empty string, got {self.model_name!r}")

    def version_for(self, label: str | None) -> int | None:
        """The version a label names (None for no label or an unknown one)."""
        return {STABLE_LABEL: self.stable, CANARY_LABEL: self.canary}.get(label or "")

    def without_canary(self) -> RolloutRecord:
        """The stable version alone, with all the traffic."""
        return RolloutRecord(self.stable, model_name=self.model_name)

    def describe(self) -> str:
        if self.canary is None:
            return f"{self.model_name}: version {self.stable} serves 100%"
        return (f"{self.model_name}: stable version {self.stable} {100 - self.canary_percent:g}%, "
                f"canary version {self.canary} {self.canary_percent:g}%")

    def dumps(self, **extra: Any) -> bytes:
        """The JSON document, stamped ``updated_at`` (now, UTC), plus `extra` keys (e.g. the InferenceService)."""
        now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
        document = {"model_name": self.model_name, "stable": self.stable, "canary": self.canary,
                    "canary_percent": self.canary_percent, "updated_at": now, **extra}
        return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def parse(cls, data: bytes | str) -> RolloutRecord:
        """A JSON document -> record; RecordError unless it follows the contract.

        ``stable`` is required; a missing ``canary`` is none, a missing ``canary_percent`` is 0, a
        missing ``model_name`` is None. Other keys (``updated_at``, the KServe target's) are ignored.
        """
        try:
            document = json.loads(data)
        except ValueError as exc:
            raise RecordError(f"not JSON ({exc})") from None
        if not isinstance(document, dict):
            raise RecordError("not a JSON object")
        if "stable" not in document:
            raise RecordError("no stable version (key 'stable')")
        return cls(stable=document["stable"], canary=document.get("canary"),
                   canary_percent=document.get("canary_percent", 0), model_name=document.get("model_name"))
