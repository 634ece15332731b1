"""Progress of one input on standard error: the CLI's own stages, then pyannote's steps with percentages.

pyannote's ``ProgressHook`` draws with rich on standard *output*, which is where the CLI writes the result, so
this draws the same kind of display on standard error. It is off unless standard error is a terminal (a log
file or a pipe gets no bars) and with ``--quiet``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

STEP_LABELS = {
    "segmentation": "segmentation",
    "speaker_counting": "counting speakers",
    "embeddings": "speaker embeddings",
    "discrete_diarization": "clustering",
}
"""pyannote's step names (its ``hook(step_name, ...)`` calls) as the display shows them."""


class Progress:
    """A context manager; ``hook`` is None when disabled, so the pipeline runs without one."""

    def __init__(self, label: str, *, enabled: bool) -> None:
        self.label = label
        self.enabled = enabled
        self._display: Any = None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> Progress:
        if self.enabled:
            from rich.console import Console
            from rich.progress import BarColumn, TaskProgressColumn, TextColumn, TimeElapsedColumn
            from rich.progress import Progress as Display

            self._display = Display(
                TextColumn("{task.description}"),
                BarColumn(),
                TaskProgressColumn(),
                TimeElapsedColumn(),
                console=Console(stderr=True),
            )
            self._display.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if self._display is not None:
            self._display.stop()

    def stage(self, name: str, *, done: bool = False) -> None:
        """A stage of the CLI's own (decoding, loading the model): shown as started, then as done."""
        self._update(name, total=1, completed=1 if done else 0)

    @property
    def hook(self) -> Any:
        return self._pipeline_hook if self._display is not None else None

    def _pipeline_hook(
        self, step_name: str, artifact: Any, file: Any = None, total: int | None = None, completed: int | None = None
    ) -> None:
        """pyannote calls this per step (no counts: the step is done) and per batch (``completed`` of ``total``)."""
        if total is None or completed is None:
            total = completed = 1
        self._update(STEP_LABELS.get(step_name, step_name), total=total, completed=completed)

    def _update(self, name: str, *, total: int, completed: int) -> None:
        if self._display is None:
            return
        if name not in self._tasks:
            self._tasks[name] = self._display.add_task(f"{self.label}: {name}", total=total)
        self._display.update(self._tasks[name], total=total, completed=completed)
