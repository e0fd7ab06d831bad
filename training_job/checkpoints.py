"""Per-epoch checkpoints in object storage, so a preempted or killed Job resumes instead of starting over.

Layout under `<checkpoint_dir>/<run_id>/`:

    epoch-0003.weights.h5   model weights and optimizer state (Keras `save_weights` includes the
                            optimizer's slots and step count, so the learning-rate schedule goes on)
    epoch-0002.weights.h5   the previous checkpoint's, kept until the next one is complete
    state.json              {"epoch": 3, "weights": "epoch-0003.weights.h5", "config": {...},
                             "training_seconds": 41.2, "base_version": 1, "saved_at": ...,
                             "previous": {"epoch": 2, "weights": "epoch-0002.weights.h5", ...}}

The weights are written first and made durable (locally: fsync of the file and its folder), then
`state.json` in one atomic write (one PUT, or os.replace locally) names them: the commit point. A
reader sees the previous complete checkpoint or the new one, never a mix; weights files neither
checkpoint names are deleted afterwards. Should the newest weights still not load on resume (a
crash on a store that lost them), the run resumes from `previous` instead of failing on every
restart. `weights` must be a plain file name: a `state.json` naming a path anywhere else is
refused. Only complete epochs are saved: a process stopped mid-epoch resumes at the start of
that epoch. The run's description (`config`) is saved too, and a checkpoint made with different
settings is refused instead of silently mixed in.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import signal
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import keras

from fundus_seg import storage
from fundus_seg.errors import EXIT_TERMINATED, FundusSegError

log = logging.getLogger(__name__)

STATE = "state.json"
WEIGHTS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*\.weights\.h5")
"""What `weights` may be: a file name in the run's folder (what Keras `save_weights` accepts), never a path."""


class CheckpointError(FundusSegError):
    """A checkpoint that cannot be used for this run."""


class Interrupted(FundusSegError):
    """Training stopped by SIGTERM; the checkpoint lets a rerun with the same run id resume."""

    exit_code = EXIT_TERMINATED  # what Kubernetes expects from a terminated container


@dataclasses.dataclass(frozen=True)
class CheckpointState:
    epoch: int
    """Epochs completed; training resumes at this (0-based) epoch."""
    weights: str
    config: dict
    training_seconds: float = 0.0
    base_version: int | None = None
    saved_at: str = ""
    previous: CheckpointState | None = None
    """The checkpoint before this one (without a `previous` of its own): what resume falls back to."""

    def __post_init__(self) -> None:
        if not isinstance(self.weights, str) or not WEIGHTS_NAME.fullmatch(self.weights):
            raise ValueError(f"weights must be a file name in the checkpoint folder, got {self.weights!r}")

    @classmethod
    def from_record(cls, values: dict) -> CheckpointState:
        previous = values.get("previous")
        return cls(**{**values, "previous": cls.from_record(previous) if previous is not None else None})


