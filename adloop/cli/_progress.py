"""Progress displays on stderr for the commands' long jobs: retraining, replay, generation.

Each is a rich progress bar with counts and time left, started when its job starts and
removed when it ends; with ``--quiet`` or output that is not a terminal, rich draws nothing
but the final state.

Example::

    with TrainingProgress() as tell:
        retrain_round(store, progress=tell)   # steps, loss and time left per phase
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

__all__ = ["CountProgress", "TrainingProgress"]

_PHASES = {
    "sft": "fine-tune (winners)",
    "dpo": "tune (pairs)",
    "scorer": "copy scorer",
    "gate": "gate (sample, score)",
}


class TrainingProgress:
    """A retraining round's progress: one line per phase, with steps, loss and time left.

    Use it as a context manager; the object it yields is the ``progress`` hook that
    ``retrain_round`` (and ``fine_tune``) call after every step and at each later phase.
    """

    def __init__(self, console: Console | None = None) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=20),
            TextColumn("{task.fields[counts]}"),
            TextColumn("{task.fields[loss]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
        )
        self._tasks: dict[str, TaskID] = {}
        self._open: TaskID | None = None  # a phase without steps, finished by the next one

    def __enter__(self) -> TrainingProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._finish_open()
        self._progress.stop()

    def _finish_open(self) -> None:
        if self._open is not None:
            self._progress.update(self._open, total=1, completed=1)
            self._open = None

    def __call__(self, event: dict[str, Any]) -> None:
        phase = str(event.get("phase"))
        steps, step = event.get("steps"), event.get("step")
        if phase not in self._tasks:
            self._finish_open()
            self._tasks[phase] = self._progress.add_task(
                _PHASES.get(phase, phase), total=steps, counts="", loss=""
            )
            if not steps:
                self._open = self._tasks[phase]
        if steps and step:
            loss = event.get("loss")
            self._progress.update(
                self._tasks[phase],
                completed=step,
                counts=f"step {step}/{steps}",
                loss=f"loss {loss:.3f}" if isinstance(loss, int | float) else "",
            )


class CountProgress:
    """A bar of ``total`` things (tests replayed, candidates written) with time left."""

    def __init__(self, description: str, total: int, unit: str, *, enabled: bool = True) -> None:
        self._progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn(f"{{task.completed:,.0f}}/{{task.total:,.0f}} {unit}"),
                TimeElapsedColumn(),
                TextColumn("left"),
                TimeRemainingColumn(),
                console=Console(stderr=True),
            )
            if enabled
            else None
        )
        self._description, self._total = description, total

    def __enter__(self) -> CountProgress:
        if self._progress is not None:
            self._progress.start()
            self._task = self._progress.add_task(self._description, total=self._total)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def __call__(self, done: int, total: int | None = None, what: str | None = None) -> None:
        """Set how many are done (and the total, when it changed, and what runs now)."""
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=done,
                total=total or self._total,
                description=f"{self._description}: {what}" if what else self._description,
            )
