"""Training task for the latent diffusion transformer (SA2 stage 2).

Evans et al., "Long-form music generation with latent diffusion" (SA2, arXiv 2404.10301) §3-4:
the DiT is trained with the v-objective on autoencoder latents (pre-encoded shards, or audio
encoded on the fly by the frozen autoencoder), conditioned on text and timing, with condition
dropout 0.1 for classifier-free guidance (Ho & Salimans, arXiv 2207.12598) and an EMA of the
weights (beta 0.9999) used for inference. The Trainer (``musicdiff.training.trainer``) drives
this module through ``configure_optimizers`` / ``training_step`` / ``on_step_end`` / ``demo`` /
``export``.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from musicdiff.adapters.training import AdapterTraining, as_spec
from musicdiff.diffusion.cfg_dropout import cfg_dropout, null_cond
from musicdiff.diffusion.objectives import make_denoiser

log = logging.getLogger("musicdiff.tasks.diffusion")


def _sigmas(n: int, sigma_min: float, sigma_max: float, device: torch.device) -> torch.Tensor:
    try:
        from musicdiff.sampling.schedules import get_sigmas_polyexponential
    except ImportError:  # pragma: no cover - sampling not installed
        s = torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), n, device=device))
        return torch.cat([s, s.new_zeros(1)])
    return get_sigmas_polyexponential(n, sigma_min, sigma_max, 1.0, device=device)


def _euler(model: Callable, x: torch.Tensor, sigmas: torch.Tensor, extra_args=None, callback=None, disable=None):
    """Fallback Euler sampler (Karras et al. 2022, Algorithm 2 without the Heun correction)."""
    extra_args = extra_args or {}
    for i in range(len(sigmas) - 1):
        sigma = sigmas[i] * x.new_ones(x.shape[0])
        denoised = model(x, sigma, **extra_args)
        x = x + (x - denoised) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    return x


def _default_sampler() -> Callable:
    try:
        from musicdiff.sampling.samplers import sample_dpmpp_2m
    except ImportError:  # pragma: no cover - sampling not installed
        return _euler
    return sample_dpmpp_2m


class _GuidedDenoiser:
    """Minimal CFG over a denoiser, used only if ``musicdiff.sampling.guidance`` is missing."""

    def __init__(self, denoiser: Callable, scale: float) -> None:
        self.denoiser, self.scale = denoiser, scale

    def __call__(self, x, sigma, cond=None, uncond=None):
        if uncond is None or self.scale == 1.0:
            return self.denoiser(x, sigma, **(cond or {}))
        both = {k: None if v is None else torch.cat([v, uncond[k]]) for k, v in cond.items()}
        d_c, d_u = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), **both).chunk(2)
        return d_u + self.scale * (d_c - d_u)


def _guided(denoiser: Callable, scale: float) -> Callable:
    try:
        from musicdiff.sampling.guidance import CFGDenoiser
    except ImportError:  # pragma: no cover - sampling not installed
        return _GuidedDenoiser(denoiser, scale)
    return CFGDenoiser(denoiser, scale=scale)


class EMAWarmup:
    """EMA update with a warmed-up decay, as a ``multi_avg_fn`` for ``AveragedModel``.

    ``decay(n) = min(beta, 1 − (1 + n/inv_gamma)^(−power))`` after ``n`` updates (the EMA warmup
    of k-diffusion / ema-pytorch that stable-audio-tools trains with, power 3/4), so the average
    tracks the model early in training and approaches ``beta`` later.
    """

    def __init__(self, beta: float, power: float = 0.75, inv_gamma: float = 1.0) -> None:
        self.beta, self.power, self.inv_gamma = beta, power, inv_gamma

    def decay(self, n: float) -> float:
        """The decay used for update number ``n`` (n >= 1)."""
        return min(self.beta, max(0.0, 1.0 - (1.0 + n / self.inv_gamma) ** -self.power))

    @torch.no_grad()
    def __call__(self, ema_params: list, model_params: list, num_averaged: torch.Tensor) -> None:
        torch._foreach_lerp_(ema_params, model_params, 1.0 - self.decay(float(num_averaged)))


class DiffusionTask(nn.Module):
    """Everything trained in stage 2: the DiT (+ its EMA) and the trainable conditioners.

    Args:
        dit: the v-predicting network (:class:`musicdiff.models.dit.DiffusionTransformer`).
        conditioner: a :class:`musicdiff.models.conditioners.ConditionerSet`.
        diffusion: the loss ``diffusion(model, x0, cond, padding_mask) -> (loss, info)``
            (:class:`musicdiff.diffusion.VObjectiveLoss` or :class:`~musicdiff.diffusion.RectifiedFlowLoss`;
            its ``objective`` attribute picks the denoiser for demos).
        optimizer: partial optimiser ``optimizer(params) -> Optimizer`` (Hydra ``_partial_``).
        lr_schedule: partial scheduler ``lr_schedule(optimizer) -> LRScheduler`` or None.
        autoencoder: frozen autoencoder; encodes ``batch["audio"]`` on the fly and decodes demos.
        ema_beta: EMA decay of the DiT weights (0.9999 in SA2).
        ema_warmup_power: EMA warmup exponent (:class:`EMAWarmup`; 0.75 as SAT); 0 = constant
            ``ema_beta`` from the first update (``get_ema_multi_avg_fn``).
        cfg_dropout_prob: probability of training an item unconditionally (0.1 in SA2).
        demo_prompts: prompts generated by :meth:`demo`.
        demo_seconds: length of each demo clip (also its ``seconds_total``).
        demo_steps: sampler steps for demos (without ``sampler``).
        demo_cfg_scale: classifier-free guidance scale for demos (without ``sampler``).
        demo_sigma_min: smallest sampling noise level (without ``sampler``; SAO: 0.3).
        demo_sigma_max: largest sampling noise level (without ``sampler``; SAO: 500).
        demo_seed: noise seed, fixed so demos are comparable across steps.
        sampler: a :class:`musicdiff.sampling.SamplerSpec` (the ``sampler`` config group) used for
            demos; None = DPM++ 2M (Euler without ``musicdiff.sampling``) with the ``demo_*``
            steps, guidance scale and sigma range below.
        freeze: dotted names of submodules that do not train, e.g. ``[conditioner]`` (text and timing
            conditioners frozen), ``[conditioner.conditioners.prompt]`` or ``[dit.transformer.layers.0]``;
            their parameters get no gradients and no optimiser state (fine-tuning switches).
        adapter: an :class:`musicdiff.adapters.AdapterSpec` (the ``adapter`` config group); unless its
            kind is ``none`` only the adapter trains (base DiT and conditioners frozen), the EMA
            averages the adapter alone and the export is ``adapter.safetensors``
            (:class:`musicdiff.adapters.training.AdapterTraining`).
        adapter_ab_every: with an adapter, demos at steps that are multiples of this also generate
            without the adapter and log the distances (0: at every demo).
    """

    def __init__(
        self,
        dit: nn.Module,
        conditioner: nn.Module,
        diffusion: nn.Module,
        optimizer: Callable[..., torch.optim.Optimizer],
        lr_schedule: Callable[..., Any] | None = None,
        autoencoder: nn.Module | None = None,
        ema_beta: float = 0.9999,
        ema_warmup_power: float = 0.75,
        cfg_dropout_prob: float = 0.1,
        demo_prompts: Sequence[str] = ("a calm piano melody", "energetic drums and bass"),
        demo_seconds: float = 2.0,
        demo_steps: int = 25,
        demo_cfg_scale: float = 3.0,
        demo_sigma_min: float = 0.3,
        demo_sigma_max: float = 500.0,
        demo_seed: int = 0,
        sampler: Any | None = None,
        freeze: Sequence[str] = (),
        adapter: Any | None = None,
        adapter_ab_every: int = 0,
    ) -> None:
        super().__init__()
        if not 0.0 <= ema_beta < 1.0:
            raise ValueError(f"ema_beta must be in [0, 1), got {ema_beta}")
        if not 0.0 <= cfg_dropout_prob <= 1.0:
            raise ValueError(f"cfg_dropout_prob must be in [0, 1], got {cfg_dropout_prob}")
        self.dit = dit
        self.conditioner = conditioner
        self.diffusion = diffusion
        self.autoencoder = autoencoder
        if autoencoder is not None:
            autoencoder.requires_grad_(False).eval()
        avg_fn = (
            EMAWarmup(ema_beta, ema_warmup_power) if ema_warmup_power > 0 else get_ema_multi_avg_fn(ema_beta)
        )
        self.freeze = list(freeze)
        self._freeze(self.freeze)
        spec = as_spec(adapter)
        self.adapter = None if spec is None else AdapterTraining(dit, spec, conditioner, avg_fn, adapter_ab_every)
        if self.adapter is not None:
            self.ema = self.adapter.ema  # the adapter's EMA only: no copy of the frozen base
        else:
            self.ema = AveragedModel(dit, multi_avg_fn=avg_fn, use_buffers=True)
        self.ema.requires_grad_(False)
        self.ema_beta = ema_beta
        self.cfg_dropout_prob = cfg_dropout_prob
        self._optimizer = optimizer
        self._lr_schedule = lr_schedule
        self.demo_prompts = list(demo_prompts)
        self.demo_seconds = float(demo_seconds)
        self.demo_steps = int(demo_steps)
        self.demo_cfg_scale = float(demo_cfg_scale)
        self.demo_sigma_min = float(demo_sigma_min)
        self.demo_sigma_max = float(demo_sigma_max)
        self.demo_seed = int(demo_seed)
        self.sampler = sampler

    # ------------------------------------------------------------------ setup
    def train(self, mode: bool = True) -> "DiffusionTask":
        """Set train/eval mode; the frozen autoencoder and the EMA copy always stay in eval."""
        super().train(mode)
        if self.autoencoder is not None:
            self.autoencoder.eval()
        self.ema.eval()
        return self

    def _freeze(self, names: Sequence[str]) -> None:
        """Stop gradients of the named submodules (see ``freeze``); unknown names fail with the valid roots."""
        for name in names:
            try:
                module = self.get_submodule(str(name))
            except AttributeError as err:
                raise ValueError(f"task.freeze: no submodule '{name}' (e.g. dit, conditioner, "
                                 f"conditioner.conditioners.<id>, dit.transformer.layers.<i>)") from err
            module.requires_grad_(False)
            log.info("frozen: %s (%d parameters)", name, sum(p.numel() for p in module.parameters()))

    def trainable_parameters(self) -> list[nn.Parameter]:
        """DiT parameters plus the conditioners' trainable ones (timing, LUT, projections), less frozen ones;
        with an adapter, the adapter's parameters alone."""
        if self.adapter is not None:
            return self.adapter.parameters()
        params = [p for p in self.dit.parameters() if p.requires_grad]
        params += [p for p in self.conditioner.parameters() if p.requires_grad]
        if not params:
            raise ValueError("nothing to train: every DiT and conditioner parameter is frozen (task.freeze)")
        return params

    def configure_optimizers(self) -> dict[str, tuple[torch.optim.Optimizer, Any]]:
        """One optimiser ``"dit"`` over :meth:`trainable_parameters`, with its lr schedule."""
        opt = self._optimizer(self.trainable_parameters())
        sched = self._lr_schedule(opt) if self._lr_schedule is not None else None
        return {"dit": (opt, sched)}

    def checkpoint_modules(self) -> dict[str, nn.Module]:
        """Modules whose weights a training checkpoint holds (the frozen autoencoder is not one; with an
        adapter, neither is the frozen base DiT: its weight hash is kept instead)."""
        if self.adapter is not None:
            return self.adapter.checkpoint_modules(self.conditioner)
        return {"dit": self.dit, "ema": self.ema, "conditioner": self.conditioner}

    # --------------------------------------------------------------- training
    def _device(self) -> torch.device:
        return next(self.dit.parameters()).device

    def latents_from_batch(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Latents ``[B, D, L]`` and a latent-rate padding mask ``[B, L]`` (or None) of a batch.

        Uses ``batch["latents"]`` if present, else encodes ``batch["audio"]`` with the frozen
        autoencoder; an audio-rate padding mask marks a latent frame real if any of its samples is.
        """
        device = self._device()
        mask = batch.get("padding_mask")
        if "latents" in batch:
            latents = batch["latents"].to(device)
        elif "audio" in batch:
            if self.autoencoder is None:
                raise ValueError("batch holds audio but the diffusion task has no autoencoder to encode it")
            with torch.no_grad():
                latents = self.autoencoder.encode(batch["audio"].to(device))
            if mask is not None:
                b, length = mask.shape[0], latents.shape[-1]
                ratio = math.ceil(mask.shape[-1] / length)
                padded = torch.zeros(b, length * ratio, dtype=torch.bool, device=mask.device)
                n = min(mask.shape[-1], length * ratio)
                padded[:, :n] = mask[:, :n].bool()
                mask = padded.view(b, length, ratio).any(dim=-1)
        else:
            raise ValueError(f"batch needs 'latents' or 'audio', got keys {sorted(batch)}")
        if mask is not None:
            mask = mask.to(device=device, dtype=torch.bool)
        return latents.float(), mask

    def training_step(self, batch: Mapping[str, Any], step: int, ctx: Any) -> dict[str, float]:
        """One v-objective step with CFG dropout; backward/step through ``ctx.backward_step``."""
        latents, mask = self.latents_from_batch(batch)
        cond = self.conditioner(batch["metadata"], latents.device)
        if self.training:
            cond = cfg_dropout(cond, self.cfg_dropout_prob)
        loss, info = self.diffusion(self.dit, latents, cond, padding_mask=mask)
        ctx.backward_step("dit", loss)
        return {"loss": float(loss.detach()), "t_mean": float(info["t"].mean())}

    @torch.no_grad()
    def on_step_end(self, step: int) -> None:
        """Update the EMA of the DiT weights (of the adapter alone with an adapter)."""
        if self.adapter is not None:
            self.ema.update_parameters(self.dit)
        elif hasattr(next(self.dit.parameters()), "ds_tensor"):
            self._update_ema_partitions()
        else:
            self.ema.update_parameters(self.dit)

    @torch.no_grad()
    def _update_ema_partitions(self) -> None:
        """The EMA update under DeepSpeed ZeRO-3, where ``p.data`` is empty outside a forward.

        Each rank holds one partition (``p.ds_tensor``) of every weight, laid out alike for the
        DiT and its EMA copy, so averaging the local partitions (and the unpartitioned buffers)
        is exactly ``AveragedModel.update_parameters``.
        """
        pairs = [(e.ds_tensor, p.ds_tensor) for e, p in zip(self.ema.module.parameters(), self.dit.parameters())]
        pairs += [(e, b) for e, b in zip(self.ema.module.buffers(), self.dit.buffers()) if e.is_floating_point()]
        ema = [e for e, _ in pairs]
        cur = [p.to(e.dtype) for e, p in pairs]
        if int(self.ema.n_averaged) == 0:
            torch._foreach_copy_(ema, cur)
        else:
            self.ema.multi_avg_fn(ema, cur, self.ema.n_averaged)
        self.ema.n_averaged += 1

    # ------------------------------------------------------------------ demos
    @torch.no_grad()
    def generate(self, prompts: Sequence[str], seconds: float, use_ema: bool = True) -> torch.Tensor:
        """Sample latents ``[B, D, L]`` for ``prompts`` (``seconds`` long at the autoencoder rate).

        The DiT is wrapped for its training objective (``self.diffusion.objective``: ``v`` or
        ``rectified_flow``) and the sampler's space (k-diffusion sigmas or flow times).
        """
        if self.autoencoder is None:
            raise ValueError("generate needs the autoencoder to know the latent rate")
        device = self._device()
        rate = self.autoencoder.sample_rate / self.autoencoder.downsampling_ratio
        length = max(1, round(seconds * rate))
        meta = [{"prompt": p, "seconds_start": 0.0, "seconds_total": seconds} for p in prompts]
        cond = self.conditioner(meta, device)
        net = self.ema.module if use_ema else self.dit
        gen = torch.Generator(device="cpu").manual_seed(self.demo_seed)
        d = getattr(net, "io_channels", None) or self.autoencoder.latent_dim
        x = torch.randn(len(prompts), d, length, generator=gen).to(device)
        extra = {"cond": cond, "uncond": null_cond(cond)}
        objective = getattr(self.diffusion, "objective", "v")
        if self.sampler is not None:
            sigmas = self.sampler.sigmas(device, length=length)
            denoiser = self.sampler.guided(make_denoiser(net, objective, getattr(self.sampler, "space", "ve")))
            return self.sampler.run(
                denoiser, x * sigmas[0], extra_args=extra, disable=True, sigmas=sigmas, seed=self.demo_seed
            )
        denoiser = _guided(make_denoiser(net, objective, "ve"), self.demo_cfg_scale)
        sigmas = _sigmas(self.demo_steps, self.demo_sigma_min, self.demo_sigma_max, device)
        return _default_sampler()(denoiser, x * sigmas[0], sigmas, extra_args=extra, disable=True)

    @torch.no_grad()
    def demo(self, step: int, logger: Any) -> None:
        """Generate one clip per demo prompt with the EMA model and log it as audio (with an adapter,
        also its diagnostics: :meth:`musicdiff.adapters.training.AdapterTraining.log_diagnostics`)."""
        if self.autoencoder is None or not self.demo_prompts:
            log.info("no autoencoder or demo prompts: skipping demo at step %d", step)
            if self.adapter is not None:
                self.adapter.log_diagnostics(self, step, logger, None, None)
            return
        latents = self.generate(self.demo_prompts, self.demo_seconds)
        audio = self.autoencoder.decode(latents).float().clamp(-1, 1).cpu()
        for i, clip in enumerate(audio):
            logger.log_audio(f"demo/{i}", clip, int(self.autoencoder.sample_rate), step)
        if self.adapter is not None:
            self.adapter.log_diagnostics(self, step, logger, latents, audio)

    def export(self) -> dict[str, nn.Module]:
        """Inference modules: the EMA DiT (as ``dit``), the conditioner set and the frozen autoencoder
        (so the export is self-contained). With an adapter: none (see :meth:`export_files`)."""
        if self.adapter is not None:
            return {}
        out = {"dit": self.ema.module, "conditioner": self.conditioner}
        if self.autoencoder is not None:
            out["autoencoder"] = self.autoencoder
        return out

    def export_files(self, out_dir: str | Path) -> list[Path]:
        """Files written into the export directory besides :meth:`export`'s modules: with an adapter,
        the EMA adapter ``adapter.safetensors`` (recording the base DiT's weight hash)."""
        return self.adapter.export(out_dir) if self.adapter is not None else []
