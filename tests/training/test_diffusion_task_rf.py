"""The diffusion training task with the rectified-flow objective: learning with CFG dropout and EMA,
and demo generation with the default (k-diffusion) sampler and with a flow sampler."""

from __future__ import annotations

from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.diffusion import LogitNormalTimesteps, RectifiedFlowLoss
from tests.training.test_diffusion_task import FakeCtx, _batch, _task

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_rectified_flow_task_learns_conditional_latents_with_either_sampler_family():
    task = _task(ema_beta=0.99)
    task.diffusion = RectifiedFlowLoss(LogitNormalTimesteps())
    ctx = FakeCtx(task.configure_optimizers())
    task.train()
    losses = []
    for step in range(250):
        losses.append(task.training_step(_batch(seed=step), step, ctx)["loss"])
        task.on_step_end(step + 1)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)
    task.eval()
    default = task.generate(["up", "down"], 0.4)  # DPM++(2M) on sigmas through FlowSigmaDenoiser
    task.sampler = instantiate(OmegaConf.merge(OmegaConf.load(CONF / "sampler" / "flow_euler.yaml"),
                                               {"steps": 20, "cfg_scale": 1.5}))
    flow = task.generate(["up", "down"], 0.4)
    for latents in (default, flow):
        assert latents.shape == (2, 4, 20)
        assert latents[0].mean() > 0.5 and latents[1].mean() < -0.5, latents.mean(dim=(1, 2))
