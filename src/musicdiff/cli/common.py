"""Pieces shared by the entry points: logger start/finish around a job, device choice."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterator

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from musicdiff.config.hashing import flatten
from musicdiff.tracking.base import RunLogger

log = logging.getLogger("musicdiff")


@contextlib.contextmanager
def tracked_run(cfg: DictConfig, run_dir: Path, digest: str, kind: str) -> Iterator[RunLogger]:
    """Open the configured logger with params and tags; close it FINISHED/FAILED/KILLED."""
    logger: RunLogger = instantiate(cfg.logger)
    logger.start(run_dir, flatten(cfg), tags={"mlflow.runName": str(cfg.run_name), "musicdiff.config_hash": digest,
                                              "musicdiff.entry_point": kind})
    try:
        yield logger
        logger.log_artifact(run_dir / "config.yaml")
        logger.finish("FINISHED")
    except KeyboardInterrupt:
        logger.finish("KILLED")
        raise
    except BaseException:
        logger.finish("FAILED")
        raise


def pick_device(name: str) -> torch.device:
    """``auto`` → CUDA if available else CPU; otherwise the named device."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
