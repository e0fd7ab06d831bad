"""Which version label a request goes to, from the one-machine rollout contract (`rollout.json`).

`fundus-seg rollout` writes ``{"stable": S, "canary": C, "canary_percent": P}`` next to the
predictor's ``models.config``, which labels S ``stable`` and C ``canary``. P % of requests go to
``canary``, the rest to ``stable``. Before the file ever existed no label is sent and the
predictor answers with its latest version. Once a split with a stable version has been seen, a
file that vanishes or stops being readable sends everything to ``stable`` (logged once): the
predictor's latest version is the canary during a rollout, and a deleted file must not hand it
all the traffic. The file is re-read only when its mtime or size changes, and stat'ed at most
every `check_every_s`, so the split costs nothing per request.
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
        self._lost = False
        """The file vanished or became unusable since the last good read (logged once per loss)."""

    @property
    def split(self) -> Split:
        """The current split, refreshed from disk when due."""
        now = time.monotonic()
        if self.path is not None and now - self._checked_at >= self.check_every_s:
            self._checked_at = now
            self._refresh()
        return self._split

    def choose(self) -> str | None:
        """`canary`, `stable`, or None (no rollout ever seen: the predictor's latest version)."""
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
            self._fall_back("is gone", missing=True)
            return
        except OSError as exc:
            self._fall_back(f"cannot be read ({exc})")
            return
        key = (stat.st_mtime_ns, stat.st_size)
        if key == self._seen:
            return
        try:
            record = json.loads(self.path.read_text())
            split = parse_split(record)
        except (OSError, ValueError, TypeError, KeyError) as exc:
            self._fall_back(f"is unusable ({exc})")
            return
        self._seen, self._lost = key, False
        if split != self._split:
            log.info("traffic split from %s: %s", self.path, split)
        self._split = split

    def _fall_back(self, why: str, missing: bool = False) -> None:
        """No usable file: the stable version seen last takes all the traffic."""
        self._seen = None  # whatever comes next is read afresh
        if missing and self._split.stable is None:
            return  # no rollout yet: the normal state, no label
        if self._split.stable is not None:
            self._split = Split(stable=self._split.stable)
        if not self._lost:
            self._lost = True
            then = (f"every request goes to the stable version {self._split.stable}" if self._split.stable is not None
                    else "no version label is sent")
            log.warning("%s %s: %s until it is back", self.path, why, then)


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
