"""Structured progress reporting shared by the CLI (progress bars) and the service (job status, SSE).

Long-running functions take ``progress: ProgressFn | None`` and call it with :class:`ProgressEvent`s. A callback
may raise :class:`Cancelled` to stop the work at the next safe point (the service uses this for cancel).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable


@dataclass
class ProgressEvent:
    """One progress report.

    Attributes:
        stage: pipeline stage, e.g. ``"sfm.extract"``, ``"sfm.match"``, ``"training"``, ``"exporting"``.
        step: work done so far in this stage (iterations, images, frames).
        total: work in this stage when done (0 when unknown).
        message: one human-readable line (also goes to the job's log tail).
        metrics: numbers worth showing (loss, Gaussian count, PSNR, ...).
        checkpoint: path of a checkpoint that was just completely written (None otherwise).
    """

    stage: str
    step: int = 0
    total: int = 0
    message: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    time: float = field(default_factory=time.time)

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total) if self.total else 0.0


ProgressFn = Callable[[ProgressEvent], None]


class Cancelled(Exception):
    """Raised by a progress callback to stop the work (the job was cancelled)."""


def emit(progress: ProgressFn | None, stage: str, step: int = 0, total: int = 0, message: str = "",
         **kwargs: Any) -> None:
    """Call ``progress`` if given (a no-op otherwise)."""
    if progress is not None:
        progress(ProgressEvent(stage=stage, step=step, total=total, message=message, **kwargs))
