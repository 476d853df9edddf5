"""Adversarial training task of the SA2 autoencoder (SA2 §3.1; stable-audio-tools' AutoencoderTrainingWrapper).

Generator objective (paper weights):
``1.0·MRSTFT(mid/side) + 0.5·MRSTFT(left) + 0.5·MRSTFT(right) + 0.1·L_adv + 5.0·L_fm + 1e-4·KL``;
the discriminator minimises its hinge loss. Both optimisers step every training step
(discriminator first, on detached reconstructions). During the first ``adversarial_warmup_steps`` the
generator sees no adversarial / feature-matching term while the discriminator already trains (SAT's
``warmup_mode="adv"``). Non-finite losses are skipped by ``ctx.backward_step`` and counted in the
returned metrics (``skipped_generator`` / ``skipped_discriminator``).

Guards for real music (issue 14; all off by default, so the paper recipe ``oobleck_sa2`` trains with
the published hyper-parameters; ``experiment=tiny_autoencoder`` / ``small_autoencoder`` turn them on):

* ``lr_warmup_steps``: linear learning-rate warm-up of both optimisers (Adam's first steps on loud,
  dense spectra are the ones that throw the latents out of range);
* ``latent_limit`` / ``latent_guard_weight``: a hinge penalty on the RMS of the posterior means
  above ``latent_limit`` per latent channel (the SA2 KL weight 1e-4 alone does not hold the latent
  scale: the KL grew from 6 to 7,097 in the diverged run);
* ``adversarial_ramp_steps``: the adversarial and feature-matching weights rise linearly after the
  warm-up instead of switching on at full strength;
* ``divergence``: a :class:`~musicdiff.training.tasks.divergence.DivergenceGuard` that logs a WARNING
  when the smoothed reconstruction loss or latent scale runs away, and optionally rolls back;
* non-finite latents (encoder output) skip both updates with a WARNING naming the step, before the
  decoder and the discriminator see them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import nn

from musicdiff.evaluation.reconstruction import ReconstructionMetrics
from musicdiff.training.ema import build_ema, update_ema
from musicdiff.losses.discriminator import EncodecDiscriminator
from musicdiff.losses.stft import MultiResolutionSTFTLoss, sum_and_difference
from musicdiff.models.autoencoder import AudioAutoencoder
from musicdiff.training.tasks.base import Task
from musicdiff.training.tasks.divergence import DivergenceGuard

log = logging.getLogger("musicdiff.trainer")

OptimizerFactory = Callable[..., torch.optim.Optimizer]
SchedulerFactory = Callable[..., Any]


@contextlib.contextmanager
def frozen(module: nn.Module) -> Iterator[None]:
    """Temporarily stop gradients flowing into ``module``'s parameters (they still flow through it)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, f in zip(module.parameters(), flags):
            p.requires_grad_(f)


