"""Per-epoch checkpoints in object storage, so a preempted or killed Job resumes instead of starting over.

Layout under `<checkpoint_dir>/<run_id>/`:

    epoch-0003.weights.h5   model weights and optimizer state (Keras `save_weights` includes the
                            optimizer's slots and step count, so the learning-rate schedule goes on)
    state.json              {"epoch": 3, "weights": "epoch-0003.weights.h5", "config": {...},
                             "training_seconds": 41.2, "base_version": 1, "saved_at": ...}

`state.json` is written last, in one atomic write (one PUT, or os.replace locally), and names
its weights file, so a reader sees the previous complete checkpoint or the new one, never a mix;
the previous weights file is deleted afterwards. Only complete epochs are saved: a process
stopped mid-epoch resumes at the start of that epoch. The run's description (`config`) is saved
too, and a checkpoint made with different settings is refused instead of silently mixed in.
"""
from __future__ import annotations

import json
import logging
import signal
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import keras

from fundus_seg import storage
from preprocessing.errors import FundusSegError

log = logging.getLogger(__name__)

STATE = "state.json"


class CheckpointError(FundusSegError):
    """A checkpoint that cannot be used for this run."""


class Interrupted(FundusSegError):
    """Training stopped by SIGTERM; the checkpoint lets a rerun with the same run id resume."""

    exit_code = 143  # 128 + SIGTERM, what Kubernetes expects from a terminated container


@dataclass(frozen=True)
class CheckpointState:
    epoch: int
    """Epochs completed; training resumes at this (0-based) epoch."""
    weights: str
    config: dict
    training_seconds: float = 0.0
    base_version: int | None = None
    saved_at: str = ""


class CheckpointStore:
    """The checkpoints of one run: a folder or URI `<checkpoint_dir>/<run_id>`."""

    def __init__(self, uri: str):
        self.uri = str(uri)

    def state(self) -> CheckpointState | None:
        try:
            values = storage.read_json(storage.join(self.uri, STATE))
            return CheckpointState(**values)
        except FileNotFoundError:
            return None
        except (ValueError, TypeError) as exc:
            raise CheckpointError(f"{self.uri}/{STATE}: unreadable checkpoint ({exc}); delete it or use a new --run-id") from None

    def check(self, state: CheckpointState, config: dict) -> None:
        """Refuse a checkpoint made with other settings: its weights belong to another training run."""
        changed = _differences(json.loads(json.dumps(config)), state.config)  # as stored: tuples become lists
        if changed:
            raise CheckpointError(f"{self.uri} holds a checkpoint made with different settings ({', '.join(changed[:5])} "
                                  "changed); use a new --run-id, or delete the checkpoint to start over")

    def restore(self, model: keras.Model, state: CheckpointState) -> None:
        """Load weights and optimizer state; call inside the distribution strategy's scope."""
        if model.optimizer is not None and not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)  # the slots must exist before loading them
        with tempfile.TemporaryDirectory(prefix="fundus-seg-ckpt-") as scratch:
            local = Path(scratch) / state.weights
            try:
                local.write_bytes(storage.read_bytes(storage.join(self.uri, state.weights)))
            except FileNotFoundError:
                raise CheckpointError(f"{self.uri}: {STATE} names {state.weights}, which is missing") from None
            model.load_weights(local)

    def save(self, model: keras.Model, state: CheckpointState) -> None:
        previous = self.state_or_none()
        with tempfile.TemporaryDirectory(prefix="fundus-seg-ckpt-") as scratch:
            model.save_weights(Path(scratch) / state.weights)
            storage.upload_dir(scratch, self.uri, files=[state.weights], progress=False)
        storage.write_json(storage.join(self.uri, STATE), asdict(state))  # the commit point
        if previous and previous.weights != state.weights:
            storage.delete_prefix(storage.join(self.uri, previous.weights))

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
                 seconds_before: float = 0.0, base_version: int | None = None):
        super().__init__()
        self.store, self.config, self.steps_per_epoch = store, config, steps_per_epoch
        self.seconds_before, self.base_version = seconds_before, base_version
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
        )
        self.store.save(self.model, state)
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
