"""AutoencoderTask: optimisers from config, both updates, NaN guard, warm-up, EMA, export, demo, learning."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from musicdiff.evaluation.reconstruction import stft_distance
from musicdiff.losses.stft import MultiResolutionSTFTLoss
from musicdiff.training.tasks.autoencoder import AutoencoderTask
from tests.helpers.threads import single_thread  # noqa: F401  (autouse: one intra-op thread)

CONF = Path(__file__).resolve().parents[2] / "conf"


class StubCtx:
    """Stand-in for the Trainer's StepContext: backward, step, zero_grad; skip non-finite losses."""

    def __init__(self, optimizers):
        self.optimizers = optimizers
        self.calls: list[str] = []

    def backward_step(self, name, loss):
        self.calls.append(name)
        opt, sched = self.optimizers[name]
        if not torch.isfinite(loss.detach()).all():
            opt.zero_grad(set_to_none=True)
            return False
        loss.backward()
        opt.step()
        if sched is not None:
            sched.step()
        opt.zero_grad(set_to_none=True)
        return True


class RecordingLogger:
    def __init__(self):
        self.audio, self.figures, self.metrics = {}, {}, {}

    def log_audio(self, key, audio, sample_rate, step):
        self.audio[key] = (audio, sample_rate, step)

    def log_figure(self, key, figure, step):
        self.figures[key] = step

    def log_metrics(self, metrics, step):
        self.metrics.update(metrics)


def _cfg(**task_overrides):
    cfg = OmegaConf.create({"autoencoder": OmegaConf.load(CONF / "autoencoder" / "tiny.yaml"),
                            "task": OmegaConf.load(CONF / "task" / "autoencoder.yaml")})
    cfg.task.discriminator.filters = 8  # keep CPU tests light; the layout is unchanged
    for k, v in task_overrides.items():
        OmegaConf.update(cfg, f"task.{k}", v)
    return cfg


def _task(**overrides) -> AutoencoderTask:
    torch.manual_seed(0)
    return instantiate(_cfg(**overrides).task)


def _batch(b=2, t=4096, seed=0):
    return {"audio": torch.randn(b, 2, t, generator=torch.Generator().manual_seed(seed)) * 0.2}


def test_config_has_paper_hyperparameters():
    task = _task()
    opts = task.configure_optimizers()
    assert set(opts) == {"generator", "discriminator"}
    g, d = opts["generator"][0].param_groups[0], opts["discriminator"][0].param_groups[0]
    assert (g["lr"], tuple(g["betas"]), g["weight_decay"]) == (1.5e-4, (0.8, 0.99), 1e-3)
    assert (d["lr"], tuple(d["betas"]), d["weight_decay"]) == (3e-4, (0.8, 0.99), 1e-3)
    assert isinstance(g["betas"], (tuple, list))  # plain python: weights_only checkpoints load it
    assert (task.mrstft_weight, task.lr_stft_weight, task.adversarial_weight,
            task.feature_matching_weight, task.kl_weight) == (1.0, 0.5, 0.1, 5.0, 1e-4)
    assert task.discriminator.num_scales == 5 and len(task.stft_loss.stft_losses) == 7
    assert sum(p.numel() for p in task.autoencoder.parameters()) == sum(
        p.numel() for group in opts["generator"][0].param_groups for p in group["params"])