class AutoencoderTask(Task):
    """Holds the autoencoder, its EMA, the discriminator and the losses.

    Args:
        autoencoder: the VAE being trained.
        optimizer_generator: partial optimiser factory ``f(params)`` for the autoencoder
            (SA2: AdamW lr 1.5e-4, betas (0.8, 0.99), wd 1e-3).
        optimizer_discriminator: partial factory for the discriminator (SA2: AdamW lr 3e-4).
        discriminator: ``EncodecDiscriminator`` or None (pure reconstruction training).
        stft_loss: multi-resolution STFT loss (default: SA2's 7 A-weighted resolutions).
        scheduler_generator: optional partial LR scheduler factory ``f(optimizer)``.
        scheduler_discriminator: optional partial LR scheduler factory ``f(optimizer)``.
        mrstft_weight: weight of the mid/side STFT term (stereo) or the plain term (mono).
        lr_stft_weight: weight of each of the left and right STFT terms (stereo only).
        adversarial_weight: weight of the generator's GAN loss.
        feature_matching_weight: weight of feature matching.
        kl_weight: weight of the VAE KL term.
        adversarial_warmup_steps: steps before the generator gets adversarial/feature-matching terms.
        ema_beta: EMA decay of the exported autoencoder (None disables EMA).
        demo_seconds: length of the clip reconstructed by ``demo``.
        lr_warmup_steps: linear warm-up of both learning rates over this many steps (0: none; not
            combinable with a scheduler factory, which then owns the warm-up).
        latent_limit: RMS of the posterior means per latent channel above which the latent guard
            penalises (None: no guard).
        latent_guard_weight: weight of the squared hinge ``sum_d relu(rms_d - latent_limit)^2``.
        adversarial_ramp_steps: steps over which the adversarial/feature-matching weights rise
            linearly from 0 after ``adversarial_warmup_steps`` (0: switch on at full weight).
        divergence: divergence guard (None: off).
    """

    def __init__(self, autoencoder: AudioAutoencoder, optimizer_generator: OptimizerFactory,
                 optimizer_discriminator: OptimizerFactory | None = None,
                 discriminator: EncodecDiscriminator | None = None, stft_loss: nn.Module | None = None,
                 scheduler_generator: SchedulerFactory | None = None,
                 scheduler_discriminator: SchedulerFactory | None = None, mrstft_weight: float = 1.0,
                 lr_stft_weight: float = 0.5, adversarial_weight: float = 0.1, feature_matching_weight: float = 5.0,
                 kl_weight: float = 1e-4, adversarial_warmup_steps: int = 0, ema_beta: float | None = 0.9999,
                 demo_seconds: float = 2.0, lr_warmup_steps: int = 0, latent_limit: float | None = None,
                 latent_guard_weight: float = 1.0, adversarial_ramp_steps: int = 0,
                 divergence: DivergenceGuard | None = None) -> None:
        super().__init__()
        if discriminator is not None and optimizer_discriminator is None:
            raise ValueError("a discriminator needs optimizer_discriminator")
        self.autoencoder = autoencoder
        self.discriminator = discriminator
        self.stft_loss = stft_loss if stft_loss is not None else MultiResolutionSTFTLoss(
            sample_rate=autoencoder.sample_rate, sc_floor=1e-2)
        self.optimizer_generator, self.optimizer_discriminator = optimizer_generator, optimizer_discriminator
        self.scheduler_generator, self.scheduler_discriminator = scheduler_generator, scheduler_discriminator
        self.mrstft_weight, self.lr_stft_weight = mrstft_weight, lr_stft_weight
        self.adversarial_weight, self.feature_matching_weight = adversarial_weight, feature_matching_weight
        self.kl_weight, self.adversarial_warmup_steps = kl_weight, int(adversarial_warmup_steps)
        if ema_beta is not None and not 0.0 <= ema_beta < 1.0:
            raise ValueError(f"ema_beta must be in [0, 1) or null, got {ema_beta}")
        # weights only (use_buffers=False): the VAE's buffers are not averaged
        self.ema = build_ema(autoencoder, ema_beta, use_buffers=False) if ema_beta is not None else None
        self.demo_seconds = demo_seconds
        self._demo_audio: torch.Tensor | None = None
        if lr_warmup_steps < 0 or adversarial_ramp_steps < 0:
            raise ValueError(f"lr_warmup_steps and adversarial_ramp_steps must be >= 0, got {lr_warmup_steps}, "
                             f"{adversarial_ramp_steps}")
        if lr_warmup_steps and (scheduler_generator is not None or scheduler_discriminator is not None):
            raise ValueError("task.lr_warmup_steps and a task.scheduler_* cannot both be set: put the warm-up "
                             "in the scheduler or drop the scheduler")
        if latent_limit is not None and latent_limit <= 0:
            raise ValueError(f"latent_limit must be > 0 or null, got {latent_limit}")
        self.lr_warmup_steps, self.adversarial_ramp_steps = int(lr_warmup_steps), int(adversarial_ramp_steps)
        self.latent_limit, self.latent_guard_weight = latent_limit, float(latent_guard_weight)
        self.divergence = divergence
        self._optimizers: dict[str, tuple[torch.optim.Optimizer, Any]] = {}
        self.nonfinite_latents = 0

    # ------------------------------------------------------------------ optimisers
    def configure_optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, Any]]:
        """``{"generator": (opt, sched|None), "discriminator": (opt, sched|None)}`` (no discriminator: one entry)."""
        opt_g = self.optimizer_generator(self.autoencoder.parameters())
        out = {"generator": (opt_g, self.scheduler_generator(opt_g) if self.scheduler_generator
                             else self._warmup(opt_g))}
        if self.discriminator is not None:
            opt_d = self.optimizer_discriminator(self.discriminator.parameters())
            out["discriminator"] = (opt_d, self.scheduler_discriminator(opt_d) if self.scheduler_discriminator
                                    else self._warmup(opt_d))
        self._optimizers = out
        return out

    def _warmup(self, opt: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR | None:
        """Linear warm-up ``lr·min(1, (k+1)/lr_warmup_steps)`` at optimiser step k (None without warm-up)."""
        if not self.lr_warmup_steps:
            return None
        n = self.lr_warmup_steps
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda k: min(1.0, (k + 1) / n))

    def adversarial_scale(self, step: int) -> float:
        """Multiplier of the adversarial and feature-matching weights at ``step`` (0 during the warm-up)."""
        if self.discriminator is None or step < self.adversarial_warmup_steps:
            return 0.0
        if not self.adversarial_ramp_steps:
            return 1.0
        return min(1.0, (step - self.adversarial_warmup_steps + 1) / self.adversarial_ramp_steps)

    def latent_guard(self, mean: torch.Tensor) -> torch.Tensor:
        """``sum_d relu(rms_d - latent_limit)^2`` over latent channels d of the posterior means ``[B, D, L]``."""
        rms = mean.float().pow(2).mean(dim=(0, 2)).add(1e-12).sqrt()
        return torch.relu(rms - self.latent_limit).pow(2).sum()

    def _guarded_modules(self) -> dict[str, nn.Module]:
        mods: dict[str, nn.Module] = {"autoencoder": self.autoencoder}
        if self.discriminator is not None:
            mods["discriminator"] = self.discriminator
        if self.ema is not None:
            mods["ema"] = self.ema
        return mods

    def _skip_nonfinite_latents(self, step: int, ctx: Any, info: dict[str, torch.Tensor]) -> dict[str, float]:
        """Count, log and skip a step whose encoder output is NaN/inf (the optimisers see a NaN loss,
        so the Trainer's consecutive-skip limit still stops a run that stays broken)."""
        self.nonfinite_latents += 1
        bad = int((~torch.isfinite(info["mean"]) | ~torch.isfinite(info["std"])).sum())
        log.warning("non-finite latents at step %d (%d values of the encoder's mean/std): both updates skipped; "
                    "lower the learning rate or check the data with `python -m musicdiff.data.report`", step, bad)
        nan = torch.tensor(float("nan"), device=info["mean"].device)
        metrics = {"nonfinite_latents": float(self.nonfinite_latents)}
        for name in self._optimizers or ("generator",):
            metrics[f"skipped_{name}"] = float(not ctx.backward_step(name, nan))
        return metrics

    # ------------------------------------------------------------------ losses
    def reconstruction_losses(self, decoded: torch.Tensor, reals: torch.Tensor) -> dict[str, torch.Tensor]:
        """Unweighted STFT terms: ``mrstft`` (mid/side for stereo) and ``stft_left`` / ``stft_right``."""
        if reals.shape[1] == 2:
            (dm, ds), (rm, rs) = sum_and_difference(decoded), sum_and_difference(reals)
            return {"mrstft": (self.stft_loss(dm, rm) + self.stft_loss(ds, rs)) / 2,
                    "stft_left": self.stft_loss(decoded[:, :1], reals[:, :1]),
                    "stft_right": self.stft_loss(decoded[:, 1:], reals[:, 1:])}
        return {"mrstft": self.stft_loss(decoded, reals)}

    def training_step(self, batch: dict[str, Any], step: int, ctx: Any) -> dict[str, float]:
        """One discriminator and one generator update on ``batch["audio"] [B, C, T]``."""
        reals = batch["audio"]
        if reals.dim() != 3 or reals.shape[1] != self.autoencoder.io_channels:
            raise ValueError(f"batch['audio'] must be [B, {self.autoencoder.io_channels}, T], got {tuple(reals.shape)}")
        latents, info = self.autoencoder.encode_with_info(reals)
        if not (torch.isfinite(info["mean"]).all() and torch.isfinite(info["std"]).all()):
            return self._skip_nonfinite_latents(step, ctx, info)
        decoded = self.autoencoder.decode(latents)[..., : reals.shape[-1]]
        metrics: dict[str, float] = {}
        terms = self.reconstruction_losses(decoded, reals)
        recon = self.mrstft_weight * terms["mrstft"]
        if "stft_left" in terms:
            recon = recon + self.lr_stft_weight * (terms["stft_left"] + terms["stft_right"])
        latent_rms = float(info["mean"].detach().float().pow(2).mean().sqrt())
        if self.divergence is not None:
            reason = self.divergence.observe(step, float(recon.detach()), latent_rms)
            if reason is not None and self.divergence.handle(step, reason, self._guarded_modules(), self._optimizers):
                return {**self.divergence.metrics(), "latent_rms": latent_rms}  # this batch trains nothing

        if self.discriminator is not None:
            loss_d = self.discriminator.discriminator_loss(reals, decoded.detach())
            metrics["disc_loss"] = float(loss_d.detach())
            metrics["skipped_discriminator"] = float(not ctx.backward_step("discriminator", loss_d))

        loss = recon + self.kl_weight * info["kl"]
        if self.latent_limit is not None:
            terms["latent_guard"] = self.latent_guard(info["mean"])
            loss = loss + self.latent_guard_weight * terms["latent_guard"]
        scale = self.adversarial_scale(step)
        if scale > 0:
            with frozen(self.discriminator):
                adv, fm = self.discriminator.generator_loss(reals, decoded)
            loss = loss + scale * (self.adversarial_weight * adv + self.feature_matching_weight * fm)
            terms.update(adv_loss=adv, feature_matching=fm)
        metrics["skipped_generator"] = float(not ctx.backward_step("generator", loss))
        if self.divergence is not None:
            self.divergence.maybe_snapshot(step, self._guarded_modules(), self._optimizers)
            metrics.update(self.divergence.metrics())

        metrics["loss"] = float(loss.detach())
        metrics["kl"] = float(info["kl"].detach())
        metrics.update({k: float(v.detach()) for k, v in terms.items()})
        metrics["latent_std"] = float(latents.detach().float().std())
        metrics["latent_rms"] = latent_rms  # RMS of the posterior means (what the latent guard bounds)
        metrics["posterior_std"] = float(info["std"].detach().float().mean())
        n = int(self.demo_seconds * self.autoencoder.sample_rate)
        self._demo_audio = reals[0, :, :n].detach().float().cpu()
        return metrics

    # ------------------------------------------------------------------ EMA / export / demo
    def on_step_end(self, step: int) -> None:  # noqa: ARG002
        """Update the EMA copy of the autoencoder (ZeRO-3 aware, :func:`musicdiff.training.ema.update_ema`)."""
        if self.ema is not None:
            update_ema(self.ema, self.autoencoder)

    def inference_model(self) -> AudioAutoencoder:
        """The EMA autoencoder once it has been updated, else the raw one."""
        if self.ema is not None and int(self.ema.n_averaged) > 0:
            return self.ema.module
        return self.autoencoder

    def export(self) -> dict[str, nn.Module]:
        """``{"autoencoder": EMA (or raw) AudioAutoencoder}`` for the other entry points."""
        return {"autoencoder": self.inference_model()}

    @torch.no_grad()
    def demo(self, step: int, logger: Any) -> None:
        """Log the last batch's first clip, its reconstruction (posterior mean), a spectrogram and metrics."""
        if self._demo_audio is None:
            return
        model = self.inference_model()
        device = next(model.parameters()).device
        real = self._demo_audio
        recon = model(real[None].to(device), sample=False)[0].float().cpu()
        sr = self.autoencoder.sample_rate
        logger.log_audio("demo/real", real, sr, step)
        logger.log_audio("demo/reconstruction", recon, sr, step)
        metrics = ReconstructionMetrics(sr)(recon[None], real[None]) if real.shape[-1] >= 2048 else {}
        if metrics:
            logger.log_metrics({f"demo/{k}": v for k, v in metrics.items()}, step)
        try:
            import matplotlib.pyplot as plt

            from musicdiff.tracking.plots import spectrogram_figure
        except ImportError:  # plotting helpers not available
            return
        fig = spectrogram_figure(recon, sr, title=f"reconstruction, step {step}")
        logger.log_figure("demo/reconstruction_spectrogram", fig, step)
        plt.close(fig)
