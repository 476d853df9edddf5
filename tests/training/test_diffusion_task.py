"""Tests of the diffusion training task: optimisers, CFG dropout, EMA, learning, demos, export."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.diffusion import UniformTimesteps, VObjectiveLoss
from musicdiff.models.conditioners import ConditionerSet, LUTConditioner, NumberConditioner
from musicdiff.models.dit import DiffusionTransformer
from musicdiff.sampling.samplers import sample_dpmpp_2m
from musicdiff.sampling.spec import SamplerSpec
from musicdiff.training.lr_schedules import InverseLR
from musicdiff.training.tasks.diffusion import DiffusionTask, EMAWarmup

CONF = Path(__file__).resolve().parents[2] / "conf"


class FakeAutoencoder(torch.nn.Module):
    """Average-pools audio into latents (2 audio channels -> 4 latent channels) and back."""

    sample_rate, io_channels, latent_dim, downsampling_ratio = 800, 2, 4, 16

    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def encode(self, audio, sample=True):
        z = F.avg_pool1d(audio, self.downsampling_ratio) * self.scale
        return torch.cat([z, -z], dim=1)

    def decode(self, latents):
        return latents[:, :2].repeat_interleave(self.downsampling_ratio, dim=-1)


class FakeCtx:
    """What the Trainer's StepContext does, without Accelerate."""

    def __init__(self, optimizers):
        self.optimizers = optimizers

    def backward_step(self, name, loss):
        opt, sched = self.optimizers[name]
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad(set_to_none=True)
        return True


class FakeLogger:
    def __init__(self):
        self.audio = []

    def log_audio(self, key, audio, sample_rate, step):
        self.audio.append((key, audio, sample_rate, step))


def _task(lr=3e-3, cfg_dropout_prob=0.1, autoencoder=True, seed=0, **kw):
    torch.manual_seed(seed)
    conditioner = ConditionerSet(
        {
            "prompt": LUTConditioner(16, vocab_size=64, max_tokens=4),
            "seconds_start": NumberConditioner(16, fourier_dim=16),
            "seconds_total": NumberConditioner(16, fourier_dim=16),
        },
        cross_attn_ids=["prompt", "seconds_start", "seconds_total"],
        global_ids=["seconds_start", "seconds_total"],
        cond_dim=16,
        global_cond_dim=32,
    )
    dit = DiffusionTransformer(4, 32, 2, 2, cond_token_dim=16, global_cond_dim=32)
    return DiffusionTask(
        dit,
        conditioner,
        VObjectiveLoss(UniformTimesteps()),
        optimizer=partial(torch.optim.AdamW, lr=lr, weight_decay=0.0),
        lr_schedule=partial(InverseLR, inv_gamma=1e6, power=0.5, warmup=0.0),
        autoencoder=FakeAutoencoder() if autoencoder else None,
        cfg_dropout_prob=cfg_dropout_prob,
        demo_prompts=["up", "down"],
        demo_seconds=0.4,
        sampler=kw.pop("sampler", None) or SamplerSpec(sample_dpmpp_2m, steps=20, cfg_scale=1.5, sigma_min=0.02,
                                                       sigma_max=80.0),
        **kw,
    )


