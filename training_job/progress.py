"""Training progress: a rich bar in a terminal, one plain line per epoch anywhere else (Kubernetes logs)."""
from __future__ import annotations

import sys
import time

import keras
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_callback(epochs: int, steps_per_epoch: int, initial_epoch: int = 0, global_batch: int = 1) -> keras.callbacks.Callback:
    """The bar when stdout is a terminal; otherwise plain lines, which log collectors keep readable."""
    if sys.stdout.isatty():
        return RichProgress(epochs, steps_per_epoch, initial_epoch)
    return EpochLines(epochs, steps_per_epoch, initial_epoch, global_batch)


class RichProgress(keras.callbacks.Callback):
    def __init__(self, epochs: int, steps_per_epoch: int, initial_epoch: int = 0):
        super().__init__()
        self.total = epochs * steps_per_epoch
        self.done = initial_epoch * steps_per_epoch
        self.epochs = epochs
        self.progress = Progress(
            TextColumn("[bold]train[/] {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        self.task = None

    def on_train_begin(self, logs=None):
        self.progress.start()
        self.task = self.progress.add_task("", total=self.total, completed=self.done)

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        description = f"epoch {self.epoch + 1}/{self.epochs} loss {logs.get('loss', float('nan')):.4f} {dice_scores(logs)}"
        self.progress.update(self.task, advance=1, description=description)

    def on_train_end(self, logs=None):
        self.progress.stop()


def dice_scores(logs: dict) -> str:
    """`dice 0.8712` (stage 1), or `disc_dice 0.9412 cup_dice 0.8120` for a model with several outputs (stage 2)."""
    names = [name for name in logs if name.endswith("dice")] or ["dice"]
    return " ".join(f"{name} {float(logs.get(name, float('nan'))):.4f}" for name in names)


class EpochLines(keras.callbacks.Callback):
    """`epoch 3/15 loss 0.4123 dice 0.8712 412.0 img/s elapsed 0:01:05` on stderr (stdout keeps the result)."""

    def __init__(self, epochs: int, steps_per_epoch: int, initial_epoch: int = 0, global_batch: int = 1, stream=None):
        super().__init__()
        self.epochs, self.steps_per_epoch, self.global_batch = epochs, steps_per_epoch, global_batch
        self.initial_epoch = initial_epoch
        self.stream = stream
        self.started = self.epoch_started = time.perf_counter()
        self.steps = 0

    def _print(self, line: str) -> None:
        print(line, file=self.stream or sys.stderr, flush=True)

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()
        if self.initial_epoch >= self.epochs:
            self._print(f"train: all {self.epochs} epochs were done before the restart")
        elif self.initial_epoch:
            self._print(f"train: resuming at epoch {self.initial_epoch + 1}/{self.epochs}")

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_started, self.steps = time.perf_counter(), 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        now = time.perf_counter()
        rate = self.steps * self.global_batch / max(now - self.epoch_started, 1e-9)
        elapsed = int(now - self.started)
        self._print(f"epoch {epoch + 1}/{self.epochs} loss {logs.get('loss', float('nan')):.4f} "
                    f"{dice_scores(logs)} {rate:.1f} img/s "
                    f"elapsed {elapsed // 3600}:{elapsed // 60 % 60:02d}:{elapsed % 60:02d}")
