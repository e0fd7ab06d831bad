"""Which version label a request goes to, from the one-machine rollout record (`rollout.json`).

`fundus-seg rollout` writes the record (serving/rollout/record.py: ``stable`` S, ``canary`` C,
``canary_percent`` P) next to the predictor's ``models.config``, which labels S ``stable`` and C
``canary``. P % of requests go to ``canary``, the rest to ``stable``; the record is parsed and
validated by the same code that writes it. Before the file ever existed no label is sent and the
predictor answers with its latest version. Once a split with a stable version has been seen, a
file that vanishes or stops being readable sends everything to ``stable`` (logged once): the
predictor's latest version is the canary during a rollout, and a deleted file must not hand it
all the traffic. The file is re-read only when its mtime or size changes, and stat'ed at most
every `check_every_s`, so the split costs nothing per request.
"""
from __future__ import annotations

import logging
import os
import random
import time
from pathlib import Path

from serving.rollout.record import (
    CANARY_LABEL,
    STABLE_LABEL,
    RecordError,
    RolloutRecord,
)

log = logging.getLogger(__name__)


class VersionRouter:
    def __init__(self, rollout_file: str | os.PathLike | None, check_every_s: float = 0.5,
                 rng: random.Random | None = None) -> None:
        self.path = Path(rollout_file) if rollout_file else None
        self.check_every_s = check_every_s
        self._rng = rng or random.Random()
        self._split: RolloutRecord | None = None
        self._seen: tuple[int, int] | None = None
        self._checked_at = float("-inf")
        self._lost = False
        """The file vanished or became unusable since the last good read (logged once per loss)."""

    @property
    def split(self) -> RolloutRecord | None:
        """The current split (None: no rollout seen yet), refreshed from disk when due."""
        now = time.monotonic()
        if self.path is not None and now - self._checked_at >= self.check_every_s:
            self._checked_at = now
            self._refresh()
        return self._split

    def choose(self) -> str | None:
        """`canary`, `stable`, or None (no rollout ever seen: the predictor's latest version)."""
        split = self.split
        if split is None:
            return None
        if split.canary is not None and self._rng.random() * 100.0 < split.canary_percent:
            return CANARY_LABEL
        return STABLE_LABEL

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
            split = RolloutRecord.parse(self.path.read_text())
        except (OSError, UnicodeDecodeError, RecordError) as exc:
            self._fall_back(f"is unusable ({exc})")
            return
        self._seen, self._lost = key, False
        if split != self._split:
            log.info("traffic split from %s: %s", self.path, split)
        self._split = split

    def _fall_back(self, why: str, missing: bool = False) -> None:
        """No usable file: the stable version seen last takes all the traffic."""
        self._seen = None  # whatever comes next is read afresh
        if missing and self._split is None:
            return  # no rollout yet: the normal state, no label
        if self._split is not None:
            self._split = self._split.without_canary()
        if not self._lost:
            self._lost = True
            then = (f"every request goes to the stable version {self._split.stable}" if self._split is not None
                    else "no version label is sent")
            log.warning("%s %s: %s until it is back", self.path, why, then)