def _batch(n=8, length=8, seed=0):
    """'up' -> latents +1, 'down' -> latents -1 (plus a little noise)."""
    g = torch.Generator().manual_seed(seed)
    sign = torch.tensor([1.0, -1.0]).repeat(n // 2)
    latents = sign[:, None, None] + 0.05 * torch.randn(n, 4, length, generator=g)
    meta = [{"prompt": "up" if s > 0 else "down", "seconds_start": 0.0, "seconds_total": 0.4} for s in sign]
    return {"latents": latents, "padding_mask": torch.ones(n, length, dtype=torch.bool), "metadata": meta}


def test_configure_optimizers_covers_trainable_parts_only():
    task = _task()
    task.conditioner.conditioners["seconds_total"].requires_grad_(False)
    (name, (opt, sched)), = task.configure_optimizers().items()
    assert name == "dit" and isinstance(sched, InverseLR)
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert all(id(p) in in_opt for p in task.dit.parameters())
    assert all(id(p) in in_opt for p in task.conditioner.conditioners["prompt"].parameters())
    assert not any(id(p) in in_opt for p in task.conditioner.conditioners["seconds_total"].parameters())
    assert not any(id(p) in in_opt for p in task.ema.parameters())
    assert not any(id(p) in in_opt for p in task.autoencoder.parameters())
    assert set(task.checkpoint_modules()) == {"dit", "ema", "conditioner"}


def test_training_step_uses_cfg_dropout_only_in_training(monkeypatch):
    task = _task(cfg_dropout_prob=1.0)
    seen = []
    monkeypatch.setattr(task.dit, "forward", lambda x, t, **c: seen.append(c) or x * 0 + t[:, None, None])
    ctx = type("Ctx", (), {"backward_step": lambda self, name, loss: True})()
    task.train()
    out = task.training_step(_batch(), 0, ctx)
    assert set(out) == {"loss", "t_mean"} and isinstance(out["loss"], float)
    assert seen[-1]["cross_attn_cond"].abs().sum() == 0
    task.eval()
    task.training_step(_batch(), 0, ctx)
    assert seen[-1]["cross_attn_cond"].abs().sum() > 0


def test_audio_batches_are_encoded_with_a_latent_padding_mask():
    task = _task()
    audio = torch.randn(2, 2, 16 * 10)
    mask = torch.zeros(2, 160, dtype=torch.bool)
    mask[0, :] = True
    mask[1, :50] = True  # 50 samples -> frames 0..3 real (frame 3 partly)
    latents, lmask = task.latents_from_batch({"audio": audio, "padding_mask": mask})
    assert latents.shape == (2, 4, 10)
    assert lmask[0].all() and lmask[1].tolist() == [True] * 4 + [False] * 6
    assert not any(p.requires_grad for p in task.autoencoder.parameters())
    task.train()
    assert not task.autoencoder.training and not task.ema.training
    with pytest.raises(ValueError, match="no autoencoder"):
        _task(autoencoder=False).latents_from_batch({"audio": audio})
    with pytest.raises(ValueError, match="'latents' or 'audio'"):
        task.latents_from_batch({"metadata": []})


def test_ema_warmup_and_update():
    avg = EMAWarmup(0.999, power=0.75)
    assert avg.decay(1) == pytest.approx(1 - 2**-0.75)
    assert avg.decay(1e9) == 0.999
    task = _task()
    ref = [p.detach().clone() for p in task.dit.parameters()]
    with torch.no_grad():
        for p in task.dit.parameters():
            p.add_(1.0)
    task.on_step_end(1)  # the first update copies the weights
    for e, p in zip(task.ema.module.parameters(), task.dit.parameters()):
        torch.testing.assert_close(e, p)
    with torch.no_grad():
        for p in task.dit.parameters():
            p.add_(1.0)
    task.on_step_end(2)
    d = EMAWarmup(0.9999).decay(1)
    for e, r in zip(task.ema.module.parameters(), ref):
        torch.testing.assert_close(e, r + 1.0 + (1 - d))


def test_task_learns_conditional_latents_and_demos_and_exports():
    """A tiny DiT learns 'up' -> +1 / 'down' -> -1; guided EMA samples follow the prompt."""
    task = _task(ema_beta=0.99)
    ctx = FakeCtx(task.configure_optimizers())
    task.train()
    losses = []
    for step in range(250):
        losses.append(task.training_step(_batch(seed=step), step, ctx)["loss"])
        task.on_step_end(step + 1)
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.5 * first, (first, last)
    task.eval()
    with torch.no_grad():
        latents = task.generate(["up", "down"], 0.4)
    assert latents.shape == (2, 4, 20)
    assert latents[0].mean() > 0.5 and latents[1].mean() < -0.5, latents.mean(dim=(1, 2))
    # demo logs one [C, T] clip per prompt
    logger = FakeLogger()
    task.demo(7, logger)
    assert [a[0] for a in logger.audio] == ["demo/0", "demo/1"]
    key, audio, sr, step = logger.audio[0]
    assert audio.shape == (2, 320) and sr == 800 and step == 7
    # export: the EMA DiT, the conditioner and the frozen autoencoder (a self-contained export)
    exported = task.export()
    assert set(exported) == {"dit", "conditioner", "autoencoder"} and exported["dit"] is task.ema.module
    assert exported["autoencoder"] is task.autoencoder
    fresh = DiffusionTransformer(4, 32, 2, 2, cond_token_dim=16, global_cond_dim=32)
    fresh.load_state_dict(exported["dit"].state_dict())


def test_generation_is_deterministic_and_demo_skips_without_autoencoder():
    task = _task()
    task.eval()
    a = task.generate(["up"], 0.2)
    b = task.generate(["up"], 0.2)
    torch.testing.assert_close(a, b)
    logger = FakeLogger()
    _task(autoencoder=False).demo(0, logger)
    assert logger.audio == []


def test_task_config_instantiates():
    root = OmegaConf.create(
        {
            "autoencoder": None,
            "dit": OmegaConf.load(CONF / "dit" / "tiny.yaml"),
            "conditioner": OmegaConf.load(CONF / "conditioner" / "lut_timing_tiny.yaml"),
            "diffusion": OmegaConf.load(CONF / "diffusion" / "v_objective.yaml"),
            "optim": OmegaConf.load(CONF / "optim" / "adamw.yaml"),
            "lr_schedule": OmegaConf.load(CONF / "lr_schedule" / "inverse.yaml"),
            "sampler": None,
            "adapter": OmegaConf.load(CONF / "adapter" / "none.yaml"),
            "task": OmegaConf.load(CONF / "task" / "diffusion.yaml"),
        }
    )
    root.dit.io_channels = 16
    task = instantiate(root.task)
    assert isinstance(task, DiffusionTask) and task.cfg_dropout_prob == 0.1 and task.ema_beta == 0.9999
    opt, sched = task.configure_optimizers()["dit"]
    assert isinstance(sched, InverseLR)
    batch = {
        "latents": torch.randn(2, 16, 12),
        "metadata": [{"prompt": "sine tone", "seconds_start": 0, "seconds_total": 1.0}] * 2,
    }
    out = task.training_step(batch, 0, FakeCtx({"dit": (opt, sched)}))
    assert torch.isfinite(torch.tensor(out["loss"]))
