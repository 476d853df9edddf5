"""`musicdiff-evaluate`: score a folder of audio (any system) against references and prompts.

Examples:
    musicdiff-evaluate generated_dir=outputs/demo/generate/audio reference_dir=outputs/data/synthetic
    musicdiff-evaluate metrics=proxies generated_dir=gen/ reference_dir=refs/   # weight-free, fastest
    musicdiff-evaluate metrics=clap generated_dir=gen/ prompts=gen/generations.jsonl
    musicdiff-evaluate reconstruction=true generated_dir=recon/ reference_dir=orig/ metrics.metrics={}
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import hydra
from hydra.utils import instantiate
from omegaconf import DictConfig

from musicdiff.cli.common import tracked_run
from musicdiff.config.paths import config_dir
from musicdiff.config.runtime import atomic_write_text, prepare_run

log = logging.getLogger("musicdiff")


def _log_window_curves(suite, results: dict[str, float], run_dir, logger) -> None:
    """Long-form per-window metrics as curves: one metric per curve with ``step = window index``, and a plot.

    ``longform_fd_w<k>`` becomes ``eval/longform_fd_by_window`` at step ``k`` (likewise
    ``longform_repetition_w<k>`` and, with a CLAP model, ``longform_clap_w<k>``), and
    ``longform_curves.png`` in the run dir (MLflow artifact).
    """
    from musicdiff.evaluation.longform import LongformMetrics, window_curves

    longform = [m for m in suite if isinstance(m, LongformMetrics)]
    curves = window_curves(results, [m.name for m in longform]) if longform else {}
    if not curves:
        return
    for name, points in curves.items():
        for k, value in points:
            logger.log_metrics({f"eval/{name}_by_window": value}, k)
    from musicdiff.tracking.plots import curves_figure, save_figure

    path, tmp = run_dir / "longform_curves.png", run_dir / ".longform_curves.tmp.png"
    save_figure(curves_figure(curves, longform[0].window_seconds, "long-form metrics per window"), tmp)
    os.replace(tmp, path)  # never a half-written plot
    logger.log_artifact(path)


def _prompts_source(cfg: DictConfig) -> str | None:
    """``prompts=...``, else the generated folder's ``generations.jsonl`` (musicdiff-generate's), else ``None``."""
    from musicdiff.sampling.outputs import GENERATIONS_MANIFEST

    if cfg.prompts:
        return str(cfg.prompts)
    manifest = Path(str(cfg.generated_dir)) / GENERATIONS_MANIFEST
    if manifest.is_file():
        log.info("prompts from %s", manifest)
        return str(manifest)
    return None


def evaluate(cfg: DictConfig) -> dict[str, float]:
    """Compute the configured metrics; returns ``{metric: value}`` (also logged and saved)."""
    from musicdiff.evaluation.folder_eval import evaluate_folders

    if not cfg.generated_dir:
        raise ValueError("generated_dir=... is required (a folder of audio to score)")
    run_dir, digest = prepare_run(cfg)
    results: dict[str, float] = {}
    with tracked_run(cfg, run_dir, digest, "evaluate") as logger:
        suite = instantiate(cfg.metrics)
        if len(suite):
            results.update(evaluate_folders(cfg.generated_dir, cfg.reference_dir, _prompts_source(cfg), suite))
        if cfg.reconstruction:
            from musicdiff.evaluation.reconstruction import evaluate_reconstruction_folders

            if not cfg.reference_dir:
                raise ValueError("reconstruction=true needs reference_dir=... (the original audio)")
            results.update(evaluate_reconstruction_folders(cfg.generated_dir, cfg.reference_dir, cfg.sample_rate))
        logger.log_metrics({f"eval/{k}": float(v) for k, v in results.items()}, 0)
        atomic_write_text(run_dir / "metrics.json", json.dumps(results, indent=2))
        logger.log_artifact(run_dir / "metrics.json")
        _log_window_curves(suite, results, run_dir, logger)
    for k, v in results.items():
        log.info("%s = %.6g", k, v)
    return results


@hydra.main(version_base="1.3", config_path=config_dir(), config_name="evaluate")
def main(cfg: DictConfig) -> float:
    """Hydra entry point; returns the first metric (for sweepers)."""
    results = evaluate(cfg)
    return float(next(iter(results.values()), float("nan")))


if __name__ == "__main__":
    main()