class CheckpointStore:
    """The checkpoints of one run: a folder or URI `<checkpoint_dir>/<run_id>`."""

    def __init__(self, uri: str):
        self.uri = str(uri)

    def state(self) -> CheckpointState | None:
        try:
            return CheckpointState.from_record(storage.read_json(storage.join(self.uri, STATE)))
        except FileNotFoundError:
            return None
        except (ValueError, TypeError, AttributeError) as exc:
            raise CheckpointError(f"{self.uri}/{STATE}: unreadable checkpoint ({exc}); delete it or use a new --run-id") from None

    def check(self, state: CheckpointState, config: dict) -> None:
        """Refuse a checkpoint made with other settings: its weights belong to another training run."""
        changed = _differences(json.loads(json.dumps(config)), state.config)  # as stored: tuples become lists
        if changed:
            raise CheckpointError(f"{self.uri} holds a checkpoint made with different settings ({', '.join(changed[:5])} "
                                  "changed); use a new --run-id, or delete the checkpoint to start over")

    def restore(self, model: keras.Model, state: CheckpointState) -> CheckpointState:
        """Load weights and optimizer state; returns the checkpoint loaded: `state`, or `state.previous`
        when `state`'s weights do not load. Call inside the distribution strategy's scope."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # the slots must exist before loading them
        try:
            self._load(model, state)
            return state
        except CheckpointError as exc:
            if state.previous is None:
                raise CheckpointError(f"{exc}; delete the checkpoint or use a new --run-id") from None
            log.warning("checkpoint: %s; resuming from the previous checkpoint, epoch %d", exc, state.previous.epoch)
        try:
            self._load(model, state.previous)
        except CheckpointError as exc:
            raise CheckpointError(f"{exc}, nor does the newer epoch {state.epoch}; delete the checkpoint or "
                                  "use a new --run-id") from None
        return state.previous

    def _load(self, model: keras.Model, state: CheckpointState) -> None:
        with tempfile.TemporaryDirectory(prefix="fundus-seg-ckpt-") as scratch:
            local = Path(scratch) / state.weights
            try:
                local.write_bytes(storage.read_bytes(storage.join(self.uri, state.weights)))
                model.load_weights(local)
            except FileNotFoundError:
                raise CheckpointError(f"{self.uri}: the weights of epoch {state.epoch}, {state.weights}, are missing") from None
            except (OSError, ValueError) as exc:  # h5py: truncated file, file signature not found, ...
                raise CheckpointError(f"{self.uri}: the weights of epoch {state.epoch}, {state.weights}, "
                                      f"do not load ({exc})") from None

    def save(self, model: keras.Model, state: CheckpointState) -> None:
        """Weights, then state.json naming them; then every weights file but those of `state` and `state.previous` goes."""
        with tempfile.TemporaryDirectory(prefix="fundus-seg-ckpt-") as scratch:
            model.save_weights(Path(scratch) / state.weights)
            storage.upload_dir(scratch, self.uri, files=[state.weights], progress=False)  # durable before the commit
        storage.write_json(storage.join(self.uri, STATE), dataclasses.asdict(state))  # the commit point
        keep = {state.weights} | ({state.previous.weights} if state.previous else set())
        for name in storage.list_dir(self.uri):
            if name.endswith(".weights.h5") and name not in keep:
                storage.delete_prefix(storage.join(self.uri, name))

    def state_or_none(self) -> CheckpointState | None:
        try:
            return self.state()
        except CheckpointError:
            return None

    def delete(self) -> None:
        storage.delete_prefix(self.uri)


def _differences(new: Any, old: Any, path: str = "") -> list[str]:
    """Dotted paths of the settings that differ (`run.train.learning_rate`)."""
    if isinstance(new, dict) and isinstance(old, dict):
        return [d for k in sorted(set(new) | set(old)) for d in _differences(new.get(k), old.get(k), f"{path}.{k}".lstrip("."))]
    return [] if new == old else [path or "config"]


class EpochCheckpoint(keras.callbacks.Callback):
    """Save after every complete epoch (an epoch cut short by a stop request is not complete)."""

    def __init__(self, store: CheckpointStore, config: dict, steps_per_epoch: int,
                 resumed: CheckpointState | None = None, base_version: int | None = None):
        super().__init__()
        self.store, self.config, self.steps_per_epoch = store, config, steps_per_epoch
        self.last = resumed
        """The newest complete checkpoint (the one resumed from, then each saved): the next save keeps it as `previous`."""
        self.seconds_before = resumed.training_seconds if resumed else 0.0
        self.base_version = base_version
        self.started = time.perf_counter()
        self.steps = 0

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_epoch_begin(self, epoch, logs=None):
        self.steps = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_epoch_end(self, epoch, logs=None):
        if self.steps < self.steps_per_epoch:
            log.info("epoch %d was cut short: keeping the checkpoint of epoch %d", epoch + 1, epoch)
            return
        state = CheckpointState(
            epoch=epoch + 1,
            weights=f"epoch-{epoch + 1:04d}.weights.h5",
            config=self.config,
            training_seconds=round(self.seconds_before + time.perf_counter() - self.started, 1),
            base_version=self.base_version,
            saved_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            previous=dataclasses.replace(self.last, previous=None) if self.last else None,
        )
        self.store.save(self.model, state)
        self.last = state
        log.info("checkpoint: epoch %d saved to %s", epoch + 1, self.store.uri)


class StopOnSigterm(keras.callbacks.Callback):
    """Kubernetes sends SIGTERM before it kills a pod (preemption, eviction, node drain): stop after
    the current step, so the process exits well within the grace period with its last complete
    epoch already in the store. Use as a context manager around training."""

    def __init__(self):
        super().__init__()
        self.requested: int | None = None
        self._previous: Any = None

    def __enter__(self) -> StopOnSigterm:
        if threading.current_thread() is threading.main_thread():  # signals only reach the main thread
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
            self._previous = None

    def _handle(self, signum, frame) -> None:
        self.requested = signum
        log.warning("SIGTERM: stopping after the current step")

    def on_train_batch_end(self, batch, logs=None):
        if self.requested is not None:
            self.model.stop_training = True
