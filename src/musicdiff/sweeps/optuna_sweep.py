"""Optuna sweeps driven through Hydra composition, one MLflow child run per trial.

Each trial composes the target entry point's config (``generate`` then ``evaluate``, or
``train``) with the base overrides plus the sampled ones, runs it in-process, and reports the
objective metric. The study lives in an RDB storage (sqlite by default), so an interrupted sweep
resumes where it stopped and several workers (threads here, or processes/SLURM array tasks
sharing the storage) can run trials in parallel.
"""

from __future__ import annotations

import logging
import math
import threading
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import optuna
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import DictConfig, OmegaConf

from musicdiff.config.paths import config_dir
from musicdiff.sweeps.space import suggest, to_overrides
from musicdiff.tracking.base import RunLogger

log = logging.getLogger("musicdiff.sweep")
_COMPOSE_LOCK = threading.Lock()  # Hydra's global state is not thread-safe


def compose_config(name: str, overrides: Sequence[str]) -> DictConfig:
    """Compose ``conf/<name>.yaml`` with overrides outside of a Hydra app."""
    with _COMPOSE_LOCK:
        GlobalHydra.instance().clear()
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            return compose(config_name=name, overrides=list(overrides))


def run_generate_eval(trial_dir: Path, overrides: Sequence[str], eval_overrides: Sequence[str]) -> dict[str, float]:
    """Generate with the trial's overrides, then evaluate the generated folder."""
    from musicdiff.cli.evaluate import evaluate
    from musicdiff.cli.generate import generate

    gen_cfg = compose_config("generate", [*overrides, "logger=none", f"paths.output_dir={trial_dir / 'generate'}"])
    paths = generate(gen_cfg)
    ev_cfg = compose_config("evaluate", [*eval_overrides, "logger=none", f"generated_dir={paths[0].parent}",
                                         f"paths.output_dir={trial_dir / 'evaluate'}"])
    return evaluate(ev_cfg)


def run_train(trial_dir: Path, overrides: Sequence[str], eval_overrides: Sequence[str]) -> dict[str, float]:  # noqa: ARG001
    """Train with the trial's overrides; the objective is a final training metric."""
    from musicdiff.cli.train import train

    cfg = compose_config("train", [*overrides, "logger=none", f"paths.output_dir={trial_dir}"])
    return train(cfg)


RUNNERS: dict[str, Callable[[Path, Sequence[str], Sequence[str]], dict[str, float]]] = {
    "generate_eval": run_generate_eval,
    "train": run_train,
}


def run_sweep(cfg: DictConfig, logger: RunLogger, sweep_dir: Path) -> optuna.Study:
    """Run (or resume) the study described by a composed ``conf/sweep.yaml``.

    Returns:
        The Optuna study (``study.best_trial`` holds the best overrides).
    """
    if cfg.kind not in RUNNERS:
        raise ValueError(f"sweep kind must be one of {sorted(RUNNERS)}, got {cfg.kind!r}")
    runner = RUNNERS[cfg.kind]
    space: Mapping[str, Any] = OmegaConf.to_container(cfg.search_space, resolve=True)  # type: ignore[assignment]
    storage = cfg.storage
    if storage.startswith("sqlite:///"):
        Path(storage[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    sampler = optuna.samplers.TPESampler(seed=int(cfg.seed))
    study = optuna.create_study(study_name=cfg.study_name, storage=storage, direction=cfg.direction,
                                sampler=sampler, load_if_exists=True)
    logger_factory = _child_logger_factory(cfg, logger)
    base = list(cfg.base_overrides)
    eval_base = list(cfg.eval_overrides)

    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        trial_dir = sweep_dir / f"trial_{trial.number:04d}"
        child = logger_factory()
        child.start(trial_dir, {**params, "trial": trial.number}, tags={"mlflow.runName": f"trial_{trial.number}"})
        try:
            metrics = runner(trial_dir, [*base, *to_overrides(params)], eval_base)
        except Exception:
            child.finish("FAILED")
            raise
        value = float(metrics.get(cfg.objective, math.nan))
        child.log_metrics({k: float(v) for k, v in metrics.items()}, step=trial.number)
        child.finish("FINISHED")
        if not math.isfinite(value):
            raise optuna.TrialPruned(f"objective {cfg.objective!r} missing or not finite in {sorted(metrics)}")
        return value

    remaining = max(0, int(cfg.n_trials) - len([t for t in study.trials if t.state.is_finished()]))
    if remaining:
        study.optimize(objective, n_trials=remaining, n_jobs=int(cfg.n_jobs), catch=(RuntimeError, ValueError))
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    if done:
        best = study.best_trial
        logger.log_metrics({f"best/{cfg.objective}": best.value}, step=len(study.trials))
        logger.set_tags({f"best.{k}": str(v) for k, v in best.params.items()})
        log.info("best trial %d: %s = %.5g with %s", best.number, cfg.objective, best.value, best.params)
    return study


def _child_logger_factory(cfg: DictConfig, parent: RunLogger) -> Callable[[], RunLogger]:
    from hydra.utils import instantiate

    def make() -> RunLogger:
        node = OmegaConf.to_container(cfg.logger, resolve=True)
        if isinstance(node, dict) and "parent_run_id" in node:
            node["parent_run_id"] = parent.run_id
        return instantiate(node)

    return make
