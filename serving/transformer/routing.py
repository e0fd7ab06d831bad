"""Which version label a request goes to, from the one-machine rollout contract (`rollout.json`).

`fundus-seg rollout` writes ``{"stable": S, "canary": C, "canary_percent": P}`` next to the
predictor's ``models.config``, which labels S ``stable`` and C ``canary``. P % of requests go to
``canary``, the rest to ``stable``. Without the file no label is sent and the predictor answers
with its latest version. The file is re-read only when its mtime or size changes, and stat'ed at
most every `check_every_s`, so the split costs nothing per request.
"""
from __future__ import annotations

import json
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

STABLE, CANARY = "stable", "canary"


@dataclass(frozen=True)
class Split:
    stable: int | None = None
    canary: int | None = None
    canary_percent: float = 0.0

    def version_for(self, label: str | None) -> int | None:
        return {STABLE: self.stable, CANARY: self.canary}.get(label or "")


NO_ROLLOUT = Split()


class VersionRouter:
    def __init__(self, rollout_file: str | os.PathLike | None, check_every_s: float = 0.5,
                 rng: random.Random | None = None) -> None:
        self.path = Path(rollout_file) if rollout_file else None
        self.check_every_s = check_every_s
        self._rng = rng or random.Random()
        self._split = NO_ROLLOUT
        self._seen: tuple[int, int] | None = None
        self._checked_at = float("-inf")

    @property
    def split(self) -> Split:
        """The current split, refreshed from disk when due."""
        now = time.monotonic()
        if self.path is not None and now - self._checked_at >= self.check_every_s:
            self._checked_at = now
            self._refresh()
        return self._split

    def choose(self) -> str | None:
        """`canary`, `stable`, or None (no rollout: the predictor's latest version)."""
        split = self.split
        if split.stable is None:
            return None
        if split.canary is not None and self._rng.random() * 100.0 < split.canary_percent:
            return CANARY
        return STABLE

    def _refresh(self) -> None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            if self._seen is not None:
                log.info("%s removed: requests go to the latest version", self.path)
            self._split, self._seen = NO_ROLLOUT, None
            return
        except OSError as exc:
            log.warning("cannot stat %s (%s); keeping the previous split", self.path, exc)
            return
        key = (stat.st_mtime_ns, stat.st_size)
        if key == self._seen:
            return
        try:
            record = json.loads(self.path.read_text())
            split = parse_split(record)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            log.warning("unusable %s (%s); keeping the previous split", self.path, exc)
            return  # _seen unchanged: retried at the next check
        self._seen = key
        if split != self._split:
            log.info("traffic split from %s: %s", self.path, split)
        self._split = split


def parse_split(record: dict) -> Split:
    """rollout.json -> Split; raises ValueError/TypeError/KeyError on a malformed record."""
    if not isinstance(record, dict):
        raise TypeError("rollout record must be a JSON object")
    stable = int(record["stable"])
    canary = record.get("canary")
    canary = None if canary is None else int(canary)
    percent = float(record.get("canary_percent") or 0) if canary is not None else 0.0
    if not 0.0 <= percent <= 100.0:
        raise ValueError(f"canary_percent must be 0..100, got {percent}")
    return Split(stable, canary, percent)
