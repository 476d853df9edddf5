"""The logger interface every task and entry point writes to."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch


class RunLogger:
    """Experiment-tracking interface; the base class logs nothing (``logger=none``).

    Subclasses override what they support; everything is a no-op here so callers never need to
    check which logger is active.
    """

    def start(self, run_dir: Path, params: Mapping[str, Any], tags: Mapping[str, str] | None = None) -> None:
        """Open a run and record its (flattened) parameters."""

    def log_metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Record scalar metrics at a step."""

    def log_audio(self, key: str, audio: torch.Tensor, sample_rate: int, step: int) -> None:
        """Record an audio clip ``[C, T]`` (written as WAV)."""

    def log_figure(self, key: str, figure: Any, step: int) -> None:
        """Record a matplotlib figure (written as PNG)."""

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Attach a file or directory to the run."""

    def set_tags(self, tags: Mapping[str, str]) -> None:
        """Attach tags to the run."""

    def finish(self, status: str = "FINISHED") -> None:
        """Close the run (``FINISHED``, ``FAILED`` or ``KILLED``)."""

    @property
    def run_id(self) -> str | None:
        """Tracking-server id of the open run, if any."""
        return None


class NullLogger(RunLogger):
    """``logger=none``: nothing is tracked (the run dir still gets config and checkpoints)."""
