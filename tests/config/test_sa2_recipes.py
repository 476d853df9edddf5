"""The paper recipes conf/experiment/sa2_{autoencoder,dit}.yaml: compose with DeepSpeed ZeRO-2 and the
SLURM launcher, carry SA2's published hyper-parameters, and build at full size on the meta device."""

from __future__ import annotations

import pytest
import torch
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import OmegaConf, open_dict

from musicdiff.config import validate_targets
from musicdiff.config.paths import config_dir


def _compose(experiment: str, tmp_path):
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
            cfg = GlobalHydra.instance().hydra.compose_config(
                "train", [f"experiment={experiment}", "trainer=deepspeed_zero2", "hydra/launcher=slurm",
                          f"paths.log_dir={tmp_path}", f"paths.output_dir={tmp_path / 'run'}"],
                run_mode=RunMode.MULTIRUN, with_log_configuration=False)
    finally:
        GlobalHydra.instance().clear()
    assert cfg.trainer.deepspeed.zero_stage == 2 and "SlurmLauncher" in cfg.hydra.launcher._target_
    with open_dict(cfg):
        cfg.pop("hydra")  # the job's config, as the entry point sees it
    validate_targets(cfg)
    OmegaConf.resolve(cfg)
    return cfg


def _params(module: torch.nn.Module) -> float:
    return sum(p.numel() for p in module.parameters()) / 1e6


def test_sa2_autoencoder_recipe(tmp_path, text_model_env):
    cfg = _compose("sa2_autoencoder", tmp_path)
    task = cfg.task
    assert task._target_.endswith("AutoencoderTask")
    assert (task.optimizer_generator.lr, task.optimizer_discriminator.lr) == (1.5e-4, 3.0e-4)
    assert list(task.optimizer_generator.betas) == [0.8, 0.99] and task.optimizer_generator.weight_decay == 1e-3
    assert (task.mrstft_weight, task.lr_stft_weight, task.adversarial_weight, task.feature_matching_weight,
            task.kl_weight) == (1.0, 0.5, 0.1, 5.0, 1e-4)
    assert task.discriminator.filters == 64 and len(task.discriminator.n_ffts) == 5
    assert len(task.stft_loss.fft_sizes) == 7 and task.ema_beta == 0.9999
    with torch.device("meta"):
        ae = instantiate(cfg.autoencoder)
    assert ae.downsampling_ratio == 2048 and ae.latent_dim == 64 and 150 < _params(ae) < 165  # ~157M (SA2)


def test_sa2_dit_recipe(tmp_path, text_model_env):
    cfg = _compose("sa2_dit", tmp_path)
    assert cfg.task._target_.endswith("DiffusionTask") and cfg.task.cfg_dropout_prob == 0.1
    assert cfg.task.ema_beta == 0.9999 and cfg.optim.lr == 5e-5 and list(cfg.optim.betas) == [0.9, 0.999]
    assert cfg.lr_schedule._target_.endswith("InverseLR") and cfg.sampler.steps == 100
    assert cfg.sampler.cfg_scale == 7.0 and (cfg.sampler.sigma_min, cfg.sampler.sigma_max) == (0.3, 500.0)
    assert cfg.diffusion._target_ == "musicdiff.diffusion.VObjectiveLoss"  # v-objective, t ~ U[0, 1]
    assert cfg.diffusion.timestep_density._target_ == "musicdiff.diffusion.UniformTimesteps"
    assert cfg.dataset.window_latents == 4096  # SA2 pre-training context (3m10s)
    with torch.device("meta"):
        dit, ae = instantiate(cfg.dit), instantiate(cfg.autoencoder)
    assert (dit.width, len(dit.transformer.layers), dit.io_channels) == (1536, 24, 64)
    assert 1000 < _params(dit) < 1150 and ae.latent_dim == 64  # ~1.06-1.1B (SA2)
    cond = instantiate(cfg.conditioner)  # the CLAP text tower (a tiny local one here) + timing
    assert type(cond.conditioners["prompt"]).__name__ == "CLAPTextConditioner"