def test_training_step_updates_generator_and_discriminator():
    task = _task()
    ctx = StubCtx(task.configure_optimizers())
    ae_before = [p.detach().clone() for p in task.autoencoder.parameters()]
    d_before = [p.detach().clone() for p in task.discriminator.parameters()]
    metrics = task.training_step(_batch(), 0, ctx)
    assert ctx.calls == ["discriminator", "generator"]
    for key in ("loss", "mrstft", "stft_left", "stft_right", "kl", "adv_loss", "feature_matching", "disc_loss"):
        assert np.isfinite(metrics[key]), key
    assert metrics["skipped_generator"] == metrics["skipped_discriminator"] == 0.0
    assert any(not torch.equal(a, b) for a, b in zip(ae_before, task.autoencoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(d_before, task.discriminator.parameters()))
    assert all(p.requires_grad for p in task.discriminator.parameters())  # unfrozen after the generator pass


def test_nan_batch_is_skipped_and_reported():
    task = _task()
    ctx = StubCtx(task.configure_optimizers())
    before = [p.detach().clone() for p in task.autoencoder.parameters()]
    batch = _batch()
    batch["audio"][0, 0, 100] = float("nan")
    metrics = task.training_step(batch, 0, ctx)
    assert metrics["skipped_generator"] == 1.0 and metrics["skipped_discriminator"] == 1.0
    assert all(torch.equal(a, b) for a, b in zip(before, task.autoencoder.parameters()))
    assert all(p.grad is None for p in task.autoencoder.parameters())


def test_adversarial_warmup():
    task = _task(adversarial_warmup_steps=3)
    ctx = StubCtx(task.configure_optimizers())
    assert "adv_loss" not in task.training_step(_batch(), 2, ctx)
    assert "adv_loss" in task.training_step(_batch(), 3, ctx)


def test_ema_export_and_demo():
    task = _task(ema_beta=0.5)
    ctx = StubCtx(task.configure_optimizers())
    assert task.export()["autoencoder"] is task.autoencoder  # EMA not initialised yet
    task.training_step(_batch(), 0, ctx)
    task.on_step_end(1)  # first update copies the weights
    ema = task.export()["autoencoder"]
    assert ema is not task.autoencoder and type(ema) is type(task.autoencoder)
    old = [p.detach().clone() for p in ema.parameters()]
    task.training_step(_batch(seed=1), 1, ctx)
    task.on_step_end(2)
    for o, e, r in zip(old, ema.parameters(), task.autoencoder.parameters()):
        assert torch.allclose(e, 0.5 * o + 0.5 * r.detach(), atol=1e-6)
    assert set(ema.state_dict()) == set(task.autoencoder.state_dict())  # exported keys = AudioAutoencoder keys
    logger = RecordingLogger()
    task.eval()
    task.demo(2, logger)
    assert set(logger.audio) == {"demo/real", "demo/reconstruction"}
    audio, sr, step = logger.audio["demo/reconstruction"]
    assert audio.shape == (2, 4096) and sr == 16000 and step == 2
    assert "demo/reconstruction_spectrogram" in logger.figures and "demo/si_sdr" in logger.metrics


def test_bad_batch_raises():
    task = _task()
    with pytest.raises(ValueError, match="batch\\['audio'\\]"):
        task.training_step({"audio": torch.zeros(1, 1, 4096)}, 0, StubCtx(task.configure_optimizers()))


def _tones(n: int, t: int, sr: int = 16000, seed: int = 0) -> torch.Tensor:
    """Stereo mixtures of two panned sines from a small pitch set."""
    rng = np.random.default_rng(seed)
    time = np.arange(t) / sr
    out = np.zeros((n, 2, t), np.float32)
    for i in range(n):
        for _ in range(2):
            f = rng.choice([220.0, 330.0, 440.0, 550.0, 660.0, 880.0])
            s = rng.uniform(0.1, 0.3) * np.sin(2 * np.pi * f * time + rng.uniform(0, 2 * np.pi))
            pan = rng.uniform(0.2, 0.8)
            out[i, 0] += (1 - pan) * s
            out[i, 1] += pan * s
    return torch.from_numpy(out)


@pytest.mark.slow
def test_tiny_autoencoder_learns_tones():
    """The tiny VAE with SA2's transposed-conv decoder, trained by the task on synthetic tones, clearly
    reduces its STFT distance. (The tiny preset's nearest-upsample decoder is exercised end to end by
    tests/cli/test_pipeline_learns_pitch.py.)"""
    torch.manual_seed(0)
    cfg = _cfg()
    cfg.autoencoder.decoder.use_nearest_upsample = False
    ae = instantiate(cfg.autoencoder)
    task = AutoencoderTask(ae, partial(torch.optim.AdamW, lr=3e-3, betas=(0.8, 0.99), weight_decay=1e-3),
                           stft_loss=MultiResolutionSTFTLoss([512, 256, 128, 64, 32], sample_rate=16000),
                           ema_beta=None)
    ctx = StubCtx(task.configure_optimizers())
    train, test = _tones(64, 4096, seed=1), _tones(8, 8000, seed=2)

    sa2_stft = MultiResolutionSTFTLoss(sample_rate=16000)  # the paper's 7 A-weighted resolutions

    def distances() -> tuple[float, float]:
        ae.eval()
        with torch.no_grad():
            recon = ae(test, sample=False)
        ae.train()
        return sa2_stft(recon, test).item(), stft_distance(recon, test).item()

    initial = distances()
    gen = torch.Generator().manual_seed(0)
    for step in range(80):
        idx = torch.randint(0, len(train), (4,), generator=gen)
        metrics = task.training_step({"audio": train[idx]}, step, ctx)
        assert metrics["skipped_generator"] == 0.0
    final = distances()
    # measured: MR-STFT 5.17 -> ~1.6 (0.31x), DAC STFT distance 9.98 -> ~3.2 (0.32x)
    assert final[0] < 0.5 * initial[0], (initial, final)
    assert final[1] < 0.6 * initial[1], (initial, final)
