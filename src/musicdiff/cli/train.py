"""`musicdiff-train`: train the autoencoder or the DiT (``task=``) from a Hydra config.

Examples:
    musicdiff-train experiment=tiny_autoencoder
    musicdiff-train dit=small trainer.max_steps=2000 logger=none
    musicdiff-train -m optim.lr=1e-4,3e-4
    musicdiff-train experiment=tiny autoencoder_from=outputs/demo/autoencoder/export
    musicdiff-train experiment=sao_finetune init_from=exports/stable-audio-open-1.0 dataset=latents ...
"""

from __future__ import annotations

import inspect
import logging
from pathlib import Path
from typing import Any

import hydra
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, open_dict

from musicdiff.cli.common import tracked_run
from musicdiff.config.paths import config_dir
from musicdiff.config.runtime import prepare_run
from musicdiff.config.validate import validate_targets
from musicdiff.pretrained import PretrainedError, load_pretrained

log = logging.getLogger("musicdiff")


# Model parts a task can be started from, and the config group that describes each.
INIT_PARTS = ("autoencoder", "dit", "conditioner")
# Keys of a model group that change how it trains, not what it computes: the run's value is kept
# when the architecture is taken from ``init_from``.
TRAINING_KEYS = ("gradient_checkpointing",)


def _absolute_sources(cfg: DictConfig) -> None:
    """Record ``init_from``/``autoencoder_from`` as absolute paths (checkpoints and exports stay usable anywhere)."""
    with open_dict(cfg):
        for key in ("init_from", "autoencoder_from"):
            value = cfg.get(key)
            if value and "://" not in str(value):
                cfg[key] = str(Path(value).expanduser().resolve())


def pretrained_parts(cfg: DictConfig) -> dict[str, Any]:
    """Load what ``init_from`` / ``autoencoder_from`` name and adopt their architecture in ``cfg``.

    The model groups of ``cfg`` are replaced by those the weights were trained with (keeping the
    run's :data:`TRAINING_KEYS`), so the task, the checkpoints and the export describe the real
    network. Returns the loaded modules by task argument name, for ``instantiate(cfg.task, **parts)``.
    """
    if not cfg.get("init_from") and not cfg.get("autoencoder_from"):
        return {}
    accepted = inspect.signature(get_class(cfg.task._target_)).parameters
    wanted = [p for p in INIT_PARTS if p in accepted]
    if not cfg.get("init_from"):
        wanted = ["autoencoder"] if "autoencoder" in accepted else []
        if not wanted:
            raise PretrainedError(f"autoencoder_from is set but {cfg.task._target_} has no autoencoder")
    pre = load_pretrained(cfg.get("init_from") or None, autoencoder_from=cfg.get("autoencoder_from") or None,
                          parts=wanted, fallback=cfg if not cfg.get("init_from") else None)
    parts: dict[str, Any] = {}
    with open_dict(cfg):
        for name in wanted:
            module = getattr(pre, name)
            if module is None or pre.config.get(name) is None:
                continue
            group = pre.config[name]
            for key in TRAINING_KEYS:
                if cfg.get(name) is not None and key in cfg[name] and key in group:
                    group[key] = cfg[name][key]
                    if hasattr(module, key):
                        setattr(module, key, bool(cfg[name][key]))
            cfg[name] = group
            parts[name] = module.train()
        # a task that continues its base model's objective (ARC post-training) records it from the source
        adopt = getattr(get_class(cfg.task._target_), "adopt_objective", None)
        if adopt is not None and cfg.get("init_from") and pre.config.get("diffusion") is not None:
            cfg.diffusion = adopt(pre.config.diffusion)
        elif cfg.get("init_from") and pre.config.get("diffusion") is not None and cfg.get("diffusion") is not None:
            # the objective is part of the model, like its architecture: a rectified-flow model keeps training
            # as one (its timestep density and shift included)
            from musicdiff.diffusion import objective_of

            if objective_of(pre.config.diffusion) != objective_of(cfg.diffusion):
                log.warning("init_from was trained with the %s objective; the run's diffusion=%s is replaced by "
                            "the source's diffusion group", objective_of(pre.config.diffusion),
                            objective_of(cfg.diffusion))
            cfg.diffusion = pre.config.diffusion
    log.info("starting from %s: %s", cfg.get("init_from") or cfg.get("autoencoder_from"), ", ".join(parts))
    return parts


def train(cfg: DictConfig) -> dict[str, float]:
    """Build every part from ``cfg``, train, checkpoint, export; returns the final metrics.

    Args:
        cfg: a composed ``conf/train.yaml``. ``init_from=`` starts the task from a trained model
            (musicdiff export or checkpoint, or a stable-audio-tools checkpoint); ``autoencoder_from=``
            takes only the (frozen) autoencoder.

    Returns:
        Final averaged training metrics (``loss`` ...), also logged to the tracker.
    """
    validate_targets(cfg)  # keys and value types first: nothing is built from a bad config
    _absolute_sources(cfg)
    parts = pretrained_parts(cfg)
    run_dir, digest = prepare_run(cfg)
    with tracked_run(cfg, run_dir, digest, "train") as logger:
        dataset = instantiate(cfg.dataset)
        task = instantiate(cfg.task, **parts)
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
