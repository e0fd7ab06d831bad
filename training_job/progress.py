"""A rich progress bar for Keras training: one bar per run, loss and Dice in the description."""
from __future__ import annotations

import keras
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn


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
        description = f"epoch {self.epoch + 1}/{self.epochs} loss {logs.get('loss', float('nan')):.4f} dice {logs.get('dice', float('nan')):.4f}"
        self.progress.update(self.task, advance=1, description=description)

    def on_train_end(self, logs=None):
        self.progress.stop()
