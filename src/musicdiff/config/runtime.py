"""Run set-up shared by every entry point: validation, seeding, resolved config and hash on disk."""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from musicdiff.config.hashing import config_hash
from musicdiff.config.validate import validate_targets

log = logging.getLogger("musicdiff")


def output_dir_of(cfg: DictConfig) -> Path:
    """The run directory: ``cfg.paths.output_dir`` (Hydra's run dir inside a Hydra app)."""
    try:
        out = cfg.paths.output_dir
    except Exception:  # noqa: BLE001 - ${hydra:...} outside a Hydra app
        out = None
    if not out:
        raise ValueError("paths.output_dir is not set (run through Hydra or set paths.output_dir=...)")
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file through a temp file + rename, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def prepare_run(cfg: DictConfig) -> tuple[Path, str]:
    """Validate the config, seed, and write ``config.yaml`` + ``config_hash.txt`` to the run dir.

    Returns:
        (run directory, config hash).
    """
    validate_targets(cfg)
    out = output_dir_of(cfg)
    seed_everything(int(cfg.get("seed", 0)))
    digest = config_hash(cfg)
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg, resolve=True))
    atomic_write_text(out / "config_hash.txt", digest + "\n")
    log.info("run dir %s, config hash %s", out, digest)
    return out, digest
