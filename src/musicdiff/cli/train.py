"""`musicdiff-train`: train the autoencoder or the DiT (``task=``) from a Hydra config.

Examples:
    musicdiff-train experiment=tiny_autoencoder
    musicdiff-train dit=small trainer.max_steps=2000 logger=none
    musicdiff-train -m optim.lr=1e-4,3e-4
"""

from __future__ import annotations

import logging

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from musicdiff.cli.common import tracked_run
from musicdiff.config.paths import config_dir
from musicdiff.config.runtime import prepare_run
from musicdiff.training.checkpoint import load_exported

log = logging.getLogger("musicdiff")


def train(cfg: DictConfig) -> dict[str, float]:
    """Build every part from ``cfg``, train, checkpoint, export; returns the final metrics.

    Args:
        cfg: a composed ``conf/train.yaml``.

    Returns:
        Final averaged training metrics (``loss`` ...), also logged to the tracker.
    """
    run_dir, digest = prepare_run(cfg)
    with tracked_run(cfg, run_dir, digest, "train") as logger:
        dataset = instantiate(cfg.dataset)
        task = instantiate(cfg.task)
        if cfg.get("init_autoencoder"):
            if getattr(task, "autoencoder", None) is None:
                raise ValueError("init_autoencoder is set but this task has no autoencoder")
            load_exported(cfg.init_autoencoder, "autoencoder", task.autoencoder)
            log.info("loaded autoencoder weights from %s", cfg.init_autoencoder)
        trainer = instantiate(cfg.trainer)
        metrics = trainer.fit(task, dataset, logger, run_dir, cfg, digest, seed=int(cfg.seed))
    log.info("final metrics: %s", metrics)
    return metrics


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="train")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the sweep objective (``cfg.objective`` of the final metrics)."""
    metrics = train(cfg)
    return float(metrics.get(cfg.objective, float("nan")))


if __name__ == "__main__":
    main()
