"""`musicdiff-sweep`: an Optuna study over any config keys (guidance, steps, sampler ...).

Examples:
    musicdiff-sweep checkpoint=outputs/demo/dit/export n_trials=8
    musicdiff-sweep study_name=cfg_only '~search_space' '+search_space={sampler.cfg_scale: {type: float, low: 1, high: 9}}'
    musicdiff-sweep kind=python objective_fn=mypkg.trials:run n_trials=20   # your own trial runner
Re-running the same command resumes the study (sqlite storage under the output root); starting the
same command several times (or as a SLURM array) adds workers that share its ``n_trials`` budget.
(``search_space=...`` merges into the default space; ``~search_space +search_space=...`` replaces it.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

from musicdiff.cli.common import tracked_run
from musicdiff.config.paths import config_dir
from musicdiff.config.runtime import prepare_run
from musicdiff.sweeps.optuna_sweep import run_sweep

log = logging.getLogger("musicdiff")


def sweep(cfg: DictConfig) -> float:
    """Run or resume the study; returns the best objective value (nan if no trial finished)."""
    if cfg.kind == "generate_eval" and cfg.checkpoint:
        with open_dict(cfg):
            cfg.base_overrides = [f"checkpoint={cfg.checkpoint}", *cfg.base_overrides]
    run_dir, digest = prepare_run(cfg)
    with tracked_run(cfg, run_dir, digest, "sweep") as logger:
        study = run_sweep(cfg, logger, Path(run_dir))
    done = [t for t in study.trials if t.value is not None]
    return float(study.best_value) if done else float("nan")


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="sweep")
def main(cfg: DictConfig) -> float:
    """Hydra entry point."""
    return sweep(cfg)


if __name__ == "__main__":
    main()
