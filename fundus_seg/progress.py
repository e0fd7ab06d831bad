"""Terminal progress for long transfers (dataset pushes, downloads, model uploads): a rich byte bar."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator


@contextlib.contextmanager
def transfer_progress(enabled: bool, total_bytes: int, description: str) -> Iterator[Callable[[int], None]]:
    """Yield ``advance(n_bytes)``; draws a rich byte progress bar when enabled."""
    if not enabled:
        yield lambda n: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  TimeRemainingColumn()) as bar:
        task = bar.add_task(description, total=total_bytes)
        yield lambda n: bar.advance(task, n)
